"""Pushes when Vercel removes the deprecated secrets endpoint: the fallback to the current
endpoint, the one switch it makes, the setting that turns it off, and the sunset date."""

from __future__ import annotations

import logging
import threading
from datetime import date

import pytest
import time_machine
from django.db import connections

from rotation import services, tasks
from rotation.audit import AuditAction
from rotation.models import AuditEvent, CredentialVersion, Installation, Resource
from rotation.services.endpoints import installation_endpoint_fall_back
from tests.conftest import make_installation, make_user, raw_database_bytes
from tests.services.batch_runs import State, run_batch

DEPRECATED_PATH = "/products/pg/"


@pytest.fixture
def on_deprecated(db, fake_vercel):
    """One installation on the deprecated endpoint with 60 resources, known to the stand-in."""
    installation = make_installation(
        "icfg_old", token="vci_old", endpoint="deprecated", resources=60, product="pg"
    )
    fake_vercel.load_from_database()
    return installation


def fallback_events():
    return AuditEvent.objects.filter(action=AuditAction.INSTALLATION_ENDPOINT_FELL_BACK)


def assert_stand_in_holds_current_versions(fake, installation):
    for resource in installation.resources.all():
        current = CredentialVersion.objects.get(resource=resource, stage="current")
        held = fake.secrets_of(installation.vercel_id, resource.vercel_id)
        assert {s["name"]: s["value"] for s in held} == {
            s["name"]: s["value"] for s in current.secrets()
        }


@pytest.mark.parametrize("gone", [410, 404])
def test_it_lands_every_push_on_the_current_endpoint_and_switches_once(
    gone, alice, on_deprecated, fake_vercel, q_sync, django_capture_on_commit_callbacks
):
    fake_vercel.gone_deprecated = gone
    with django_capture_on_commit_callbacks(execute=True):
        batch = services.rotation_request(
            resource_ids=on_deprecated.resources.all(), actor=alice, reason="sunset"
        )
    assert set(batch.rotations.values_list("state", flat=True)) == {State.AWAITING_REDEPLOY}
    assert batch.rotations.count() == 60
    assert_stand_in_holds_current_versions(fake_vercel, on_deprecated)
    on_deprecated.refresh_from_db()
    assert on_deprecated.endpoint == "current"
    # The first push met the removed path; the rest went straight to the current one.
    paths = [request.path for request in fake_vercel.requests if request.method == "PUT"]
    assert [p for p in paths if DEPRECATED_PATH in p] == [paths[0]]
    assert len(paths) == 61
    event = fallback_events().get()
    assert event.installation_ref == "icfg_old"
    assert event.actor_type == AuditEvent.ActorType.SYSTEM
    assert event.details["deprecated_answer"] == {
        "status": gone,
        "code": "gone" if gone == 410 else "not_found",
    }
    assert event.details["current_answer"]["code"] == "accepted"
    assert (event.details["from"], event.details["to"]) == ("deprecated", "current")
    pushed = AuditEvent.objects.filter(action=AuditAction.ROTATION_PUSHED)
    assert {e.details["endpoint"] for e in pushed} == {"current"}


def test_a_resource_gone_on_both_endpoints_fails_with_the_reason(alice, on_deprecated, fake_vercel):
    fake_vercel.gone_deprecated = 410
    resource = on_deprecated.resources.first()
    Resource.objects.filter(pk=resource.pk).update(vercel_id="res_unknown_to_vercel")
    batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
    run_batch(batch)
    rotation = batch.rotations.get()
    assert rotation.state == State.FAILED
    assert (rotation.last_error_status, rotation.last_error_code) == (404, "not_found")
    assert rotation.last_error == (
        "Resource not found (the deprecated endpoint answered 410 gone first)"
    )
    assert CredentialVersion.objects.get(resource=resource, stage="pending").secrets()
    on_deprecated.refresh_from_db()
    assert on_deprecated.endpoint == "deprecated"
    assert not fallback_events().exists()
    assert [r.status for r in fake_vercel.requests] == [410, 404]


