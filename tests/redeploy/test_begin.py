"""The start of redeploy tracking when a push lands: projects, deadline, reminders planned."""

from __future__ import annotations

from datetime import timedelta

import time_machine
from django.core import mail
from django.db import transaction
from django.utils import timezone

from rotation.models import RedeployCheck, Reminder, Rotation
from rotation.redeploy.reminders import reminders_create_due
from tests.conftest import make_installation
from tests.redeploy_builders import (
    PUSH,
    connect,
    make_pushed_rotation,
)


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
    # Planned now, each row made by the tick once it falls due.
    assert rotation.reminders.count() == 0
    assert rotation.next_reminder_at == PUSH + timedelta(days=1)
    with time_machine.travel(PUSH + timedelta(days=14), tick=False):
        reminders_create_due(now=timezone.now())
    steps = dict(rotation.reminders.values_list("step", "due_at"))
    assert steps == {
        "day-1": PUSH + timedelta(days=1),
        "day-3": PUSH + timedelta(days=3),
        "day-7": PUSH + timedelta(days=7),
        "escalation": PUSH + timedelta(days=12),
        "overdue": PUSH + timedelta(days=14),
    }


def test_it_is_idempotent_when_begun_twice(policy, resource):
    from rotation.redeploy import rotations_redeploy_begin

    connect(resource, "prj_a")
    rotation = make_pushed_rotation(resource)
    with transaction.atomic():
        (plan,) = rotations_redeploy_begin(rotations=[rotation])
    assert plan["projects"] == ["prj_a"]
    assert plan["reminders"] == ["day-1", "day-3", "day-7", "escalation", "overdue"]
    assert rotation.redeploy_checks.count() == 1
    rotation.refresh_from_db()
    assert rotation.next_reminder_at == rotation.pushed_at + timedelta(days=1)
    assert rotation.reminders.count() == 0


def test_it_plans_no_reminders_for_an_emergency(policy, resource):
    connect(resource, "prj_a")
    rotation = make_pushed_rotation(resource, emergency=True)
    assert rotation.reminders.count() == 0
    assert rotation.next_reminder_at is None
    assert rotation.redeploy_checks.count() == 1
    assert rotation.state == Rotation.State.AWAITING_REDEPLOY
    assert not mail.outbox
    assert RedeployCheck.objects.count() == 1
    assert Reminder.objects.count() == 0


def test_it_begins_a_group_pushed_together_with_one_write_per_kind_of_plan(
    db, policy, django_assert_num_queries
):
    from rotation.redeploy import rotations_redeploy_begin

    installation = make_installation("icfg_group", resources=4)
    plain = [
        make_pushed_rotation(resource, pushed_at=PUSH)
        for resource in installation.resources.order_by("pk")
    ]
    asked_by_vercel = plain.pop()
    Rotation.objects.filter(pk=asked_by_vercel.pk).update(expire_old_after_push=timedelta(hours=2))
    Rotation.objects.update(redeploy_deadline_at=None, keep_old_until=None, next_reminder_at=None)
    rotations = list(Rotation.objects.order_by("pk"))

    with transaction.atomic(), django_assert_num_queries(3):  # projects, then two updates
        plans = rotations_redeploy_begin(rotations=rotations)

    assert [plan["reminders"] for plan in plans] == [
        ["day-1", "day-3", "day-7", "escalation", "overdue"]
    ] * 3 + [[]]
    for rotation in plain:
        rotation.refresh_from_db()
        assert rotation.redeploy_deadline_at == PUSH + timedelta(days=14)
        assert rotation.next_reminder_at == PUSH + timedelta(days=1)
        assert rotation.keep_old_until is None
    asked_by_vercel.refresh_from_db()
    assert asked_by_vercel.keep_old_until == PUSH + timedelta(hours=2)
    assert asked_by_vercel.redeploy_deadline_at == PUSH + timedelta(hours=2)
    assert asked_by_vercel.next_reminder_at is None
