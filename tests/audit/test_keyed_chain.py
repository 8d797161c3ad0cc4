"""The keyed audit chain: a rewrite recomputed without AUDIT_CHAIN_KEY is caught, an unkeyed
chain from before the key carries on keyed behind a marker. (The database's refusal to update
or delete audit rows is tested in test_trail.)"""

import hashlib
import hmac
import io

import pytest
from django.core.management import CommandError, call_command
from django.db import models

from rotation.audit import AuditAction, audit_record
from rotation.audit.chain import GENESIS_HASH, HASHED_FIELDS, canonical_values
from rotation.audit.trail import _build_event
from rotation.audit.verify import COLUMNS
from rotation.models import AuditEvent
from tests.audit.tampering import raw

UNKEYED = AuditEvent.HashScheme.SHA256
KEYED = AuditEvent.HashScheme.HMAC_SHA256


def verify():
    out = io.StringIO()
    call_command("verify_audit_log", stdout=out)
    return out.getvalue()


def broken():
    with pytest.raises(CommandError) as info:
        verify()
    assert info.value.returncode == 1
    return str(info.value)


def record(count, label="change"):
    for index in range(count):
        audit_record(
            action=AuditAction.INSTALLATION_CHANGED,
            installation=f"icfg_{index}",
            reason=f"{label} {index}",
        )


def unkeyed_hash(values):
    """The hash anyone can compute: SHA-256 of the public canonical form (the old chain's)."""
    return hashlib.sha256(canonical_values(values, version=UNKEYED)).hexdigest()


def guessed_key_hash(values):
    """An HMAC under a key the forger guessed (here: the fingerprint key, also not the chain's)."""
    data = canonical_values(values, version=KEYED)
    return hmac.new(b"a guessed key", data, hashlib.sha256).hexdigest()


def rewrite_and_recompute(first_id, *, reason, scheme, forge, through=None):
    """A DBA without the key: rewrite one event, then recompute every hash and link after it
    (up to event `through`)."""
    rows = AuditEvent.objects.filter(id__gte=first_id).order_by("id").values(*COLUMNS)
    rows = list(rows.filter(id__lte=through) if through else rows)
    before = AuditEvent.objects.filter(id__lt=first_id).order_by("-id").values("hash").first()
    previous = before["hash"] if before else GENESIS_HASH
    for index, row in enumerate(rows):
        row = {**row, "prev_hash": previous, "hash_scheme": scheme}
        if index == 0:
            row["reason"] = reason
        row["hash"] = previous = forge(row)
        raw(
            "UPDATE rotation_auditevent SET reason = %s, prev_hash = %s, hash = %s, "
            "hash_scheme = %s WHERE id = %s",
            [row["reason"], row["prev_hash"], row["hash"], scheme, row["id"]],
        )


def test_it_starts_a_new_chain_keyed(db):
    record(3)
    events = list(AuditEvent.objects.order_by("id"))
    assert [event.hash_scheme for event in events] == [KEYED] * 3
    assert events[0].prev_hash == GENESIS_HASH
    assert not AuditEvent.objects.filter(action=AuditAction.AUDIT_CHAIN_KEYED).exists()
    values = AuditEvent.objects.values(*COLUMNS).get(id=events[1].id)
    assert values["hash"] != unkeyed_hash(values)  # not the public hash any more
    assert "audit chain intact: 3 events" in verify()


@pytest.mark.parametrize(
    "scheme, forge", [(UNKEYED, unkeyed_hash), (KEYED, guessed_key_hash)], ids=["sha256", "hmac"]
)
def test_it_detects_a_rewritten_event_whose_chain_was_recomputed(db, scheme, forge):
    record(6)
    ids = list(AuditEvent.objects.order_by("id").values_list("id", flat=True))
    rewrite_and_recompute(ids[2], reason="nothing to see", scheme=scheme, forge=forge)
    message = broken()
    assert f"first bad event: #{ids[2]} (modified)" in message


