"""manage.py verify_audit_log: each kind of tampering (done in raw SQL, as a DBA would) is
detected and the right event is named."""

import io

import pytest
from django.core.management import CommandError, call_command

from rotation.audit import AuditAction, audit_record
from rotation.audit.chain import canonical_hash
from rotation.audit.verify import COLUMNS
from rotation.models import AuditEvent
from tests.audit.tampering import raw


def verify(*args):
    out = io.StringIO()
    call_command("verify_audit_log", *args, stdout=out)
    return out.getvalue()


def broken(*args):
    with pytest.raises(CommandError) as info:
        verify(*args)
    assert info.value.returncode == 1
    return str(info.value)


@pytest.fixture
def events(db):
    """Six events; ids spread out (ids are not hashed) so rows can be slipped in between."""
    for index in range(6):
        audit_record(
            action=AuditAction.INSTALLATION_CHANGED,
            installation=f"icfg_{index}",
            reason=f"change {index}",
            details={"index": index, "ratio": index / 3},
        )
    raw("UPDATE rotation_auditevent SET id = id * 10 + 1000")
    raw("UPDATE rotation_auditevent SET id = id - 1000")
    return list(AuditEvent.objects.order_by("id").values_list("id", flat=True))


def test_it_reports_an_intact_chain_with_its_count(events):
    assert "audit chain intact: 6 events" in verify("--chunk-size", "2")


def test_it_reports_an_empty_log_as_intact(db):
    assert "audit chain intact: 0 events" in verify()


def test_it_names_a_modified_event(events):
    raw("UPDATE rotation_auditevent SET reason = 'nothing to see' WHERE id = %s", [events[2]])
    message = broken()
    assert f"first bad event: #{events[2]} (modified)" in message


@pytest.mark.parametrize(
    "column, value",
    [("details", '{"index": 99}'), ("created_at", "2020-01-01 00:00:00"), ("outcome", "denied")],
)
def test_it_names_an_event_modified_in_any_column(events, column, value):
    raw(f"UPDATE rotation_auditevent SET {column} = %s WHERE id = %s", [value, events[4]])  # noqa: S608
    assert f"first bad event: #{events[4]} (modified)" in broken()


def test_it_names_the_event_after_a_deleted_one(events):
    raw("DELETE FROM rotation_auditevent WHERE id = %s", [events[3]])
    message = broken()
    assert f"first bad event: #{events[4]} (deleted)" in message
    assert f"does not follow event #{events[2]}" in message


def test_it_notices_the_first_event_deleted(events):
    raw("DELETE FROM rotation_auditevent WHERE id = %s", [events[0]])
    assert f"first bad event: #{events[1]} (deleted)" in broken()


def test_it_names_an_inserted_event(events):
    source = AuditEvent.objects.values(*COLUMNS).get(id=events[2])
    forged = {**source, "reason": "forged", "prev_hash": "f" * 64}
    forged_hash = canonical_hash(forged)  # a forger who knows the canonical form
    raw(
        "INSERT INTO rotation_auditevent (id, created_at, actor_type, actor_user_id, "
        "actor_username, action, outcome, installation_ref, resource_ref, rotation_ref, "
        "batch_ref, reason, ticket, source_ip, user_agent, request_id, details, prev_hash, "
        "hash, hash_scheme) SELECT %s, created_at, actor_type, actor_user_id, actor_username, "
        "action, "
        "outcome, installation_ref, resource_ref, rotation_ref, batch_ref, 'forged', ticket, "
        "source_ip, user_agent, request_id, details, %s, %s, hash_scheme "
        "FROM rotation_auditevent "
        "WHERE id = %s",
        [events[2] + 5, "f" * 64, forged_hash, events[2]],
    )
    assert f"first bad event: #{events[2] + 5} (inserted)" in broken()


def test_it_names_an_inserted_event_with_a_made_up_hash(events):
    raw(
        "INSERT INTO rotation_auditevent (id, created_at, actor_type, actor_user_id, "
        "actor_username, action, outcome, installation_ref, resource_ref, rotation_ref, "
        "batch_ref, reason, ticket, source_ip, user_agent, request_id, details, prev_hash, "
        "hash, hash_scheme) SELECT %s, created_at, actor_type, actor_user_id, actor_username, "
        "action, "
        "outcome, installation_ref, resource_ref, rotation_ref, batch_ref, reason, ticket, "
        "source_ip, user_agent, request_id, details, %s, %s, hash_scheme "
        "FROM rotation_auditevent "
        "WHERE id = %s",
        [events[0] + 5, "e" * 64, "d" * 64, events[0]],
    )
    assert f"first bad event: #{events[0] + 5}" in broken()


def test_it_names_a_reordered_event(events):
    first, second = events[2], events[3]
    raw("UPDATE rotation_auditevent SET id = %s WHERE id = %s", [-1, first])
    raw("UPDATE rotation_auditevent SET id = %s WHERE id = %s", [first, second])
    raw("UPDATE rotation_auditevent SET id = %s WHERE id = %s", [second, -1])
    message = broken()
    assert f"first bad event: #{first} (reordered)" in message
    assert f"chained after event #{second}" in message


def test_it_notices_a_truncated_tail_against_an_anchor(events):
    head = verify().rsplit("head hash ", 1)[1].strip()
    assert "intact" in verify("--anchor", head)
    raw("DELETE FROM rotation_auditevent WHERE id = %s", [events[-1]])
    assert "(anchor_missing)" in broken("--anchor", head)
