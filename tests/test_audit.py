"""The audit trail service: hash chain, canonical form, fail-closed writes, append-only rows."""

import datetime as dt
import decimal
import uuid

import pytest
from django.db import DatabaseError, connection, transaction

from rotation.audit import (
    GENESIS_HASH,
    AuditAction,
    audit_record,
    event_hash,
    fingerprint,
)
from rotation.audit_verify import audit_log_verify
from rotation.models import AuditEvent, AuditEventImmutable, Installation
from tests.conftest import make_installation


def test_it_chains_events_and_survives_a_database_round_trip(alice):
    first = audit_record(action=AuditAction.INSTALLATION_CHANGED, actor=alice, reason="first")
    tricky = {
        "float": 0.1,
        "tiny": 1.5e-7,
        "big_float": 1e20,
        "integral_float": 2.0,
        "big_int": 2**70,
        "nan": float("nan"),
        "unicode": "Zürich 東京 \U0001f510",
        "nul": "a\x00b",
        "nested": {"b": [1, {"z": None, "a": True}], "a": "x"},
        "when": dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC),
        "amount": decimal.Decimal("12.50"),
        "uuid": uuid.UUID(int=5),
        "set": {3, 1, 2},
        7: "int key",
    }
    second = audit_record(
        action=AuditAction.RESOURCE_CHANGED,
        outcome="failure",
        installation="icfg_x",
        resource="res_1",
        rotation=12,
        batch="3",
        ticket="SUP-1",
        source_ip="::ffff:10.0.0.1",
        user_agent="Mozilla\x00/5.0",
        details=tricky,
    )
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    for event in AuditEvent.objects.order_by("id"):
        assert event_hash(event) == event.hash
    stored = AuditEvent.objects.get(pk=second.pk)
    assert stored.details["big_float"] == 10**20
    assert stored.details["nan"] == "nan"
    assert stored.details["7"] == "int key"
    assert "\x00" not in stored.details["nul"]
    assert audit_log_verify().intact


def test_it_rolls_back_the_event_with_the_change(db):
    with pytest.raises(RuntimeError), transaction.atomic():
        Installation.objects.create(vercel_id="icfg_rolled")
        audit_record(action=AuditAction.INSTALLATION_CHANGED, installation="icfg_rolled")
        raise RuntimeError("the change fails after its audit event was written")
    assert not Installation.objects.filter(vercel_id="icfg_rolled").exists()
    assert not AuditEvent.objects.exists()