def test_it_detects_a_whole_chain_recomputed_unkeyed(db):
    record(4)
    first = AuditEvent.objects.order_by("id").values_list("id", flat=True).first()
    rewrite_and_recompute(first, reason="rewritten", scheme=UNKEYED, forge=unkeyed_hash)
    assert "(unkeyed)" in broken()


def legacy_chain(count):
    """Events written the way the chain was before AUDIT_CHAIN_KEY: unkeyed SHA-256, v 1."""
    previous = GENESIS_HASH
    events = []
    for index in range(count):
        event = _build_event(
            action=AuditAction.RESOURCE_CHANGED, resource=f"res_{index}", reason=f"old {index}"
        )
        event.hash_scheme = UNKEYED
        event.prev_hash = previous
        values = {name: getattr(event, name) for name in HASHED_FIELDS}
        event.hash = previous = unkeyed_hash(values)
        events.append(event)
    models.QuerySet.bulk_create(AuditEvent.objects.all(), events)
    return list(AuditEvent.objects.order_by("id").values_list("id", flat=True))


@pytest.fixture
def upgraded_chain(db):
    """Three unkeyed events from before the key, then two written by the keyed code."""
    legacy = legacy_chain(3)
    assert "(unkeyed)" in broken()  # not protected yet, and verify says so
    record(2, label="after the upgrade")
    events = list(AuditEvent.objects.order_by("id"))
    return legacy, events


def test_an_unkeyed_chain_carries_on_keyed_behind_a_marker(upgraded_chain):
    legacy, events = upgraded_chain
    marker = events[3]
    assert [event.id for event in events[:3]] == legacy
    assert [event.hash_scheme for event in events] == [UNKEYED] * 3 + [KEYED] * 3
    assert marker.action == AuditAction.AUDIT_CHAIN_KEYED
    assert marker.prev_hash == events[2].hash
    assert marker.details["unkeyed_head_id"] == legacy[-1]
    assert [event.reason for event in events[4:]] == ["after the upgrade 0", "after the upgrade 1"]
    assert "audit chain intact: 6 events" in verify()
    record(1)
    assert AuditEvent.objects.filter(action=AuditAction.AUDIT_CHAIN_KEYED).count() == 1


def test_a_rewrite_before_the_marker_is_caught_at_the_marker(upgraded_chain):
    legacy, events = upgraded_chain
    marker = events[3]
    # Recompute the unkeyed part (anyone can) and relink the marker to the new head.
    rewrite_and_recompute(
        legacy[1], reason="rewritten", scheme=UNKEYED, forge=unkeyed_hash, through=legacy[-1]
    )
    new_head = AuditEvent.objects.get(id=legacy[-1]).hash
    raw("UPDATE rotation_auditevent SET prev_hash = %s WHERE id = %s", [new_head, marker.id])
    assert f"first bad event: #{marker.id} (modified)" in broken()


def test_a_rewrite_after_the_marker_is_caught_even_as_unkeyed(upgraded_chain):
    _, events = upgraded_chain
    rewrite_and_recompute(events[4].id, reason="rewritten", scheme=UNKEYED, forge=unkeyed_hash)
    message = broken()
    assert f"first bad event: #{events[4].id} (modified)" in message
    assert f"keyed from event #{events[3].id} on" in message


def test_a_keyed_event_without_the_marker_is_refused(upgraded_chain):
    _, events = upgraded_chain
    # Dropping the marker and relinking its successor needs the key; without it, the link breaks.
    raw("DELETE FROM rotation_auditevent WHERE id = %s", [events[3].id])
    assert f"first bad event: #{events[4].id}" in broken()


def test_it_fails_closed_without_a_chain_key(db, settings):
    settings.AUDIT_CHAIN_KEY = ""
    with pytest.raises(Exception, match="AUDIT_CHAIN_KEY is not set"):
        record(1)
    assert not AuditEvent.objects.exists()
