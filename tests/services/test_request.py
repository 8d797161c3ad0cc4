"""Requesting rotations: permission, reason, refusals, the preview, bulk insert, races."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django_q.models import OrmQ

from rotation import services
from rotation.audit import AuditAction
from rotation.models import AuditEvent, Installation, Resource, Rotation
from rotation.services import RotationRefused
from tests.conftest import make_installation, make_user, run_at_once
from tests.services.batch_runs import State


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
    outcomes: list[int] = []

    def request() -> None:
        batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="race")
        outcomes.append(batch.rotations.count())

    run_at_once(50, request)
    assert connection.vendor == "postgresql"
    assert Rotation.objects.filter(resource=resource).count() == 1
    assert sorted(outcomes) == [0] * 49 + [1]
    refused = [
        entry["reason"]
        for batch in resource.rotations.model.batch.field.related_model.objects.all()
        for entry in batch.refused
    ]
    assert len(refused) == 49


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_opens_one_rotation_per_resource_for_overlapping_selections_at_once():
    from rotation.roles import SUPPORT, roles_sync

    roles_sync()
    alice = make_user("alice", group=SUPPORT)
    bob = make_user("bob", group=SUPPORT)
    installation = make_installation("icfg_overlap", resources=60)
    ids = list(installation.resources.order_by("pk").values_list("pk", flat=True))
    # Four staff at once: two select across the installation, two pick overlapping halves.
    selections: list[tuple[Any, Any]] = [
        (alice, lambda: installation.resources.all()),
        (bob, lambda: Resource.objects.filter(installation=installation)),
        (alice, lambda: ids[:40]),
        (bob, lambda: ids[20:]),
    ]
    batches = []

    def request() -> None:
        actor, selection = selections.pop()
        batches.append(
            services.rotation_request(resource_ids=selection(), actor=actor, reason="overlap")
        )

    run_at_once(len(selections), request)
    assert len(batches) == 4
    assert connection.vendor == "postgresql"
    per_resource = Rotation.objects.values_list("resource_id", flat=True)
    assert sorted(per_resource) == ids  # every resource rotated once, by one of the batches
    for batch in batches:
        rotated = set(batch.rotations.values_list("resource_id", flat=True))
        refused = {entry["resource"] for entry in batch.refused}
        assert not rotated & refused
        requested = AuditEvent.objects.get(
            action=AuditAction.ROTATION_REQUESTED, batch_ref=batch.pk
        )
        assert requested.details["rotations"] == len(rotated)
        assert (
            requested.details["rotations"] + requested.details["refused"]
            == (requested.details["requested"])
        )
        assert all(
            "still open" in entry["reason"] or "same time" in entry["reason"]
            for entry in batch.refused
        )
