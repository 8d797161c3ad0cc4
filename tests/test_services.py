"""Rotate and push services, against the Vercel stand-in over real HTTP."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections
from django_q.conf import Conf
from django_q.models import OrmQ

from rotation import services
from rotation.audit import AuditAction
from rotation.models import AuditEvent, CredentialVersion, Installation, Resource, Rotation
from rotation.selectors import batch_progress
from rotation.services import RotationRefused
from tests.conftest import make_installation, make_user

State = Rotation.State


@pytest.fixture
def fast_retries(settings):
    """Short waits so retry tests run in seconds; hangs end at the read timeout."""
    settings.ROTATION_PUSH_BACKOFF_BASE = 0.01
    settings.ROTATION_PUSH_MAX_ATTEMPTS = 30
    settings.VERCEL_READ_TIMEOUT = 0.5
    settings.VERCEL_CONNECT_TIMEOUT = 0.5


@pytest.fixture
def q_sync(monkeypatch):
    """django-q2 runs each enqueued task at once, in this process (`Q_CLUSTER sync`)."""
    monkeypatch.setattr(Conf, "SYNC", True)


def run_batch(batch) -> None:
    """What the cluster does: fan out, then process each chunk (synchronously, in-process)."""
    from rotation import tasks

    ids = list(batch.rotations.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(ids), services.CHUNK_SIZE):
        tasks.rotations_process(ids[start : start + services.CHUNK_SIZE])


def all_values(secrets: list[dict]) -> list[str]:
    values = []
    for secret in secrets:
        values.append(secret["value"])
        values.extend((secret.get("environmentOverrides") or {}).values())
    return values


def test_it_requests_a_batch_and_records_it(
    alice, installation, django_capture_on_commit_callbacks
):
    resource = installation.resources.get()
    with django_capture_on_commit_callbacks(execute=True):
        batch = services.rotation_request(
            resource_ids=[resource.pk], actor=alice, reason="leaked in CI log", ticket="SEC-1"
        )
    rotation = batch.rotations.get()
    assert rotation.state == State.REQUESTED
    assert batch.reason == "leaked in CI log"
    assert batch.ticket == "SEC-1"
    assert batch.requested_by == alice
    assert batch.source == "admin"
    event = AuditEvent.objects.get(action=AuditAction.ROTATION_REQUESTED)
    assert event.actor_username == "alice"
    assert event.batch_ref == batch.pk
    assert event.ticket == "SEC-1"
    assert event.details["resources"] == [resource.vercel_id]
    # One fan-out task, carrying the batch id only.
    assert OrmQ.objects.count() == 1


def test_it_refuses_without_permission_and_audits_it(dave, installation):
    resource = installation.resources.get()
    with pytest.raises(RotationRefused, match="permission"):
        services.rotation_request(resource_ids=[resource.pk], actor=dave, reason="because")
    assert not Rotation.objects.exists()
    event = AuditEvent.objects.get(action=AuditAction.ROTATION_REQUEST_DENIED)
    assert event.outcome == "denied"
    assert event.actor_username == "dave"


def test_it_needs_the_emergency_permission_for_emergencies(alice, installation):
    resource = installation.resources.get()
    with pytest.raises(RotationRefused, match="emergency"):
        services.rotation_request(
            resource_ids=[resource.pk], actor=alice, reason="leak", emergency=True
        )
    assert not Rotation.objects.exists()
    assert AuditEvent.objects.filter(outcome="denied").count() == 1


def test_it_requires_a_reason(alice, installation):
    resource = installation.resources.get()
    with pytest.raises(RotationRefused, match="reason"):
        services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="  ")
    assert not Rotation.objects.exists()


def test_it_reports_refused_resources_with_their_reason(alice, db):
    live = make_installation("icfg_live", resources=2)
    gone = make_installation("icfg_gone", resources=1)
    gone.status = Installation.Status.REMOVED
    gone.save()
    first, second = live.resources.order_by("pk")
    services.rotation_request(resource_ids=[first.pk], actor=alice, reason="one")
    batch = services.rotation_request(
        resource_ids=[first.pk, second.pk, gone.resources.get().pk, 999_999],
        actor=alice,
        reason="again",
    )
    assert list(batch.rotations.values_list("resource_id", flat=True)) == [second.pk]
    reasons = {entry["resource"]: entry["reason"] for entry in batch.refused}
    assert set(reasons) == {first.pk, gone.resources.get().pk, 999_999}
    assert "still open" in reasons[first.pk]
    assert "removed" in reasons[gone.resources.get().pk]
    assert "does not exist" in reasons[999_999]


def test_it_previews_what_a_request_would_do(alice, db):
    live = make_installation("icfg_live", resources=3)
    first = live.resources.order_by("pk").first()
    services.rotation_request(resource_ids=[first.pk], actor=alice, reason="one")
    preview = services.rotation_request_preview(resource_ids=live.resources.all(), actor=alice)
    assert preview.count == 3
    assert preview.will_rotate == 2
    assert preview.refused_count == 1
    assert preview.refused[0]["resource"] == first.pk
    assert len(preview.sample) == 2
    assert preview.emergency_allowed is False
    assert Rotation.objects.count() == 1  # a preview changes nothing


def test_it_pushes_on_both_endpoints_and_moves_versions(alice, fake_vercel, db):
    make_installation("icfg_cur", token="vci_cur", endpoint="current")
    make_installation("icfg_dep", token="vci_dep", endpoint="deprecated", product="pg")
    fake_vercel.load_from_database()
    batch = services.rotation_request(
        resource_ids=Resource.objects.all(), actor=alice, reason="quarterly"
    )
    run_batch(batch)
    assert set(batch.rotations.values_list("state", flat=True)) == {State.AWAITING_REDEPLOY}
    paths = sorted(request.path for request in fake_vercel.requests)
    assert paths == [
        "/v1/installations/icfg_cur/resources/icfg_cur_res0/secrets",
        "/v1/installations/icfg_dep/products/pg/resources/icfg_dep_res0/secrets",
    ]
    for resource in Resource.objects.select_related("installation"):
        version = CredentialVersion.objects.get(resource=resource, stage="current")
        held = fake_vercel.secrets_of(resource.installation.vercel_id, resource.vercel_id)
        assert {s["name"]: s for s in held} == {s["name"]: s for s in version.secrets()}
    rotation = batch.rotations.first()
    assert rotation.pushed_at is not None
    pushed = AuditEvent.objects.get(action=AuditAction.ROTATION_PUSHED, rotation_ref=rotation.pk)
    # One event records the push and what redeploy tracking planned for it.
    rotation.refresh_from_db()
    assert pushed.details["redeploy"]["deadline"] == rotation.redeploy_deadline_at.isoformat()
    assert pushed.details["redeploy"]["reminders"][0] == "day-1"


def test_it_keeps_current_as_previous_on_the_next_rotation(alice, fake_vercel, installation):
    fake_vercel.load_from_database()
    resource = installation.resources.get()
    run_batch(services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="1"))
    first = CredentialVersion.objects.get(resource=resource, stage="current")
    Rotation.objects.update(state=State.COMPLETED)
    run_batch(services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="2"))
    first.refresh_from_db()
    assert first.stage == "previous"
    assert CredentialVersion.objects.get(resource=resource, stage="current").pk != first.pk


def test_it_fails_fast_on_a_permanent_error_and_keeps_the_pending_version(
    alice, fake_vercel, installation
):
    fake_vercel.load_from_database()
    resource = installation.resources.get()
    fake_vercel.respond_next(
        403, {"error": {"code": "forbidden", "message": "Not authorized for this resource"}}
    )
    batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
    run_batch(batch)
    rotation = batch.rotations.get()
    assert rotation.state == State.FAILED
    assert rotation.attempts == 1
    assert rotation.last_error_status == 403
    assert rotation.last_error_code == "forbidden"
    assert rotation.last_error == "Not authorized for this resource"
    pending = CredentialVersion.objects.get(resource=resource, stage="pending")
    assert pending.secrets()
    assert fake_vercel.secrets_of(installation.vercel_id, resource.vercel_id) == []


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
    assert batch_progress(batch=batch)["percent"] == 100


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


def test_it_never_pushes_a_cancelled_rotation(alice, fake_vercel, installation):
    fake_vercel.load_from_database()
    resource = installation.resources.get()
    batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
    rotation = batch.rotations.get()
    assert services.rotation_prepare(rotation_id=rotation.pk) == State.PREPARING
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
    assert progress["done"] is True
    assert progress["counts"]["cancelled"] == 5


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


def test_it_prepares_idempotently(alice, installation):
    resource = installation.resources.get()
    batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
    rotation = batch.rotations.get()
    services.rotation_prepare(rotation_id=rotation.pk)
    services.rotation_prepare(rotation_id=rotation.pk)
    assert CredentialVersion.objects.filter(resource=resource).count() == 1


def test_it_retries_transient_errors_honouring_retry_after(
    alice, fake_vercel, installation, fast_retries
):
    fake_vercel.load_from_database()
    resource = installation.resources.get()
    fake_vercel.respond_next(
        429,
        {"error": {"code": "rate_limited", "message": "Slow down"}},
        headers={"Retry-After": "0"},
    )
    fake_vercel.respond_next(502, {"error": {"code": "internal_server_error", "message": "x"}})
    batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
    run_batch(batch)
    rotation = batch.rotations.get()
    assert rotation.state == State.AWAITING_REDEPLOY
    assert rotation.attempts == 3
    deferred = AuditEvent.objects.filter(action=AuditAction.ROTATION_PUSH_DEFERRED)
    assert [event.details["status"] for event in deferred.order_by("id")] == [429, 502]


def test_it_gives_up_after_a_bounded_number_of_attempts(
    alice, fake_vercel, installation, fast_retries, settings
):
    settings.ROTATION_PUSH_MAX_ATTEMPTS = 3
    fake_vercel.load_from_database()
    resource = installation.resources.get()
    fake_vercel.respond_next(
        503, {"error": {"code": "internal_server_error", "message": "down"}}, times=5
    )
    batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
    run_batch(batch)
    rotation = batch.rotations.get()
    assert rotation.state == State.FAILED
    assert rotation.attempts == 3
    assert rotation.last_error_status == 503
    assert "Gave up after 3 attempts" in rotation.last_error
    assert CredentialVersion.objects.filter(resource=resource, stage="pending").exists()


def test_it_defers_long_waits_to_the_sweeper(alice, fake_vercel, installation, settings):
    fake_vercel.load_from_database()
    resource = installation.resources.get()
    fake_vercel.respond_next(
        429, {"error": {"code": "rate_limited", "message": "later"}}, headers={"Retry-After": "120"}
    )
    batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
    run_batch(batch)
    rotation = batch.rotations.get()
    assert rotation.state == State.PUSHING
    assert rotation.next_attempt_at is not None
    # Not due yet: the sweeper leaves it alone and a stray task does not push it.
    assert services.rotations_requeue_stuck() == []
    assert services.rotation_push(rotation_id=rotation.pk) == State.PUSHING
    assert fake_vercel.stats["total"] == 1
    # Once due, the sweeper re-queues it exactly once.
    later = rotation.next_attempt_at + (rotation.next_attempt_at - rotation.state_changed_at)
    assert services.rotations_requeue_stuck(now=later) == [rotation.pk]
    assert services.rotations_requeue_stuck(now=later) == []


def test_it_requeues_rotations_whose_worker_died(alice, installation, settings):
    from datetime import timedelta

    from django.utils import timezone

    resource = installation.resources.get()
    batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
    rotation = batch.rotations.get()
    services.rotation_prepare(rotation_id=rotation.pk)
    Rotation.objects.filter(pk=rotation.pk).update(state=State.PUSHING)
    assert services.rotations_requeue_stuck() == []
    later = timezone.now() + services.stuck_after() + timedelta(seconds=1)
    assert services.rotations_requeue_stuck(now=later) == [rotation.pk]
    rotation.refresh_from_db()
    assert rotation.next_attempt_at == later


def test_it_reports_progress_from_our_own_rows(alice, db):
    make_installation("icfg_many", resources=4)
    batch = services.rotation_request(resource_ids=Resource.objects.all(), actor=alice, reason="x")
    first, second, *_ = batch.rotations.order_by("pk")
    Rotation.objects.filter(pk=first.pk).update(state=State.AWAITING_REDEPLOY)
    Rotation.objects.filter(pk=second.pk).update(state=State.FAILED)
    progress = batch_progress(batch=batch)
    assert progress["total"] == 4
    assert progress["counts"]["requested"] == 2
    assert progress["pushed"] == 1
    assert progress["failed"] == 1
    assert progress["percent"] == 50
    assert progress["done"] is False


def test_it_records_ten_thousand_rotations_in_one_request(alice, db):
    installation = Installation.objects.create(vercel_id="icfg_big")
    Resource.objects.bulk_create(
        Resource(installation=installation, vercel_id=f"r{i}", product="pg", name=f"db{i}")
        for i in range(10_000)
    )
    batch = services.rotation_request(
        resource_ids=Resource.objects.all(), actor=alice, reason="all"
    )
    assert batch.rotations.count() == 10_000
    assert AuditEvent.objects.filter(action=AuditAction.ROTATION_REQUESTED).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_opens_one_rotation_for_fifty_concurrent_requests():
    from rotation.roles import SUPPORT, roles_sync

    roles_sync()
    alice = make_user("alice", group=SUPPORT)
    resource = make_installation("icfg_race").resources.get()
    barrier = threading.Barrier(50)
    outcomes: list[int] = []

    def request() -> None:
        try:
            barrier.wait()
            batch = services.rotation_request(
                resource_ids=[resource.pk], actor=alice, reason="race"
            )
            outcomes.append(batch.rotations.count())
        finally:
            connections.close_all()

    threads = [threading.Thread(target=request) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert connection.vendor == "postgresql"
    assert Rotation.objects.filter(resource=resource).count() == 1
    assert sorted(outcomes) == [0] * 49 + [1]
    refused = [
        entry["reason"]
        for batch in resource.rotations.model.batch.field.related_model.objects.all()
        for entry in batch.refused
    ]
    assert len(refused) == 49
