"""Add the Support lead group: Support plus emergency rotations and rollbacks."""

from django.db import migrations

# Frozen as of this migration.
SUPPORT_LEAD = [
    ("rotation", "view_installation"),
    ("rotation", "view_resource"),
    ("rotation", "view_connectedproject"),
    ("rotation", "view_rotation"),
    ("rotation", "view_rotationbatch"),
    ("rotation", "rotate_resource"),
    ("rotation", "cancel_rotation"),
    ("rotation", "retry_rotation"),
    ("rotation", "confirm_redeploy"),
    ("rotation", "rotate_resource_emergency"),
    ("rotation", "rollback_rotation"),
]


def add_support_lead(apps, schema_editor):
    from rotation.roles import roles_sync

    roles_sync(apps, {"Support lead": SUPPORT_LEAD})


def remove_support_lead(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name="Support lead").delete()


class Migration(migrations.Migration):
    dependencies = [("rotation", "0006_auditevent_unsuccessful_idx")]

    operations = [migrations.RunPython(add_support_lead, remove_support_lead)]
