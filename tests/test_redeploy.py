"""Redeploy tracking services: begin, redeploys seen or confirmed, reminders, expiry, rollback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail

from rotation.audit import AuditAction
from rotation.models import AuditEvent, RedeployCheck, Reminder, Rotation
from tests.redeploy_builders import connect, make_pushed_rotation

PUSH = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def policy(settings):
    settings.ROTATION_REMINDER_DAYS = [1, 3, 7]
    settings.ROTATION_REDEPLOY_GRACE_DAYS = 14
    settings.ROTATION_ESCALATION_HOURS_BEFORE_DEADLINE = 48
    settings.ROTATION_ESCALATION_EMAILS = ["oncall@partner.example"]
    settings.ROTATION_EXPIRE_ON_DEADLINE = False
    settings.ROTATION_EXPIRE_SAFETY_DELAY_MINUTES = 10
    settings.ROTATION_REDEPLOY_TARGETS = []
    return settings


@pytest.fixture
def resource(installation):
    return installation.resources.get()


def test_it_waits_for_the_projects_connected_at_push_time(policy, resource):
    connect(resource, "prj_a", "prj_b", at=PUSH - timedelta(days=3))
    connect(resource, "prj_late", at=PUSH + timedelta(hours=1))
    connect(resource, "prj_gone", at=PUSH - timedelta(days=9))
    resource.connected_projects.filter(project_id="prj_gone").update(
        disconnected_at=PUSH - timedelta(days=1)
    )
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)

    checks = dict(rotation.redeploy_checks.values_list("project_id", "status"))
    assert checks == {"prj_a": "waiting", "prj_b": "waiting"}
    assert rotation.redeploy_deadline_at == PUSH + timedelta(days=14)
    steps = dict(rotation.reminders.values_list("step", "due_at"))
    assert steps == {
        "day-1": PUSH + timedelta(days=1),
        "day-3": PUSH + timedelta(days=3),
        "day-7": PUSH + timedelta(days=7),
        "escalation": PUSH + timedelta(days=12),
        "overdue": PUSH + timedelta(days=14),
    }
    started = AuditEvent.objects.get(action=AuditAction.REDEPLOY_STARTED)
    assert started.details["projects"] == ["prj_a", "prj_b"]
    assert started.rotation_ref == rotation.pk


def test_it_is_idempotent_when_begun_twice(policy, resource):
    from rotation.redeploy import rotation_redeploy_begin

    connect(resource, "prj_a")
    rotation = make_pushed_rotation(resource)
    rotation_redeploy_begin(rotation=rotation)
    assert rotation.redeploy_checks.count() == 1
    assert rotation.reminders.count() == 5


def test_it_plans_no_reminders_for_an_emergency(policy, resource):
    connect(resource, "prj_a")
    rotation = make_pushed_rotation(resource, emergency=True)
    assert rotation.reminders.count() == 0
    assert rotation.redeploy_checks.count() == 1
    assert rotation.state == Rotation.State.AWAITING_REDEPLOY
    assert not mail.outbox
    assert RedeployCheck.objects.count() == 1
    assert Reminder.objects.count() == 0
