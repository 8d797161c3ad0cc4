"""Retiring credential versions: one worker per version, crashes completed by the tick, and
credentials made for a rotation that no longer wants them never left valid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from rotation import services
from rotation.audit import AuditAction
from rotation.models import AuditEvent, CredentialVersion, Rotation
from rotation.providers.retirement import versions_retire
from tests.provider_doubles import DiesAfterExpiringProvider, SecondWorkerProvider, WorkerDied

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
State = Rotation.State


@pytest.fixture
def prepared(resource, root):
    """A rotation with its pending version, not pushed yet."""
    batch = services.rotation_request(resource_ids=[resource.pk], actor=root, reason="x")
    rotation = batch.rotations.get()
    services.rotation_prepare(rotation_id=rotation.pk)
    return rotation


@pytest.fixture
def second_worker(settings):
    settings.ROTATION_CREDENTIAL_PROVIDER = "tests.provider_doubles.SecondWorkerProvider"
    return SecondWorkerProvider


def _tick() -> dict[str, int]:
    from rotation.tasks_redeploy import redeploy_tick

    return redeploy_tick()


def test_it_completes_a_retirement_whose_worker_died_after_the_provider_call(
    prepared, root, settings, q_sync, django_capture_on_commit_callbacks
):
    settings.ROTATION_STUCK_AFTER_SECONDS = 60
    settings.ROTATION_CREDENTIAL_PROVIDER = "tests.provider_doubles.DiesAfterExpiringProvider"
    pending = CredentialVersion.objects.get(rotation=prepared, stage="pending")

    with (
        time_machine.travel(T0, tick=False),
        pytest.raises(WorkerDied),
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.rotation_cancel(rotation=prepared, actor=root)

    assert DiesAfterExpiringProvider.expired == [str(pending.pk)]
    pending.refresh_from_db()
    assert pending.stage == "retiring" and pending.secrets()  # nothing recorded yet
    settings.ROTATION_CREDENTIAL_PROVIDER = settings.DEMO_CREDENTIAL_PROVIDER
    with time_machine.travel(T0 + timedelta(seconds=59), tick=False):
        assert _tick()["retired"] == 0  # the worker might still be running
    with time_machine.travel(T0 + timedelta(seconds=60), tick=False):
        assert _tick()["retired"] == 1
    pending.refresh_from_db()
    assert pending.stage == "expired" and bytes(pending.secrets_encrypted) == b""
    expired = AuditEvent.objects.get(action=AuditAction.CREDENTIALS_EXPIRED)
    assert (expired.outcome, expired.rotation_ref) == ("success", prepared.pk)
    assert expired.details["why"] == "rotation cancelled"


def test_it_completes_a_retirement_whose_worker_died_right_after_the_commit(
    prepared, root, django_capture_on_commit_callbacks
):
    # The after-commit work is never run: the worker died right after the commit.
    with django_capture_on_commit_callbacks(execute=False) as after_commit:
        services.rotation_cancel(rotation=prepared, actor=root)
    assert len(after_commit) == 1
    pending = CredentialVersion.objects.get(rotation=prepared)
    assert pending.stage == "retiring"
    prepared.refresh_from_db()
    assert prepared.state == State.CANCELLED

    assert _tick()["retired"] == 1
    pending.refresh_from_db()
    assert pending.stage == "expired" and pending.expired_at is not None
    assert _tick()["retired"] == 0


def test_it_never_calls_the_provider_twice_at_once_for_a_version(
    prepared, root, second_worker, q_sync, django_capture_on_commit_callbacks
):
    second_worker.during_expire = lambda version: versions_retire(version_ids=[version.pk])
    pending = CredentialVersion.objects.get(rotation=prepared)

    with django_capture_on_commit_callbacks(execute=True):
        services.rotation_cancel(rotation=prepared, actor=root)

    assert second_worker.calls == ["expire"]
    assert second_worker.seen[0].skipped == [pending.pk]
    pending.refresh_from_db()
    assert pending.stage == "expired"
    assert AuditEvent.objects.filter(action=AuditAction.CREDENTIALS_EXPIRED).count() == 1


def test_it_retires_credentials_made_for_a_rotation_cancelled_meanwhile(
    resource, root, second_worker, django_capture_on_commit_callbacks
):
    rotation = services.rotation_request(
        resource_ids=[resource.pk], actor=root, reason="x"
    ).rotations.get()
    second_worker.during_create = lambda _: services.rotation_cancel(rotation=rotation, actor=root)

    with django_capture_on_commit_callbacks(execute=True):
        assert services.rotation_prepare(rotation_id=rotation.pk) == State.CANCELLED

    assert second_worker.calls == ["create", "expire"]
    made = CredentialVersion.objects.get(resource=resource)
    assert (made.stage, made.retire_reason) == ("expired", "made but not needed")
    assert not AuditEvent.objects.filter(action=AuditAction.ROTATION_PREPARED).exists()


def test_it_leaves_a_rotation_to_the_worker_that_is_making_its_credentials(
    resource, root, second_worker
):
    rotation = services.rotation_request(
        resource_ids=[resource.pk], actor=root, reason="x"
    ).rotations.get()
    second_worker.during_create = lambda _: services.rotation_prepare(rotation_id=rotation.pk)

    assert services.rotation_prepare(rotation_id=rotation.pk) == State.PREPARING

    assert second_worker.calls == ["create"]  # the second worker did not call the provider
    assert second_worker.seen == [State.PREPARING]
    assert CredentialVersion.objects.get(resource=resource).stage == "pending"
    rotation.refresh_from_db()
    assert rotation.next_attempt_at is None  # the lease ended with the pending version


def test_it_keeps_the_pending_version_a_worker_stored_first(
    resource, root, second_worker, django_capture_on_commit_callbacks
):
    rotation = services.rotation_request(
        resource_ids=[resource.pk], actor=root, reason="x"
    ).rotations.get()

    def takeover(_):
        # The first worker's lease ran out (it seemed dead); another one prepares meanwhile.
        second_worker.during_create = None
        Rotation.objects.filter(pk=rotation.pk).update(next_attempt_at=T0)
        return services.rotation_prepare(rotation_id=rotation.pk)

    second_worker.during_create = takeover
    with django_capture_on_commit_callbacks(execute=True):
        assert services.rotation_prepare(rotation_id=rotation.pk) == State.PREPARING

    # `create` is keyed by the rotation: both calls made the same login, so expiring the
    # second copy would revoke the stored one. It is dropped, never expired.
    assert second_worker.calls == ["create", "create"]
    kept = CredentialVersion.objects.get(resource=resource)
    assert kept.stage == "pending"
    prepared = AuditEvent.objects.get(action=AuditAction.ROTATION_PREPARED)
    assert prepared.details["version"] == str(kept.pk)
