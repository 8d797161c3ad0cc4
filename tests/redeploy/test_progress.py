"""Redeploys confirmed by staff."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine

from rotation.audit import AuditAction
from rotation.models import AuditEvent
from tests.redeploy_builders import (
    PUSH,
    connect,
    make_pushed_rotation,
    tick,
)


def test_it_records_a_confirmed_redeploy_from_staff(policy, provider, resource, alice, dave):
    from rotation.audit import RotationRefused
    from rotation.redeploy import rotation_confirm_redeploy

    connect(resource, "prj_a", "prj_b", at=PUSH - timedelta(days=3))
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)

    with pytest.raises(RotationRefused):
        rotation_confirm_redeploy(rotation=rotation, actor=dave, note="they said so")
    with pytest.raises(RotationRefused, match="note"):
        rotation_confirm_redeploy(rotation=rotation, actor=alice, note="  ")
    with time_machine.travel(PUSH + timedelta(days=2), tick=False):
        rotation_confirm_redeploy(rotation=rotation, actor=alice, note="Ticket 42: customer")

    rotation.refresh_from_db()
    assert rotation.redeployed_at == PUSH + timedelta(days=2)
    assert set(rotation.redeploy_checks.values_list("status", flat=True)) == {"confirmed"}
    assert not rotation.reminders.filter(status="scheduled").exists()
    confirmed = AuditEvent.objects.filter(action=AuditAction.REDEPLOY_CONFIRMED)
    assert sorted(e.outcome for e in confirmed) == ["denied", "failure", "success"]
    ok = confirmed.get(outcome="success")
    assert ok.actor_username == "alice"
    assert ok.reason == "Ticket 42: customer"
    with time_machine.travel(PUSH + timedelta(days=2, minutes=10), tick=False):
        assert tick()["expired"] == 1
