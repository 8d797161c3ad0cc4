"""The keyed, anchored audit chain: a hash scheme per event, SQLite's append-only triggers and
the hourly checkpoint schedule.

- `hash_scheme`: events already stored are unkeyed SHA-256 (1); new events are HMAC-SHA256
  under AUDIT_CHAIN_KEY (2). The next append after this migration writes the
  `audit.chain_keyed` marker that starts the keyed segment (rotation.audit.trail); a new
  install is keyed from its first event. Adding the column writes no row on either database
  (PostgreSQL adds it with a constant default, SQLite copies the table before the triggers
  below exist), so the append-only trigger of 0004 is not in the way.
- SQLite gets what PostgreSQL got in 0004: BEFORE UPDATE and BEFORE DELETE triggers that
  abort. SQLite drops a table's triggers when a later migration rebuilds the table; the test
  `test_it_rejects_direct_sql_update_and_delete_on_sqlite_and_postgresql` runs after every migration and
  notices. A later migration that rebuilds rotation_auditevent on SQLite must re-create them.
- The schedule `rotation: audit checkpoint` runs rotation.tasks.audit_checkpoint every hour,
  first at the next full hour (not at once, so a worker started now does not race a deploy).
"""

import datetime as dt

from django.db import migrations, models
from django.utils import timezone

# Same name as rotation.tasks.AUDIT_CHECKPOINT_SCHEDULE_NAME (migrations import no app code).
AUDIT_CHECKPOINT_SCHEDULE_NAME = "rotation: audit checkpoint"

HASH_SCHEME_CHOICES = [
    (1, "SHA-256, unkeyed (events before the chain was keyed)"),
    (2, "HMAC-SHA256 under AUDIT_CHAIN_KEY"),
]
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER IF NOT EXISTS rotation_auditevent_append_only_{operation.lower()} "
    f"BEFORE {operation} ON rotation_auditevent "
    f"BEGIN SELECT RAISE(ABORT, 'rotation_auditevent is append-only: {operation} refused'); END"
    for operation in ("UPDATE", "DELETE")
]
SQLITE_DROP_TRIGGERS = [
    f"DROP TRIGGER IF EXISTS rotation_auditevent_append_only_{operation}"
    for operation in ("update", "delete")
]


def create_sqlite_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_TRIGGERS:
            schema_editor.execute(statement, params=None)


def drop_sqlite_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_DROP_TRIGGERS:
            schema_editor.execute(statement, params=None)


def create_checkpoint_schedule(apps, schema_editor):
    next_hour = timezone.now().replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name=AUDIT_CHECKPOINT_SCHEDULE_NAME,
        defaults={
            "func": "rotation.tasks.audit_checkpoint",
            "schedule_type": "H",  # hourly
            "repeats": -1,
            "next_run": next_hour,
        },
    )


def delete_checkpoint_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(
        name=AUDIT_CHECKPOINT_SCHEDULE_NAME
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("rotation", "0013_installation_tokens_inventory_notifications"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="hash_scheme",
            field=models.PositiveSmallIntegerField(choices=HASH_SCHEME_CHOICES, default=1),
            preserve_default=False,
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="hash_scheme",
            field=models.PositiveSmallIntegerField(choices=HASH_SCHEME_CHOICES, default=2),
        ),
        migrations.RunPython(create_sqlite_triggers, drop_sqlite_triggers),
        migrations.RunPython(create_checkpoint_schedule, delete_checkpoint_schedule),
    ]
