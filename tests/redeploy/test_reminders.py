"""Redeploy reminders and escalations: on schedule, once each, retried when mail fails."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.core.mail.backends import locmem
from django.utils import timezone

from rotation.audit import AuditAction
from rotation.models import AuditEvent, Reminder, Rotation
from rotation.redeploy.reminders import reminders_create_due
from tests.redeploy_builders import (
    PUSH,
    connect,
    make_pushed_rotation,
    tick,
)


def test_it_reminds_the_contact_at_the_policy_times_and_never_twice(policy, resource):
    connect(resource, "prj_a", at=PUSH - timedelta(days=3))
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)

    with time_machine.travel(PUSH + timedelta(hours=23, minutes=59), tick=False):
        assert tick()["reminders_sent"] == 0
    with time_machine.travel(PUSH + timedelta(days=1), tick=False):
        assert tick()["reminders_sent"] == 1
        assert tick()["reminders_sent"] == 0
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["owner@example.com"]
    assert resource.name in message.subject
    assert resource.vercel_id in message.body
    assert "DATABASE_URL, PGPASSWORD" in message.body
    assert "prj_a" in message.body
    assert "redeploy" in message.body.lower()
    with time_machine.travel(PUSH + timedelta(days=2, hours=23), tick=False):
        assert tick()["reminders_sent"] == 0
    with time_machine.travel(PUSH + timedelta(days=3, minutes=1), tick=False):
        assert tick()["reminders_sent"] == 1
    with time_machine.travel(PUSH + timedelta(days=7, minutes=1), tick=False):
        assert tick()["reminders_sent"] == 1
        assert tick()["reminders_sent"] == 0
    assert len(mail.outbox) == 3
    sent = dict(rotation.reminders.values_list("step", "status"))
    # The escalation and overdue rows are made when they fall due (days 12 and 14).
    assert sent == {"day-1": "sent", "day-3": "sent", "day-7": "sent"}
    audited = AuditEvent.objects.filter(action=AuditAction.REMINDER_SENT)
    assert sorted(e.details["step"] for e in audited) == ["day-1", "day-3", "day-7"]
    assert all(e.rotation_ref == rotation.pk for e in audited)


def test_it_sends_only_the_newest_missed_reminder_after_downtime(policy, resource):
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)
    with time_machine.travel(PUSH + timedelta(days=4), tick=False):
        assert tick()["reminders_sent"] == 1
    assert dict(rotation.reminders.values_list("step", "status"))["day-1"] == "skipped"
    assert "day-3" in dict(rotation.reminders.filter(status="sent").values_list("step", "kind"))


def test_it_escalates_to_staff_as_the_deadline_nears_then_marks_it_overdue(policy, resource):
    connect(resource, "prj_a", at=PUSH - timedelta(days=3))
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)
    with time_machine.travel(PUSH + timedelta(days=8), tick=False):
        tick()
    mail.outbox.clear()

    with time_machine.travel(PUSH + timedelta(days=12, minutes=1), tick=False):
        assert tick()["reminders_sent"] == 1
    assert mail.outbox[0].to == ["oncall@partner.example"]
    assert "Deadline near" in mail.outbox[0].subject
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.AWAITING_REDEPLOY

    with time_machine.travel(PUSH + timedelta(days=14, minutes=1), tick=False):
        result = tick()
    assert result["escalated"] == 1
    assert result["expired"] == 0
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.ESCALATED
    assert "Overdue" in mail.outbox[1].subject
    assert AuditEvent.objects.filter(action=AuditAction.ROTATION_ESCALATED).count() == 1


def test_it_escalates_to_staff_holding_the_permission_when_no_list_is_set(
    policy, resource, alice, dave
):
    policy.ROTATION_ESCALATION_EMAILS = []
    with time_machine.travel(PUSH, tick=False):
        make_pushed_rotation(resource)
    with time_machine.travel(PUSH + timedelta(days=12, minutes=1), tick=False):
        tick()
    escalation = [m for m in mail.outbox if "Deadline near" in m.subject]
    assert [m.to for m in escalation] == [["alice@example.com"]]


def test_it_keeps_a_failed_reminder_visible_and_retries_it(policy, resource, settings):
    settings.EMAIL_BACKEND = "tests.redeploy.test_reminders.BrokenEmailBackend"
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)
    with time_machine.travel(PUSH + timedelta(days=1), tick=False):
        assert tick()["reminders_sent"] == 0
    reminder = rotation.reminders.get(step="day-1")
    assert reminder.status == Reminder.Status.FAILED
    assert "SMTP is down" in reminder.last_error
    failure = AuditEvent.objects.get(action=AuditAction.REMINDER_SENT)
    assert failure.outcome == AuditEvent.Outcome.FAILURE

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    with time_machine.travel(PUSH + timedelta(days=1, minutes=4), tick=False):
        assert tick()["reminders_sent"] == 0  # not before the retry interval
    with time_machine.travel(PUSH + timedelta(days=1, minutes=5), tick=False):
        assert tick()["reminders_sent"] == 1
    reminder.refresh_from_db()
    assert reminder.status == Reminder.Status.SENT
    assert reminder.attempts == 2


class BrokenEmailBackend:
    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        raise ConnectionRefusedError("SMTP is down")


class SlowEmailBackend(locmem.EmailBackend):
    """Sending takes a moment, so two workers really overlap."""

    def send_messages(self, messages):
        time.sleep(0.01)
        return super().send_messages(messages)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_never_sends_a_reminder_twice_with_two_workers(policy, installation):
    policy.EMAIL_BACKEND = "tests.redeploy.test_reminders.SlowEmailBackend"
    import threading

    from django.db import connection

    resources = list(installation.resources.all())
    for index in range(12):
        resources.append(
            installation.resources.create(
                vercel_id=f"res_many_{index}", product="pg", name=f"r{index}"
            )
        )
    with time_machine.travel(PUSH, tick=False):
        for resource in resources:
            make_pushed_rotation(resource)
    barrier = threading.Barrier(2)
    counts: list[int] = []
    errors: list[BaseException] = []

    def worker():
        from rotation.redeploy import reminders_send_due

        try:
            barrier.wait()
            counts.append(reminders_send_due())
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    with time_machine.travel(PUSH + timedelta(days=1), tick=False):
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert not errors
    assert all(counts), counts  # both workers really sent some
    assert sum(counts) == len(resources)
    assert len(mail.outbox) == len(resources)
    assert Reminder.objects.filter(step="day-1", status="sent").count() == len(resources)
    assert AuditEvent.objects.filter(action=AuditAction.REMINDER_SENT).count() == len(resources)


def test_a_push_makes_no_reminder_row_until_one_falls_due(policy, resource):
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)
    assert not rotation.reminders.exists()
    with time_machine.travel(PUSH + timedelta(hours=23, minutes=59), tick=False):
        tick()
    assert not rotation.reminders.exists()
    with time_machine.travel(PUSH + timedelta(days=1), tick=False):
        assert tick()["reminders_sent"] == 1
    assert list(rotation.reminders.values_list("step", "status")) == [("day-1", "sent")]
    rotation.refresh_from_db()
    assert rotation.next_reminder_at == PUSH + timedelta(days=3)


def test_a_due_reminder_is_made_and_sent_once_however_often_the_tick_runs(policy, resource):
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)
    with time_machine.travel(PUSH + timedelta(days=1, minutes=1), tick=False):
        reminders_create_due(now=timezone.now())
        # A second tick that read the rotation before the first moved it on makes it again.
        Rotation.objects.filter(pk=rotation.pk).update(next_reminder_at=PUSH + timedelta(days=1))
        reminders_create_due(now=timezone.now())
        assert tick()["reminders_sent"] == 1
        assert tick()["reminders_sent"] == 0
    assert list(rotation.reminders.values_list("step", flat=True)) == ["day-1"]
    assert len(mail.outbox) == 1
    assert AuditEvent.objects.filter(action=AuditAction.REMINDER_SENT).count() == 1


def test_a_rotation_that_ended_before_its_reminders_fell_due_gets_none(policy, resource):
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)
    Rotation.objects.filter(pk=rotation.pk).update(
        state=Rotation.State.COMPLETED, redeployed_at=PUSH + timedelta(hours=2)
    )
    with time_machine.travel(PUSH + timedelta(days=15), tick=False):
        assert tick()["reminders_sent"] == 0
    assert not rotation.reminders.exists()
    rotation.refresh_from_db()
    assert rotation.next_reminder_at is None
    assert not mail.outbox


def test_the_rows_made_when_due_carry_the_times_planned_at_the_push(policy, resource):
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)
    for day in (1, 3, 7, 12, 14):
        with time_machine.travel(PUSH + timedelta(days=day, minutes=1), tick=False):
            tick()
    made = dict(rotation.reminders.values_list("step", "due_at"))
    assert made == {
        "day-1": PUSH + timedelta(days=1),
        "day-3": PUSH + timedelta(days=3),
        "day-7": PUSH + timedelta(days=7),
        "escalation": PUSH + timedelta(days=12),
        "overdue": PUSH + timedelta(days=14),
    }
