"""Preparing: the provider makes the pending version once per rotation."""

from __future__ import annotations

from rotation import services
from rotation.models import CredentialVersion, Rotation
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
