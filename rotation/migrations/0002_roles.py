"""Create the Support and Compliance groups with their permissions."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

# Frozen as of this migration; later role changes come in later migrations.
ROLES = {
    "Support": [
        ("rotation", "view_installation"),
        ("rotation", "view_resource"),
        ("rotation", "view_connectedproject"),
        ("rotation", "view_rotation"),
        ("rotation", "view_rotationbatch"),
        ("rotation", "rotate_resource"),
        ("rotation", "cancel_rotation"),
        ("rotation", "retry_rotation"),
        ("rotation", "confirm_redeploy"),
    ],
    "Compliance": [
        ("rotation", "view_auditevent"),
        ("rotation", "export_auditevent"),
    ],
}


def apply_roles(apps, schema_editor):
    # Permissions are normally created after migrate; make sure they exist now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)
        app_config.models_module = None
    from rotation.roles import roles_sync

    roles_sync(apps, ROLES)


class Migration(migrations.Migration):
    dependencies = [
        ("rotation", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(apply_roles, migrations.RunPython.noop)]
