"""Successful task results are kept up to Q_SAVE_LIMIT, pruned by the redeploy tick rather
than by django-q2 on every saved result."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from django_q.models import Task

from rotation.services import task_results
from rotation.tasks_redeploy import redeploy_tick


def results(count: int, *, success: bool = True, prefix: str = "t") -> None:
    now = timezone.now()
    Task.objects.bulk_create(
        Task(
            id=f"{prefix}{n:031d}",
            name=f"{prefix}-{n}",
            func="rotation.tasks.rotations_process",
            args=([n],),
            started=now - timedelta(seconds=count - n + 1),
            stopped=now - timedelta(seconds=count - n),
            result=1,
            success=success,
        )
        for n in range(count)
    )


def test_the_cluster_saves_every_result_and_never_prunes_on_save():
    # django-q2 prunes on each save only with a positive save_limit.
    assert settings.Q_CLUSTER["save_limit"] == 0
    assert settings.TASK_RESULTS_KEPT == 1000


@pytest.mark.django_db
def test_the_tick_keeps_the_newest_results_and_every_failure(settings, monkeypatch):
    settings.TASK_RESULTS_KEPT = 5
    monkeypatch.setattr(task_results, "PRUNE_BATCH", 4)
    results(12)
    results(3, success=False, prefix="f")
    assert redeploy_tick()["task_results_pruned"] == 4
    assert redeploy_tick()["task_results_pruned"] == 3
    assert redeploy_tick()["task_results_pruned"] == 0
    kept = set(Task.objects.filter(success=True).values_list("name", flat=True))
    assert kept == {f"t-{n}" for n in range(7, 12)}
    assert Task.objects.filter(success=False).count() == 3


@pytest.mark.django_db
def test_nothing_is_pruned_when_all_are_kept(settings):
    settings.TASK_RESULTS_KEPT = 0
    results(3)
    assert task_results.task_results_prune() == 0
    assert Task.objects.count() == 3
