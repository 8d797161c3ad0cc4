"""Migration 0014 on a database holding an unkeyed chain written by the code before it: the
chain keeps verifying and carries on keyed behind the marker."""

import datetime as dt
import hashlib
import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from rotation.audit import AuditAction, audit_record
from rotation.audit.chain import GENESIS_HASH, HASHED_FIELDS, canonical_values
from rotation.models import AuditEvent

BEFORE = ("rotation", "0013_installation_tokens_inventory_notifications")


def migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)


def old_chain(count):
    """Rows as the trail stored them before 0014: SHA-256 of the v1 canonical JSON, no scheme."""
    previous = GENESIS_HASH
    columns = [*HASHED_FIELDS, "hash"]
    for index in range(count):
        values = {name: "" for name in HASHED_FIELDS}
        values.update(
            created_at=dt.datetime(2026, 6, 1, 12, index, tzinfo=dt.UTC),
            actor_type="system",
            actor_user_id=None,
            action="installation.changed",
            outcome="success",
            rotation_ref=None,
            batch_ref=None,
            source_ip=None,
            reason=f"before the key {index}",
            details={"index": index},
            prev_hash=previous,
        )
        values["hash"] = previous = hashlib.sha256(canonical_values(values)).hexdigest()
        row = [json.dumps(values[name]) if name == "details" else values[name] for name in columns]
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO rotation_auditevent ({', '.join(columns)}) "  # noqa: S608
                f"VALUES ({', '.join(['%s'] * len(columns))})",
                row,
            )


def verify():
    out = io.StringIO()
    call_command("verify_audit_log", stdout=out)
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_the_unkeyed_to_keyed_migration_verifies():
    migrate([BEFORE])
    try:
        old_chain(3)
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    events = list(AuditEvent.objects.order_by("id"))
    assert [event.hash_scheme for event in events] == [AuditEvent.HashScheme.SHA256] * 3
    with pytest.raises(CommandError, match=r"\(unkeyed\).*run manage.py audit_checkpoint"):
        verify()

    call_command("audit_checkpoint", stdout=io.StringIO())  # the documented upgrade step
    audit_record(action=AuditAction.INSTALLATION_CHANGED, reason="after the upgrade")

    actions = list(AuditEvent.objects.order_by("id").values_list("action", "hash_scheme"))
    assert actions[3:] == [
        (AuditAction.AUDIT_CHAIN_KEYED, AuditEvent.HashScheme.HMAC_SHA256),
        (AuditAction.AUDIT_CHECKPOINTED, AuditEvent.HashScheme.HMAC_SHA256),
        (AuditAction.INSTALLATION_CHANGED, AuditEvent.HashScheme.HMAC_SHA256),
    ]
    output = verify()
    assert "audit chain intact: 6 events" in output
    assert "1 of 1 checkpoints" in output
