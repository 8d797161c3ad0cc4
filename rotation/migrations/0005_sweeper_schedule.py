"""The periodic sweeper: one django-q2 schedule, created idempotently (update_or_create)."""

from django.db import migrations

# Same name as rotation.tasks.SWEEPER_SCHEDULE_NAME (migrations must not import app code).
SWEEPER_SCHEDULE_NAME = "rotation: re-queue stuck rotations"


def create_sweeper_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name=SWEEPER_SCHEDULE_NAME,
        defaults={
            "func": "rotation.tasks.rotations_sweep",
            "schedule_type": "I",  # every `minutes` minutes
            "minutes": 1,
            "repeats": -1,
        },
    )


def delete_sweeper_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SWEEPER_SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("rotation", "0004_auditevent_append_only"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_sweeper_schedule, delete_sweeper_schedule)]
