"""Tampering with the audit table as a database administrator would: switch the append-only
triggers off, write, switch them on again."""

from django.db import connection


def raw(sql, params=()):
    """Run SQL with the audit table's append-only triggers off (PostgreSQL and SQLite)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE rotation_auditevent DISABLE TRIGGER USER")
            cursor.execute(sql, params)
            cursor.execute("ALTER TABLE rotation_auditevent ENABLE TRIGGER USER")
            return
        # SQLite cannot disable a trigger: drop it and re-create it from its own definition.
        cursor.execute(
            "SELECT name, sql FROM sqlite_master "
            "WHERE type = 'trigger' AND tbl_name = 'rotation_auditevent'"
        )
        triggers = cursor.fetchall()
        for name, _ in triggers:
            cursor.execute(f'DROP TRIGGER "{name}"')
        cursor.execute(sql, params)
        for _, definition in triggers:
            cursor.execute(definition)
