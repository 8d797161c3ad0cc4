"""Audit events are append-only: a unique predecessor per event and, on PostgreSQL, a trigger.

The trigger refuses UPDATE and DELETE of rotation_auditevent for every role that does not
disable it first (a DBA who does so still breaks the hash chain, which verify_audit_log sees).
On SQLite the RunPython steps do nothing; the model and its queryset refuse changes there.
"""

from django.db import migrations, models

CREATE_TRIGGER = """
CREATE OR REPLACE FUNCTION rotation_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'rotation_auditevent is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS rotation_auditevent_append_only ON rotation_auditevent;
CREATE TRIGGER rotation_auditevent_append_only
    BEFORE UPDATE OR DELETE ON rotation_auditevent
    FOR EACH ROW EXECUTE FUNCTION rotation_auditevent_append_only();
"""

DROP_TRIGGER = """
DROP TRIGGER IF EXISTS rotation_auditevent_append_only ON rotation_auditevent;
DROP FUNCTION IF EXISTS rotation_auditevent_append_only();
"""


def create_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE_TRIGGER, params=None)


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_TRIGGER, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("rotation", "0003_redeploy"),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="prev_hash",
            field=models.CharField(max_length=64, unique=True),
        ),
        migrations.RunPython(create_trigger, drop_trigger),
    ]
