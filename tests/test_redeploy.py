"""Redeploy tracking services: begin, redeploys seen or confirmed, reminders, expiry, rollback."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail
from django.core.mail.backends import locmem
from django.db import transaction

from rotation.audit import AuditAction
from rotation.models import AuditEvent, RedeployCheck, Reminder, Rotation
from tests.redeploy_builders import NEW_SECRETS, OLD_SECRETS, connect, make_pushed_rotation

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


def test_it_is_idempotent_when_begun_twice(policy, resource):
    from rotation.redeploy import rotations_redeploy_begin

    connect(resource, "prj_a")
    rotation = make_pushed_rotation(resource)
    with transaction.atomic():
        (plan,) = rotations_redeploy_begin(rotations=[rotation])
    assert plan["projects"] == ["prj_a"]
    assert plan["reminders"] == ["day-1", "day-3", "day-7", "escalation", "overdue"]
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


def _tick():
    from rotation.tasks_redeploy import redeploy_tick

    return redeploy_tick()


def test_it_reminds_the_contact_at_the_policy_times_and_never_twice(policy, resource):
    connect(resource, "prj_a", at=PUSH - timedelta(days=3))
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)

    with time_machine.travel(PUSH + timedelta(hours=23, minutes=59), tick=False):
        assert _tick()["reminders_sent"] == 0
    with time_machine.travel(PUSH + timedelta(days=1), tick=False):
        assert _tick()["reminders_sent"] == 1
        assert _tick()["reminders_sent"] == 0
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["owner@example.com"]
    assert resource.name in message.subject
    assert resource.vercel_id in message.body
    assert "DATABASE_URL, PGPASSWORD" in message.body
    assert "prj_a" in message.body
    assert "redeploy" in message.body.lower()
    with time_machine.travel(PUSH + timedelta(days=2, hours=23), tick=False):
        assert _tick()["reminders_sent"] == 0
    with time_machine.travel(PUSH + timedelta(days=3, minutes=1), tick=False):
        assert _tick()["reminders_sent"] == 1
    with time_machine.travel(PUSH + timedelta(days=7, minutes=1), tick=False):
        assert _tick()["reminders_sent"] == 1
        assert _tick()["reminders_sent"] == 0
    assert len(mail.outbox) == 3
    sent = dict(rotation.reminders.values_list("step", "status"))
    assert sent == {
        "day-1": "sent",
        "day-3": "sent",
        "day-7": "sent",
        "escalation": "scheduled",
        "overdue": "scheduled",
    }
    audited = AuditEvent.objects.filter(action=AuditAction.REMINDER_SENT)
    assert sorted(e.details["step"] for e in audited) == ["day-1", "day-3", "day-7"]
    assert all(e.rotation_ref == rotation.pk for e in audited)


def test_it_sends_only_the_newest_missed_reminder_after_downtime(policy, resource):
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)
    with time_machine.travel(PUSH + timedelta(days=4), tick=False):
        assert _tick()["reminders_sent"] == 1
    assert dict(rotation.reminders.values_list("step", "status"))["day-1"] == "skipped"
    assert "day-3" in dict(rotation.reminders.filter(status="sent").values_list("step", "kind"))


def test_it_escalates_to_staff_as_the_deadline_nears_then_marks_it_overdue(policy, resource):
    connect(resource, "prj_a", at=PUSH - timedelta(days=3))
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)
    with time_machine.travel(PUSH + timedelta(days=8), tick=False):
        _tick()
    mail.outbox.clear()

    with time_machine.travel(PUSH + timedelta(days=12, minutes=1), tick=False):
        assert _tick()["reminders_sent"] == 1
    assert mail.outbox[0].to == ["oncall@partner.example"]
    assert "Deadline near" in mail.outbox[0].subject
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.AWAITING_REDEPLOY

    with time_machine.travel(PUSH + timedelta(days=14, minutes=1), tick=False):
        result = _tick()
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
        _tick()
    escalation = [m for m in mail.outbox if "Deadline near" in m.subject]
    assert [m.to for m in escalation] == [["alice@example.com"]]


def test_it_keeps_a_failed_reminder_visible_and_retries_it(policy, resource, settings):
    settings.EMAIL_BACKEND = "tests.test_redeploy.BrokenEmailBackend"
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)
    with time_machine.travel(PUSH + timedelta(days=1), tick=False):
        assert _tick()["reminders_sent"] == 0
    reminder = rotation.reminders.get(step="day-1")
    assert reminder.status == Reminder.Status.FAILED
    assert "SMTP is down" in reminder.last_error
    failure = AuditEvent.objects.get(action=AuditAction.REMINDER_SENT)
    assert failure.outcome == AuditEvent.Outcome.FAILURE

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    with time_machine.travel(PUSH + timedelta(days=1, minutes=4), tick=False):
        assert _tick()["reminders_sent"] == 0  # not before the retry interval
    with time_machine.travel(PUSH + timedelta(days=1, minutes=5), tick=False):
        assert _tick()["reminders_sent"] == 1
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
    policy.EMAIL_BACKEND = "tests.test_redeploy.SlowEmailBackend"
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


class ExpiredAtProvider:
    """Reads which versions the provider confirmed expired: stage expired, expiry time set."""

    @staticmethod
    def expired_version_ids() -> list[str]:
        from rotation.models import CredentialVersion

        confirmed = CredentialVersion.objects.filter(stage="expired", expired_at__isnull=False)
        return [str(pk) for pk in confirmed.order_by("expired_at").values_list("pk", flat=True)]


@pytest.fixture
def provider(db):
    return ExpiredAtProvider


def _versions(resource) -> dict[str, str]:
    return {v.stage: v for v in resource.credential_versions.all()}


def test_it_expires_only_after_every_project_redeployed_and_the_safety_delay(
    policy, provider, resource
):
    from rotation.redeploy import rotation_mark_project_redeployed

    connect(resource, "prj_a", "prj_b", at=PUSH - timedelta(days=3))
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)
    old = _versions(resource)["previous"]

    with time_machine.travel(PUSH + timedelta(hours=1), tick=False):
        rotation_mark_project_redeployed(
            resource=resource, project_id="prj_a", deployed_at=PUSH + timedelta(hours=1)
        )
        assert _tick()["expired"] == 0
    with time_machine.travel(PUSH + timedelta(days=20), tick=False):
        assert _tick()["expired"] == 0  # prj_b never redeployed; no deadline policy
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.ESCALATED
    assert provider.expired_version_ids() == []

    done_at = PUSH + timedelta(days=20, hours=1)
    with time_machine.travel(done_at, tick=False):
        rotation_mark_project_redeployed(resource=resource, project_id="prj_b", deployed_at=done_at)
    with time_machine.travel(done_at + timedelta(minutes=9), tick=False):
        assert _tick()["expired"] == 0  # safety delay
    with time_machine.travel(done_at + timedelta(minutes=10), tick=False):
        assert _tick()["expired"] == 1

    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.COMPLETED
    assert rotation.completed_at == done_at + timedelta(minutes=10)
    assert provider.expired_version_ids() == [str(old.pk)]
    old.refresh_from_db()
    assert old.stage == "expired"
    assert bytes(old.secrets_encrypted) == b""
    assert _versions(resource)["current"].rotation_id == rotation.pk
    expired = AuditEvent.objects.get(action=AuditAction.OLD_CREDENTIALS_EXPIRED)
    assert expired.outcome == "success"


def test_it_expires_at_the_deadline_when_the_policy_says_so(policy, provider, resource):
    policy.ROTATION_EXPIRE_ON_DEADLINE = True
    connect(resource, "prj_a", at=PUSH - timedelta(days=3))
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)
    with time_machine.travel(PUSH + timedelta(days=13, hours=23), tick=False):
        assert _tick() == {"reminders_sent": 2, "escalated": 0, "expired": 0}
    with time_machine.travel(PUSH + timedelta(days=14), tick=False):
        assert _tick()["expired"] == 1
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.COMPLETED
    assert rotation.redeployed_at is None
    assert len(provider.expired_version_ids()) == 1


def test_it_keeps_old_credentials_as_long_as_vercel_asked(policy, provider, resource):
    connect(resource, "prj_a", at=PUSH - timedelta(days=3))
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)
    Rotation.objects.filter(pk=rotation.pk).update(
        redeployed_at=PUSH + timedelta(hours=1), keep_old_until=PUSH + timedelta(hours=48)
    )
    with time_machine.travel(PUSH + timedelta(hours=47), tick=False):
        assert _tick()["expired"] == 0
    with time_machine.travel(PUSH + timedelta(hours=48), tick=False):
        assert _tick()["expired"] == 1


def test_it_expires_an_emergency_rotation_right_after_the_push(
    policy, provider, resource, django_capture_on_commit_callbacks
):
    from django_q.models import OrmQ

    from rotation.tasks_redeploy import rotation_expire_old_task

    connect(resource, "prj_a", at=PUSH - timedelta(days=3))
    with time_machine.travel(PUSH, tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            rotation = make_pushed_rotation(resource, emergency=True)
        queued = [(task.task["func"], task.task["args"]) for task in OrmQ.objects.all()]
        assert queued == [("rotation.tasks_redeploy.rotation_expire_old_task", (rotation.pk,))]
        assert rotation_expire_old_task(rotation.pk) is True
        assert rotation_expire_old_task(rotation.pk) is False
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.COMPLETED
    assert rotation.redeployed_at is None
    assert len(provider.expired_version_ids()) == 1


def test_it_retries_a_failed_expiry_and_shows_why(policy, provider, resource, settings):
    connect(resource, "prj_a", at=PUSH - timedelta(days=3))
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)
    Rotation.objects.filter(pk=rotation.pk).update(redeployed_at=PUSH)
    settings.ROTATION_CREDENTIAL_PROVIDER = "tests.providers.FailingExpiryProvider"
    settings.ROTATION_EXPIRE_RETRY_MINUTES = 5

    with time_machine.travel(PUSH + timedelta(hours=1), tick=False):
        assert _tick()["expired"] == 0
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.EXPIRING
    assert "partner backend unreachable" in rotation.last_error
    failure = AuditEvent.objects.get(action=AuditAction.OLD_CREDENTIALS_EXPIRED)
    assert failure.outcome == "failure"
    assert _versions(resource)["previous"].secrets() == OLD_SECRETS

    settings.ROTATION_CREDENTIAL_PROVIDER = settings.DEMO_CREDENTIAL_PROVIDER
    with time_machine.travel(PUSH + timedelta(hours=1, minutes=4), tick=False):
        assert _tick()["expired"] == 0  # not before the retry time
    with time_machine.travel(PUSH + timedelta(hours=1, minutes=5), tick=False):
        assert _tick()["expired"] == 1
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.COMPLETED
    assert rotation.last_error == ""


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
        assert _tick()["expired"] == 1


@pytest.fixture
def on_vercel(fake_vercel, resource):
    installation = resource.installation
    fake_vercel.load_from_database()
    fake_vercel.set_secrets(installation.vercel_id, resource.vercel_id, NEW_SECRETS)
    return fake_vercel


def test_it_rolls_back_to_the_previous_values_on_vercel(
    policy, provider, resource, on_vercel, root
):
    from rotation.services import rotation_rollback

    connect(resource, "prj_a", at=PUSH - timedelta(days=3))
    rotation = make_pushed_rotation(resource)
    old, new = _versions(resource)["previous"], _versions(resource)["current"]

    rotation_rollback(rotation=rotation, actor=root, reason="new credentials break logins")

    installation = resource.installation
    assert on_vercel.secrets_of(installation.vercel_id, resource.vercel_id) == OLD_SECRETS
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.ROLLED_BACK
    old.refresh_from_db()
    new.refresh_from_db()
    assert old.stage == "current"
    assert old.secrets() == OLD_SECRETS
    assert new.stage == "expired"
    assert bytes(new.secrets_encrypted) == b""
    assert provider.expired_version_ids() == [str(new.pk)]
    event = AuditEvent.objects.get(action=AuditAction.ROTATION_ROLLED_BACK)
    assert (event.outcome, event.actor_username) == ("success", "root")
    assert event.reason == "new credentials break logins"
    assert "old-pass" not in str(event.details)
    assert _tick()["expired"] == 0


def test_it_refuses_to_roll_back_without_permission_or_after_expiry(
    policy, provider, resource, on_vercel, alice, root
):
    from rotation.audit import RotationRefused
    from rotation.services import rotation_rollback

    rotation = make_pushed_rotation(resource, emergency=True)
    with pytest.raises(RotationRefused, match="may not"):
        rotation_rollback(rotation=rotation, actor=alice, reason="please")
    assert _tick()["expired"] == 1
    rotation.refresh_from_db()
    with pytest.raises(RotationRefused, match="completed"):
        rotation_rollback(rotation=rotation, actor=root, reason="too late")
    installation = resource.installation
    assert on_vercel.secrets_of(installation.vercel_id, resource.vercel_id) == NEW_SECRETS


def test_it_changes_nothing_when_vercel_refuses_the_rollback(
    policy, provider, resource, on_vercel, root
):
    from rotation.audit import RotationRefused
    from rotation.services import rotation_rollback

    rotation = make_pushed_rotation(resource)
    on_vercel.respond_next(403, {"error": {"code": "forbidden", "message": "no"}})

    with pytest.raises(RotationRefused, match="nothing changed"):
        rotation_rollback(rotation=rotation, actor=root, reason="try")

    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.AWAITING_REDEPLOY
    assert set(_versions(resource)) == {"previous", "current"}
    event = AuditEvent.objects.get(action=AuditAction.ROTATION_ROLLED_BACK)
    assert event.outcome == "failure"


def test_it_stops_the_rotations_of_a_removed_installation(policy, resource):
    from rotation.redeploy import installation_removed

    rotation = make_pushed_rotation(resource)
    with transaction.atomic():
        installation_removed(installation=resource.installation)
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.CANCELLED
    with time_machine.travel(PUSH + timedelta(days=30), tick=False):
        assert _tick() == {"reminders_sent": 0, "escalated": 0, "expired": 0}
    assert not mail.outbox


def test_it_runs_from_one_periodic_schedule_created_by_the_migration(db):
    from django_q.models import Schedule

    schedules = Schedule.objects.filter(func="rotation.tasks_redeploy.redeploy_tick")
    assert [(s.name, s.schedule_type, s.minutes, s.repeats) for s in schedules] == [
        ("rotation: redeploy reminders and expiry", Schedule.MINUTES, 1, -1)
    ]


def test_it_retries_expiring_the_newer_credentials_after_a_rollback(
    policy, provider, resource, on_vercel, root, settings
):
    from rotation.services import rotation_rollback

    rotation = make_pushed_rotation(resource)
    new = _versions(resource)["current"]
    settings.ROTATION_CREDENTIAL_PROVIDER = "tests.providers.FailingExpiryProvider"

    rotation_rollback(rotation=rotation, actor=root, reason="bad set")

    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.ROLLED_BACK
    assert "newer credentials failed" in rotation.last_error
    new.refresh_from_db()
    assert new.stage == "previous" and new.secrets() == NEW_SECRETS
    assert _tick()["expired"] == 0

    settings.ROTATION_CREDENTIAL_PROVIDER = settings.DEMO_CREDENTIAL_PROVIDER
    assert _tick()["expired"] == 1
    new.refresh_from_db()
    assert new.stage == "expired" and bytes(new.secrets_encrypted) == b""
    rotation.refresh_from_db()
    assert rotation.last_error == ""
    assert provider.expired_version_ids() == [str(new.pk)]
