"""Expiry of the old credentials: after redeploys and the safety delay, at the deadline, retried."""

from __future__ import annotations

from datetime import timedelta

import time_machine

from rotation.audit import AuditAction
from rotation.models import AuditEvent, Rotation
from tests.redeploy_builders import (
    OLD_SECRETS,
    PUSH,
    connect,
    make_pushed_rotation,
    tick,
    versions_by_stage,
)


def test_it_expires_only_after_every_project_redeployed_and_the_safety_delay(
    policy, provider, resource
):
    from rotation.redeploy import rotation_mark_project_redeployed

    connect(resource, "prj_a", "prj_b", at=PUSH - timedelta(days=3))
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)
    old = versions_by_stage(resource)["previous"]

    with time_machine.travel(PUSH + timedelta(hours=1), tick=False):
        rotation_mark_project_redeployed(
            resource=resource, project_id="prj_a", deployed_at=PUSH + timedelta(hours=1)
        )
        assert tick()["expired"] == 0
    with time_machine.travel(PUSH + timedelta(days=20), tick=False):
        assert tick()["expired"] == 0  # prj_b never redeployed; no deadline policy
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.ESCALATED
    assert provider.expired_version_ids() == []

    done_at = PUSH + timedelta(days=20, hours=1)
    with time_machine.travel(done_at, tick=False):
        rotation_mark_project_redeployed(resource=resource, project_id="prj_b", deployed_at=done_at)
    with time_machine.travel(done_at + timedelta(minutes=9), tick=False):
        assert tick()["expired"] == 0  # safety delay
    with time_machine.travel(done_at + timedelta(minutes=10), tick=False):
        assert tick()["expired"] == 1

    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.COMPLETED
    assert rotation.completed_at == done_at + timedelta(minutes=10)
    assert provider.expired_version_ids() == [str(old.pk)]
    old.refresh_from_db()
    assert old.stage == "expired"
    assert bytes(old.secrets_encrypted) == b""
    assert versions_by_stage(resource)["current"].rotation_id == rotation.pk
    expired = AuditEvent.objects.get(action=AuditAction.OLD_CREDENTIALS_EXPIRED)
    assert expired.outcome == "success"


def test_it_expires_at_the_deadline_when_the_policy_says_so(policy, provider, resource):
    policy.ROTATION_EXPIRE_ON_DEADLINE = True
    connect(resource, "prj_a", at=PUSH - timedelta(days=3))
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)
    with time_machine.travel(PUSH + timedelta(days=13, hours=23), tick=False):
        assert tick() == {
            "reminders_sent": 2,
            "escalated": 0,
            "expired": 0,
            "retired": 0,
            "idempotency_keys_pruned": 0,
            "webhook_events_pruned": 0,
            "task_results_pruned": 0,
        }
    with time_machine.travel(PUSH + timedelta(days=14), tick=False):
        assert tick()["expired"] == 1
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
        assert tick()["expired"] == 0
    with time_machine.travel(PUSH + timedelta(hours=48), tick=False):
        assert tick()["expired"] == 1


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
    settings.ROTATION_CREDENTIAL_PROVIDER = "tests.provider_doubles.FailingExpiryProvider"
    settings.ROTATION_EXPIRE_RETRY_MINUTES = 5

    with time_machine.travel(PUSH + timedelta(hours=1), tick=False):
        assert tick()["expired"] == 0
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.EXPIRING
    assert "partner backend unreachable" in rotation.last_error
    failure = AuditEvent.objects.get(action=AuditAction.OLD_CREDENTIALS_EXPIRED)
    assert failure.outcome == "failure"
    assert "partner backend unreachable" in failure.details["error"]
    version_failure = AuditEvent.objects.get(action=AuditAction.CREDENTIALS_EXPIRED)
    assert (version_failure.outcome, version_failure.rotation_ref) == ("failure", rotation.pk)
    # Out of use but still valid and readable until the provider confirms.
    assert versions_by_stage(resource)["retiring"].secrets() == OLD_SECRETS

    settings.ROTATION_CREDENTIAL_PROVIDER = settings.DEMO_CREDENTIAL_PROVIDER
    with time_machine.travel(PUSH + timedelta(hours=1, minutes=4), tick=False):
        assert tick()["expired"] == 0  # not before the retry time
    with time_machine.travel(PUSH + timedelta(hours=1, minutes=5), tick=False):
        assert tick()["expired"] == 1
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.COMPLETED
    assert rotation.last_error == ""
    assert versions_by_stage(resource)["expired"].expired_at == PUSH + timedelta(hours=1, minutes=5)


def test_it_runs_from_one_periodic_schedule_created_by_the_migration(db):
    from django_q.models import Schedule

    schedules = Schedule.objects.filter(func="rotation.tasks_redeploy.redeploy_tick")
    assert [(s.name, s.schedule_type, s.minutes, s.repeats) for s in schedules] == [
        ("rotation: redeploy reminders and expiry", Schedule.MINUTES, 1, -1)
    ]
