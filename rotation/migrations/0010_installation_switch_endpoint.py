"""Installations get the `switch_endpoint` permission, held by the Support lead group."""

from importlib import import_module

from django.contrib.auth.management import create_permissions
from django.db import migrations

# Frozen: the Support lead group as migration 0007 left it, plus the new permission.
SUPPORT_LEAD = [
    *import_module("rotation.migrations.0007_support_lead_role").SUPPORT_LEAD,
    ("rotation", "switch_endpoint"),
]


def grant_switch_endpoint(apps, schema_editor):
    # Permissions are normally created after migrate; make sure the new one exists now.
    app_config = apps.get_app_config("rotation")
    app_config.models_module = True
    create_permissions(app_config, verbosity=0, apps=apps)
    app_config.models_module = None
    from rotation.roles import roles_sync

    roles_sync(apps, {"Support lead": SUPPORT_LEAD})


def revoke_switch_endpoint(apps, schema_editor):
    group = apps.get_model("auth", "Group").objects.filter(name="Support lead").first()
    if group is not None:
        group.permissions.remove(*group.permissions.filter(codename="switch_endpoint"))


class Migration(migrations.Migration):
    dependencies = [("rotation", "0009_webhookevent_status_without_failed")]

    operations = [
        migrations.AlterModelOptions(
            name="installation",
            options={
                "ordering": ["vercel_id"],
                "permissions": [
                    ("switch_endpoint", "Can switch an installation's secrets endpoint")
                ],
            },
        ),
        migrations.RunPython(grant_switch_endpoint, revoke_switch_endpoint),
    ]
