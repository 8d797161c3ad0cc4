"""Removed installations stop their rotations."""

from __future__ import annotations

from datetime import timedelta

import time_machine
from django.core import mail
from django.db import transaction

from rotation.models import Rotation
from tests.redeploy_builders import (
    PUSH,
    make_pushed_rotation,
    tick,
)


def test_it_stops_the_rotations_of_a_removed_installation(policy, resource):
    from rotation.redeploy import installation_removed

    rotation = make_pushed_rotation(resource)
    with transaction.atomic():
        installation_removed(installation=resource.installation)
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.CANCELLED
    with time_machine.travel(PUSH + timedelta(days=30), tick=False):
        assert tick() == {
            "reminders_sent": 0,
            "escalated": 0,
            "expired": 0,
            "retired": 0,
            "idempotency_keys_pruned": 0,
            "webhook_events_pruned": 0,
            "task_results_pruned": 0,
        }
    assert not mail.outbox
