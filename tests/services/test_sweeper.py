"""The sweeper re-queues rotations whose worker died."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from rotation import services
from rotation.models import Rotation
from tests.services.batch_runs import State


def test_it_requeues_rotations_whose_worker_died(alice, installation, settings):
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


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_leaves_alone_a_rotation_a_worker_is_claiming_right_now(settings):
    """A worker holding the row (its claim transaction) is skipped, so the sweeper can
    never clear a lease the worker takes a moment later."""
    from rotation.roles import SUPPORT, roles_sync
    from tests.conftest import make_installation, make_user

    roles_sync()
    alice = make_user("alice", group=SUPPORT)
    installation = make_installation("icfg_sweep", resources=2)
    batch = services.rotation_request(
        resource_ids=installation.resources.all(), actor=alice, reason="x"
    )
    claimed, free = batch.rotations.order_by("pk")
    Rotation.objects.filter(batch=batch).update(state=State.PUSHING)
    later = timezone.now() + services.stuck_after() + timedelta(seconds=1)
    holding, release = threading.Event(), threading.Event()

    def worker() -> None:
        try:
            with transaction.atomic():
                Rotation.objects.select_for_update().get(pk=claimed.pk)
                holding.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert holding.wait(timeout=30)
        assert services.rotations_requeue_stuck(now=later) == [free.pk]
    finally:
        release.set()
        thread.join(timeout=30)
    assert claimed.pk in services.rotations_requeue_stuck(now=later + timedelta(hours=1))
