"""Staff interventions: cancel and retry, one rotation or a batch."""

from __future__ import annotations

import pytest

from rotation import services
from rotation.audit import AuditAction
from rotation.models import AuditEvent, CredentialVersion, Resource
from rotation.selectors import batch_progress
from rotation.services import RotationRefused
from tests.conftest import make_installation
from tests.services.batch_runs import State, all_values, run_batch


def test_it_retries_a_failed_rotation_with_the_same_pending_version(
    alice, fake_vercel, installation, q_sync, django_capture_on_commit_callbacks
):
    fake_vercel.load_from_database()
    resource = installation.resources.get()
    fake_vercel.respond_next(404, {"error": {"code": "not_found", "message": "No such resource"}})
    with django_capture_on_commit_callbacks(execute=True):
        batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
    rotation = batch.rotations.get()
    assert rotation.state == State.FAILED
    pending = CredentialVersion.objects.get(resource=resource, stage="pending")
    with django_capture_on_commit_callbacks(execute=True):
        assert services.batch_retry_failed(batch=batch, actor=alice) == 1
    rotation.refresh_from_db()
    assert rotation.state == State.AWAITING_REDEPLOY
    pending.refresh_from_db()
    assert pending.stage == "current"
    held = fake_vercel.secrets_of(installation.vercel_id, resource.vercel_id)
    assert sorted(all_values(held)) == sorted(all_values(pending.secrets()))
    assert batch_progress(batch=batch).percent == 100


def test_it_retries_one_rotation(alice, fake_vercel, installation):
    fake_vercel.load_from_database()
    resource = installation.resources.get()
    fake_vercel.respond_next(422, {"error": {"code": "bad_request", "message": "bad"}})
    batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
    run_batch(batch)
    rotation = batch.rotations.get()
    services.rotation_retry(rotation=rotation, actor=alice)
    rotation.refresh_from_db()
    assert rotation.state == State.PREPARING
    assert rotation.attempts == 0
    run_batch(batch)
    rotation.refresh_from_db()
    assert rotation.state == State.AWAITING_REDEPLOY


def test_it_refuses_to_retry_what_did_not_fail(alice, installation):
    resource = installation.resources.get()
    batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
    with pytest.raises(RotationRefused, match="only failed"):
        services.rotation_retry(rotation=batch.rotations.get(), actor=alice)
    assert AuditEvent.objects.filter(
        action=AuditAction.ROTATION_RETRIED, outcome="failure"
    ).exists()


def test_it_never_pushes_a_cancelled_rotation(
    alice, fake_vercel, installation, q_sync, django_capture_on_commit_callbacks
):
    fake_vercel.load_from_database()
    resource = installation.resources.get()
    batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
    rotation = batch.rotations.get()
    assert services.rotation_prepare(rotation_id=rotation.pk) == State.PREPARING
    with django_capture_on_commit_callbacks(execute=True):
        services.rotation_cancel(rotation=rotation, actor=alice)
    assert services.rotation_push(rotation_id=rotation.pk) == State.CANCELLED
    assert fake_vercel.stats["total"] == 0
    skipped = AuditEvent.objects.get(action=AuditAction.ROTATION_PUSH_SKIPPED)
    assert skipped.details["rotations"] == [rotation.pk]
    version = CredentialVersion.objects.get(resource=resource)
    assert version.stage == "expired"
    assert bytes(version.secrets_encrypted) == b""
    assert version.expired_at is not None
    expired = AuditEvent.objects.get(action=AuditAction.CREDENTIALS_EXPIRED)
    assert expired.details["version"] == str(version.pk)


def test_it_refuses_to_cancel_a_pushed_rotation(alice, fake_vercel, installation):
    fake_vercel.load_from_database()
    resource = installation.resources.get()
    batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
    run_batch(batch)
    with pytest.raises(RotationRefused, match="can be cancelled"):
        services.rotation_cancel(rotation=batch.rotations.get(), actor=alice)
    assert batch.rotations.get().state == State.AWAITING_REDEPLOY


def test_it_cancels_a_batch(alice, db):
    make_installation("icfg_many", resources=5)
    batch = services.rotation_request(
        resource_ids=Resource.objects.all(), actor=alice, reason="oops"
    )
    services.rotation_prepare(rotation_id=batch.rotations.first().pk)
    assert services.batch_cancel(batch=batch, actor=alice) == 5
    assert set(batch.rotations.values_list("state", flat=True)) == {State.CANCELLED}
    assert not CredentialVersion.objects.filter(stage="pending").exists()
    progress = batch_progress(batch=batch)
    assert progress.finished is True
    assert progress.counts["cancelled"] == 5


def test_it_denies_cancel_and_retry_without_permission(alice, dave, installation):
    resource = installation.resources.get()
    batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
    rotation = batch.rotations.get()
    for call in (
        lambda: services.rotation_cancel(rotation=rotation, actor=dave),
        lambda: services.rotation_retry(rotation=rotation, actor=dave),
        lambda: services.batch_cancel(batch=batch, actor=dave),
        lambda: services.batch_retry_failed(batch=batch, actor=dave),
    ):
        with pytest.raises(RotationRefused, match="permission"):
            call()
    assert AuditEvent.objects.filter(outcome="denied", actor_username="dave").count() == 4
    assert batch.rotations.get().state == State.REQUESTED
