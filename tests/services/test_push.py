"""Pushing pending versions to the Vercel stand-in over real HTTP: endpoints, versions, errors."""

from __future__ import annotations

from rotation import services
from rotation.audit import AuditAction
from rotation.models import AuditEvent, CredentialVersion, Resource, Rotation
from tests.conftest import make_installation
from tests.services.batch_runs import State, run_batch


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
