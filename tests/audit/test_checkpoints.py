"""Signed checkpoints of the audit chain's head in the anchor: written on demand and hourly,
audited, and checked by verify_audit_log (truncation, forged or altered checkpoints)."""

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django_q.models import Schedule

from rotation import tasks
from rotation.audit import AuditAction, audit_record
from rotation.audit.checkpoints import Checkpoint, checkpoint_signature
from rotation.models import AuditEvent
from tests.audit.tampering import raw


def run(command, *args):
    out = io.StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def broken(command="verify_audit_log", *args):
    with pytest.raises(CommandError) as info:
        run(command, *args)
    assert info.value.returncode == 1
    return str(info.value)


def record(count, label="change"):
    for index in range(count):
        audit_record(action=AuditAction.INSTALLATION_CHANGED, reason=f"{label} {index}")


@pytest.fixture
def anchor(settings):
    return Path(settings.AUDIT_ANCHOR_URL.removeprefix("file://"))


def lines(anchor):
    return [json.loads(line) for line in anchor.read_text().splitlines()]


def test_it_writes_a_signed_checkpoint_of_the_head_and_audits_it(db, anchor):
    record(3)
    head = AuditEvent.objects.order_by("-id").first()
    output = run("audit_checkpoint")
    assert f"event #{head.id}, 3 events, hash {head.hash}" in output
    [line] = lines(anchor)
    assert set(line) == {"v", "type", "last_id", "hash", "count", "created_at", "signature"}
    assert (line["v"], line["type"]) == (1, "partnerportal.audit_checkpoint")
    assert (line["last_id"], line["hash"], line["count"]) == (head.id, head.hash, 3)
    assert line["created_at"].endswith("Z")
    assert line["signature"].startswith("hmac-sha256:")
    event = AuditEvent.objects.order_by("-id").first()
    assert event.action == AuditAction.AUDIT_CHECKPOINTED
    assert event.outcome == AuditEvent.Outcome.SUCCESS
    assert event.details == {
        "via": "command",
        "anchor": f"file://{anchor}",
        "last_id": head.id,
        "hash": head.hash,
        "count": 3,
    }
    assert "4 events" in run("verify_audit_log") and "1 of 1 checkpoints" in run("verify_audit_log")


def test_it_detects_truncation_of_the_newest_events_through_the_checkpoint(db, anchor):
    record(5)
    run("audit_checkpoint")
    newest = list(AuditEvent.objects.order_by("-id").values_list("id", flat=True)[:3])
    raw(f"DELETE FROM rotation_auditevent WHERE id IN ({', '.join(map(str, newest))})")  # noqa: S608
    message = broken()
    assert "(truncated)" in message
    assert "the newest events were deleted" in message
    assert "audit chain broken after 3 good events" in message


def test_it_detects_truncation_even_when_new_events_follow(db, anchor):
    record(5)
    run("audit_checkpoint")
    newest = list(AuditEvent.objects.order_by("-id").values_list("id", flat=True)[:3])
    raw(f"DELETE FROM rotation_auditevent WHERE id IN ({', '.join(map(str, newest))})")  # noqa: S608
    record(4, label="after the deletion")  # a valid chain again, but shorter than anchored
    assert "(truncated)" in broken() or "(checkpoint_mismatch)" in broken()


def test_the_next_checkpoint_refuses_to_sign_a_truncated_chain(db, anchor):
    record(3)
    run("audit_checkpoint")
    newest = lines(anchor)[0]["last_id"]
    raw("DELETE FROM rotation_auditevent WHERE id >= %s", [newest])
    message = broken("audit_checkpoint")
    assert f"event #{newest}, the head at the checkpoint of" in message
    assert len(lines(anchor)) == 1
    failure = AuditEvent.objects.order_by("-id").first()
    assert (failure.action, failure.outcome) == (AuditAction.AUDIT_CHECKPOINTED, "failure")
    assert "not signing the chain's head" in failure.details["message"]


@pytest.mark.parametrize("field, value", [("count", 2), ("hash", "a" * 64), ("last_id", 1)])
def test_it_refuses_an_altered_checkpoint(db, anchor, field, value):
    record(3)
    run("audit_checkpoint")
    [line] = lines(anchor)
    anchor.write_text(json.dumps({**line, field: value}) + "\n")
    message = broken()
    assert "(checkpoint_signature)" in message
    assert "anchor line 1" in message and "signature that does not match" in message


def test_it_refuses_a_checkpoint_forged_with_another_key(db, anchor):
    record(4)
    newest = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    raw("DELETE FROM rotation_auditevent WHERE id = %s", [newest])
    head = AuditEvent.objects.order_by("-id").first()
    forged = Checkpoint(head.id, head.hash, 3, "2026-11-28T05:00:00.000000Z")
    signature = checkpoint_signature(forged, key=b"a key that is not AUDIT_CHAIN_KEY's")
    anchor.write_text(Checkpoint(head.id, head.hash, 3, forged.created_at, signature).line() + "\n")
    assert "(checkpoint_signature)" in broken()


def test_it_refuses_an_anchor_line_that_is_no_checkpoint(db, anchor):
    anchor.write_text('{"v": 1}\n')
    assert "anchor line 1 is not a version 1 audit checkpoint" in broken()


def test_it_checks_a_checkpoint_against_the_chain_at_its_event(db, anchor):
    assert "empty chain, 0 events" in run("audit_checkpoint")
    record(3)
    run("audit_checkpoint")
    record(2)
    run("audit_checkpoint")
    output = run("verify_audit_log")
    assert "audit chain intact: 8 events" in output
    assert "3 of 3 checkpoints" in output


def test_it_refuses_an_unknown_anchor_scheme_clearly_and_audits_it(db, settings):
    settings.AUDIT_ANCHOR_URL = "s3://audit-bucket/partnerportal.jsonl"
    message = broken("audit_checkpoint")
    assert "unsupported scheme s3://; use file://" in message
    failure = AuditEvent.objects.get()
    assert (failure.action, failure.outcome) == (AuditAction.AUDIT_CHECKPOINTED, "failure")
    assert failure.details["anchor"] == "s3://audit-bucket/partnerportal.jsonl"


def test_the_hourly_schedule_writes_a_checkpoint(db, anchor):
    schedule = Schedule.objects.get(name=tasks.AUDIT_CHECKPOINT_SCHEDULE_NAME)
    assert (schedule.func, schedule.schedule_type, schedule.repeats) == (
        "rotation.tasks.audit_checkpoint",
        Schedule.HOURLY,
        -1,
    )
    record(2)
    last_id = tasks.audit_checkpoint()
    assert lines(anchor)[0]["last_id"] == last_id
    assert AuditEvent.objects.order_by("-id").first().details["via"] == "schedule"
