"""Preparing: the provider makes the pending version once per rotation."""

from __future__ import annotations

import pytest

from rotation import services
from rotation.models import CredentialVersion, Resource, Rotation
from tests.conftest import make_installation
from tests.services.batch_runs import State


def test_it_prepares_idempotently(alice, installation):
    resource = installation.resources.get()
    batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
    rotation = batch.rotations.get()
    services.rotation_prepare(rotation_id=rotation.pk)
    services.rotation_prepare(rotation_id=rotation.pk)
    assert CredentialVersion.objects.filter(resource=resource).count() == 1


def test_it_leaves_a_rotation_whose_credentials_are_being_made_to_its_preparer(
    alice, installation, settings
):
    from datetime import timedelta

    from django.utils import timezone

    resource = installation.resources.get()
    rotation = services.rotation_request(
        resource_ids=[resource.pk], actor=alice, reason="x"
    ).rotations.get()
    # Another worker holds the provider lease: no pending version yet.
    lease = timezone.now() + timedelta(minutes=5)
    Rotation.objects.filter(pk=rotation.pk).update(state=State.PREPARING, next_attempt_at=lease)

    assert services.rotation_prepare(rotation_id=rotation.pk) == State.PREPARING
    assert services.rotation_push(rotation_id=rotation.pk) == State.PREPARING
    assert not CredentialVersion.objects.exists()
    assert services.rotations_requeue_stuck() == []
    # The lease runs out (that worker died): the sweeper frees it and queues it again.
    later = lease + timedelta(seconds=1)
    assert services.rotations_requeue_stuck(now=later) == [rotation.pk]
    rotation.refresh_from_db()
    assert rotation.next_attempt_at is None
    assert services.rotation_prepare(rotation_id=rotation.pk) == State.PREPARING
    assert CredentialVersion.objects.get(resource=resource).stage == "pending"


@pytest.mark.parametrize(
    ("record_seconds", "stored_count"),
    [
        # A slow provider (each call outlasts RECORD_SECONDS): each credential is recorded
        # once made, so the 14 made before the worker died (on the 15th call) are stored.
        (0, 14),
        # A fast provider: the 14 were one group, not yet recorded, so none is stored (the
        # provider keys credentials by rotation, so the retry reuses them).
        (3600, 0),
    ],
)
def test_made_credentials_are_recorded_at_least_every_record_seconds(
    alice, settings, monkeypatch, db, record_seconds, stored_count
):
    from rotation.services import prepare
    from tests.provider_doubles import WorkerKilled

    make_installation("icfg_dying", resources=20)
    batch = services.rotation_request(
        resource_ids=Resource.objects.all(), actor=alice, reason="provider under load"
    )
    ids = list(batch.rotations.order_by("pk").values_list("pk", flat=True))
    settings.ROTATION_CREDENTIAL_PROVIDER = "tests.provider_doubles.DyingProvider"
    monkeypatch.setattr(prepare, "RECORD_SECONDS", record_seconds)
    with pytest.raises(WorkerKilled):
        services.rotations_prepare(rotation_ids=ids)
    # The rest wait for their lease.
    stored = CredentialVersion.objects.filter(rotation_id__in=ids, stage="pending")
    assert sorted(stored.values_list("rotation_id", flat=True)) == ids[:stored_count]
