"""Reads: batch progress counted from our own rows."""

from __future__ import annotations

from rotation import services
from rotation.models import Resource, Rotation
from rotation.selectors import batch_progress
from tests.conftest import make_installation
from tests.services.batch_runs import State


def test_it_reports_progress_from_our_own_rows(alice, db):
    make_installation("icfg_many", resources=4)
    batch = services.rotation_request(resource_ids=Resource.objects.all(), actor=alice, reason="x")
    first, second, *_ = batch.rotations.order_by("pk")
    Rotation.objects.filter(pk=first.pk).update(state=State.AWAITING_REDEPLOY)
    Rotation.objects.filter(pk=second.pk).update(state=State.FAILED)
    progress = batch_progress(batch=batch)
    assert progress.total == 4
    assert progress.counts["requested"] == 2
    assert progress.pushed == 1
    assert progress.failed == 1
    assert progress.percent == 50
    assert progress.finished is False