def test_with_the_fallback_off_a_removed_endpoint_fails_as_before(
    alice, on_deprecated, fake_vercel, settings
):
    settings.VERCEL_DEPRECATED_ENDPOINT_FALLBACK = False
    fake_vercel.gone_deprecated = 410
    resources = list(on_deprecated.resources.all()[:3])
    batch = services.rotation_request(
        resource_ids=[r.pk for r in resources], actor=alice, reason="x"
    )
    run_batch(batch)
    assert set(batch.rotations.values_list("state", "last_error_status", "last_error_code")) == {
        (State.FAILED, 410, "gone")
    }
    assert all(DEPRECATED_PATH in r.path for r in fake_vercel.requests)
    assert len(fake_vercel.requests) == 3
    on_deprecated.refresh_from_db()
    assert on_deprecated.endpoint == "deprecated"
    assert not fallback_events().exists()
    assert CredentialVersion.objects.filter(stage="pending").count() == 3


def test_it_keeps_retrying_on_the_current_endpoint_after_a_transient_error(
    alice, on_deprecated, fake_vercel, fast_retries
):
    fake_vercel.gone_deprecated = 410
    resource = on_deprecated.resources.first()
    batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
    services.rotations_prepare(rotation_ids=[batch.rotations.get().pk])
    fake_vercel.respond_next(503, {"error": {"code": "internal_server_error", "message": "x"}})
    rotation = batch.rotations.get()
    assert services.rotation_push(rotation_id=rotation.pk) == State.AWAITING_REDEPLOY
    # 503 answered the deprecated call (scripted answers come first), 410 never came: the
    # retry asked the deprecated path again, met 410, and fell back.
    assert [r.status for r in fake_vercel.requests] == [503, 410, 201]
    assert fallback_events().count() == 1


