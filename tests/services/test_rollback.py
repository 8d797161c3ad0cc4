"""Roll back: requested by staff, carried out by a task through the push pipeline's retries."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine

from rotation.audit import AuditAction
from rotation.models import AuditEvent, Rotation
from tests.redeploy_builders import (
    NEW_SECRETS,
    OLD_SECRETS,
    PUSH,
    ROLLBACK_TASK,
    connect,
    make_pushed_rotation,
    run_queued,
    run_rollback,
    tick,
    versions_by_stage,
)


def test_it_rolls_back_to_the_previous_values_on_vercel(
    policy, provider, resource, on_vercel, root, django_capture_on_commit_callbacks
):
    from rotation.services import rotation_rollback

    connect(resource, "prj_a", at=PUSH - timedelta(days=3))
    rotation = make_pushed_rotation(resource)
    old, new = versions_by_stage(resource)["previous"], versions_by_stage(resource)["current"]
    installation = resource.installation

    with django_capture_on_commit_callbacks(execute=True):
        rotation_rollback(rotation=rotation, actor=root, reason="new credentials break logins")

    # Requested: nothing changed yet, and the old credentials are kept meanwhile.
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.AWAITING_REDEPLOY and rotation.rollback_pending
    assert on_vercel.secrets_of(installation.vercel_id, resource.vercel_id) == NEW_SECRETS
    Rotation.objects.filter(pk=rotation.pk).update(redeployed_at=PUSH - timedelta(hours=1))
    assert tick()["expired"] == 0
    with django_capture_on_commit_callbacks(execute=True):
        assert run_queued(ROLLBACK_TASK) == [True]

    assert on_vercel.secrets_of(installation.vercel_id, resource.vercel_id) == OLD_SECRETS
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.ROLLED_BACK
    assert not rotation.reminders.filter(status="scheduled").exists()
    old.refresh_from_db()
    new.refresh_from_db()
    assert old.stage == "current"
    assert old.secrets() == OLD_SECRETS
    assert new.stage == "expired"
    assert bytes(new.secrets_encrypted) == b""
    assert provider.expired_version_ids() == [str(new.pk)]
    events = AuditEvent.objects.filter(
        action__in=[AuditAction.ROLLBACK_REQUESTED, AuditAction.ROTATION_ROLLED_BACK]
    ).order_by("id")
    assert [(e.action, e.outcome, e.actor_username) for e in events] == [
        (AuditAction.ROLLBACK_REQUESTED, "success", "root"),
        (AuditAction.ROTATION_ROLLED_BACK, "success", ""),
    ]
    assert {e.reason for e in events} == {"new credentials break logins"}
    assert events[1].details["requested_by"] == "root"
    assert "old-pass" not in str([e.details for e in events])
    assert tick()["expired"] == 0
    # The task delivered again changes nothing and sends nothing.
    puts = on_vercel.stats["total"]
    assert run_rollback(rotation) == Rotation.State.ROLLED_BACK
    assert on_vercel.stats["total"] == puts


def test_it_refuses_to_roll_back_without_permission_or_after_expiry(
    policy, provider, resource, on_vercel, alice, root
):
    from rotation.audit import RotationRefused
    from rotation.services import rotation_rollback

    rotation = make_pushed_rotation(resource, emergency=True)
    with pytest.raises(RotationRefused, match="may not"):
        rotation_rollback(rotation=rotation, actor=alice, reason="please")
    assert tick()["expired"] == 1
    rotation.refresh_from_db()
    with pytest.raises(RotationRefused, match="completed"):
        rotation_rollback(rotation=rotation, actor=root, reason="too late")
    installation = resource.installation
    assert on_vercel.secrets_of(installation.vercel_id, resource.vercel_id) == NEW_SECRETS
    refused = AuditEvent.objects.filter(action=AuditAction.ROLLBACK_REQUESTED)
    assert sorted(e.outcome for e in refused) == ["denied", "failure"]


def test_it_refuses_a_second_rollback_while_one_is_under_way(
    policy, provider, resource, on_vercel, root
):
    from rotation.audit import RotationRefused
    from rotation.services import rotation_rollback

    rotation = make_pushed_rotation(resource)
    rotation_rollback(rotation=rotation, actor=root, reason="first")
    with pytest.raises(RotationRefused, match="already under way"):
        rotation_rollback(rotation=rotation, actor=root, reason="second")
    rotation.refresh_from_db()
    assert rotation.rollback_reason == "first"


def test_it_changes_nothing_when_vercel_refuses_the_rollback(
    policy, provider, resource, on_vercel, root, django_capture_on_commit_callbacks
):
    from rotation.services import rotation_rollback

    rotation = make_pushed_rotation(resource)
    on_vercel.respond_next(403, {"error": {"code": "forbidden", "message": "no"}})

    with django_capture_on_commit_callbacks(execute=True):
        rotation_rollback(rotation=rotation, actor=root, reason="try")
    assert run_queued(ROLLBACK_TASK) == [False]

    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.AWAITING_REDEPLOY
    assert not rotation.rollback_pending
    assert "nothing changed" in rotation.last_error
    assert (rotation.last_error_status, rotation.last_error_code) == (403, "forbidden")
    assert set(versions_by_stage(resource)) == {"previous", "current"}
    installation = resource.installation
    assert on_vercel.secrets_of(installation.vercel_id, resource.vercel_id) == NEW_SECRETS
    failed = AuditEvent.objects.get(action=AuditAction.ROTATION_ROLLED_BACK, outcome="failure")
    assert failed.details["step"] == "failed"
    # Back to waiting: the old credentials expire as usual, and a new rollback may be asked.
    assert run_rollback(rotation) == Rotation.State.AWAITING_REDEPLOY
    assert rotation_rollback(rotation=rotation, actor=root, reason="again").rollback_pending


def test_it_retries_a_rollback_through_transient_errors(
    policy, provider, resource, on_vercel, root, settings, django_capture_on_commit_callbacks
):
    from rotation.services import rotation_rollback, rotations_requeue_stuck

    settings.ROTATION_PUSH_BACKOFF_BASE = 0.01
    rotation = make_pushed_rotation(resource)
    rotation_rollback(rotation=rotation, actor=root, reason="bad set")
    on_vercel.respond_next(502, {"error": {"code": "internal_server_error", "message": "x"}})
    on_vercel.respond_next(
        429, {"error": {"code": "rate_limited", "message": "later"}}, headers={"Retry-After": "120"}
    )

    # One quick retry in the worker, then a long wait is left to the sweeper.
    assert run_rollback(rotation) == Rotation.State.AWAITING_REDEPLOY
    rotation.refresh_from_db()
    assert rotation.rollback_pending and rotation.rollback_attempts == 2
    assert rotation.last_error_status == 429
    assert rotations_requeue_stuck() == []
    assert run_rollback(rotation) == Rotation.State.AWAITING_REDEPLOY  # not due yet
    assert on_vercel.stats["total"] == 2

    later = rotation.next_attempt_at + timedelta(seconds=1)
    # The 429 paused the installation's pushes for every worker until then, too.
    with time_machine.travel(later, tick=True):
        with django_capture_on_commit_callbacks(execute=True):
            assert rotations_requeue_stuck(now=later) == [rotation.pk]
        assert run_queued(ROLLBACK_TASK) == [True]
    installation = resource.installation
    assert on_vercel.secrets_of(installation.vercel_id, resource.vercel_id) == OLD_SECRETS
    retrying = AuditEvent.objects.filter(
        action=AuditAction.ROTATION_ROLLED_BACK, details__step="retrying"
    )
    assert sorted(e.details["in_worker"] for e in retrying) == [False, True]


def test_it_requeues_a_rollback_whose_task_was_lost(
    policy, provider, resource, on_vercel, root, django_capture_on_commit_callbacks
):
    from django.utils import timezone
    from django_q.models import OrmQ

    from rotation.services import rotation_rollback, rotations_requeue_stuck, stuck_after

    rotation = make_pushed_rotation(resource)
    rotation_rollback(rotation=rotation, actor=root, reason="bad set")
    OrmQ.objects.all().delete()  # the task never ran (a Redis worker died)
    assert rotations_requeue_stuck() == []
    later = timezone.now() + stuck_after() + timedelta(seconds=1)
    with django_capture_on_commit_callbacks(execute=True):
        assert rotations_requeue_stuck(now=later) == [rotation.pk]
        assert rotations_requeue_stuck(now=later) == []  # queued once
    assert run_queued(ROLLBACK_TASK) == [True]
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.ROLLED_BACK


def test_it_retries_expiring_the_newer_credentials_after_a_rollback(
    policy, provider, resource, on_vercel, root, settings, django_capture_on_commit_callbacks
):
    from rotation.services import rotation_rollback

    rotation = make_pushed_rotation(resource)
    new = versions_by_stage(resource)["current"]
    settings.ROTATION_CREDENTIAL_PROVIDER = "tests.provider_doubles.FailingExpiryProvider"
    settings.ROTATION_EXPIRE_RETRY_MINUTES = 5

    with time_machine.travel(PUSH, tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            rotation_rollback(rotation=rotation, actor=root, reason="bad set")
        with django_capture_on_commit_callbacks(execute=True):
            assert run_queued(ROLLBACK_TASK) == [True]

    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.ROLLED_BACK
    assert "partner backend unreachable" in rotation.last_error
    new.refresh_from_db()
    assert new.stage == "retiring" and new.secrets() == NEW_SECRETS
    with time_machine.travel(PUSH + timedelta(minutes=4), tick=False):
        assert tick()["retired"] == 0  # not before the retry time

    settings.ROTATION_CREDENTIAL_PROVIDER = settings.DEMO_CREDENTIAL_PROVIDER
    with time_machine.travel(PUSH + timedelta(minutes=5), tick=False):
        assert tick()["retired"] == 1
    new.refresh_from_db()
    assert new.stage == "expired" and bytes(new.secrets_encrypted) == b""
    rotation.refresh_from_db()
    assert rotation.last_error == ""
    assert provider.expired_version_ids() == [str(new.pk)]
    outcomes = AuditEvent.objects.filter(action=AuditAction.CREDENTIALS_EXPIRED).order_by("id")
    assert [(e.outcome, e.details["why"]) for e in outcomes] == [
        ("failure", "rolled back"),
        ("success", "rolled back"),
    ]
