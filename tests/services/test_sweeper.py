"""The sweeper re-queues rotations whose worker died."""

from __future__ import annotations

from rotation import services
from rotation.models import Rotation
from tests.services.batch_runs import State


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