def test_two_fallbacks_at_once_switch_and_audit_once(on_deprecated):
    resource = on_deprecated.resources.first()
    first = Installation.objects.get(pk=on_deprecated.pk)
    second = Installation.objects.get(pk=on_deprecated.pk)
    evidence = {"deprecated_answer": {"status": 410}, "current_answer": {"status": "2xx"}}
    assert installation_endpoint_fall_back(
        installation=first, resource=resource, rotation_id=None, **evidence
    )
    assert not installation_endpoint_fall_back(
        installation=second, resource=resource, rotation_id=None, **evidence
    )
    assert fallback_events().count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_workers_falling_back_together_switch_once_and_lose_nothing(fake_vercel, settings):
    """Two workers push chunks of the same installation at once, both meeting the 410."""
    from rotation.roles import SUPPORT, roles_sync

    roles_sync()
    alice = make_user("alice", group=SUPPORT)
    installation = make_installation("icfg_race", endpoint="deprecated", resources=40, product="pg")
    fake_vercel.load_from_database()
    fake_vercel.gone_deprecated = 410
    fake_vercel.latency_ms = 20  # both workers are in flight before either switches
    batch = services.rotation_request(
        resource_ids=installation.resources.all(), actor=alice, reason="race"
    )
    ids = list(batch.rotations.order_by("pk").values_list("pk", flat=True))
    barrier = threading.Barrier(2)

    def worker(chunk: list[int]) -> None:
        try:
            barrier.wait()
            tasks.rotations_process(chunk)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(ids[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(batch.rotations.values_list("state", flat=True)) == {State.AWAITING_REDEPLOY}
    assert_stand_in_holds_current_versions(fake_vercel, installation)
    installation.refresh_from_db()
    assert installation.endpoint == "current"
    assert fallback_events().count() == 1
    gone = [r for r in fake_vercel.requests if r.status == 410]
    # At most one per PUT in flight: each worker has up to ROTATION_PUSH_PER_INSTALLATION.
    assert 1 <= len(gone) <= 2 * settings.ROTATION_PUSH_PER_INSTALLATION


@pytest.mark.parametrize(
    ("today", "expected"), [("2027-03-31", DEPRECATED_PATH), ("2027-04-01", "/v1/")]
)
def test_from_the_sunset_date_every_push_goes_through_the_current_endpoint(
    today, expected, alice, on_deprecated, fake_vercel, settings
):
    settings.VERCEL_DEPRECATED_ENDPOINT_SUNSET = date(2027, 4, 1)
    settings.VERCEL_DEPRECATED_ENDPOINT_FALLBACK = False
    resources = list(on_deprecated.resources.all()[:5])
    with time_machine.travel(f"{today} 00:00:01Z", tick=True):
        batch = services.rotation_request(
            resource_ids=[r.pk for r in resources], actor=alice, reason="sunset"
        )
        run_batch(batch)
    assert set(batch.rotations.values_list("state", flat=True)) == {State.AWAITING_REDEPLOY}
    paths = [r.path for r in fake_vercel.requests]
    assert len(paths) == 5
    if expected == DEPRECATED_PATH:
        assert all(DEPRECATED_PATH in p for p in paths)
    else:
        assert not any("/products/" in p for p in paths)
        pushed = AuditEvent.objects.filter(action=AuditAction.ROTATION_PUSHED)
        assert {e.details["endpoint"] for e in pushed} == {"current"}
    # The sunset routes pushes; it does not rewrite the installation's setting.
    on_deprecated.refresh_from_db()
    assert on_deprecated.endpoint == "deprecated"
    assert not fallback_events().exists()


def test_a_rollback_on_a_removed_deprecated_endpoint_lands_on_the_current_one(
    policy, provider, root, fake_vercel, db
):
    from rotation.services import rotation_rollback
    from tests.redeploy_builders import (
        NEW_SECRETS,
        OLD_SECRETS,
        make_pushed_rotation,
        run_rollback,
    )

    installation = make_installation("icfg_rb", endpoint="deprecated", product="pg")
    resource = installation.resources.get()
    fake_vercel.load_from_database()
    fake_vercel.set_secrets(installation.vercel_id, resource.vercel_id, NEW_SECRETS)
    rotation = make_pushed_rotation(resource)
    rotation_rollback(rotation=rotation, actor=root, reason="breaks logins")
    fake_vercel.gone_deprecated = 404
    assert run_rollback(rotation) == State.ROLLED_BACK
    assert fake_vercel.secrets_of(installation.vercel_id, resource.vercel_id) == OLD_SECRETS
    assert [r.status for r in fake_vercel.requests] == [404, 201]
    installation.refresh_from_db()
    assert installation.endpoint == "current"
    assert fallback_events().get().rotation_ref == rotation.pk


def test_the_path_answering_410_then_404_switches_each_installation_once(
    alice, fake_vercel, q_sync, django_capture_on_commit_callbacks, caplog
):
    caplog.set_level(logging.INFO)
    first = make_installation("icfg_one", endpoint="deprecated", resources=30, product="pg")
    second = make_installation("icfg_two", endpoint="deprecated", resources=30, product="pg")
    fake_vercel.load_from_database()

    def rotate(installation):
        with django_capture_on_commit_callbacks(execute=True):
            return services.rotation_request(
                resource_ids=installation.resources.all(), actor=alice, reason="sunset"
            )

    fake_vercel.gone_deprecated = 410
    batches = [rotate(first)]
    fake_vercel.gone_deprecated = 404
    batches.append(rotate(second))
    for batch in batches:
        assert set(batch.rotations.values_list("state", flat=True)) == {State.AWAITING_REDEPLOY}
    for installation in (first, second):
        assert_stand_in_holds_current_versions(fake_vercel, installation)
    assert set(Installation.objects.values_list("endpoint", flat=True)) == {"current"}
    events = fallback_events().order_by("id")
    assert [(e.installation_ref, e.details["deprecated_answer"]["status"]) for e in events] == [
        ("icfg_one", 410),
        ("icfg_two", 404),
    ]
    gone = [r for r in fake_vercel.requests if r.status in (404, 410)]
    assert len(gone) == 2
    # Nothing pushed is readable in our tables or logs.
    held = [
        secret["value"].encode()
        for installation in (first, second)
        for resource in installation.resources.all()
        for secret in fake_vercel.secrets_of(installation.vercel_id, resource.vercel_id)
    ]
    assert len(held) == 120
    database = raw_database_bytes()
    assert not [value for value in held if value in database]
    logs = caplog.text.encode()
    assert b"trying the current one" in logs
    assert not [value for value in held if value in logs]
