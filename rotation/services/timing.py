"""How long a rotation's task may take before it counts as lost, and a chunk's time budget."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings


def stuck_after() -> timedelta:
    """How long a rotation may sit in preparing/pushing untouched: longer than a task lives."""
    return timedelta(seconds=settings.ROTATION_STUCK_AFTER_SECONDS)


def chunk_budget() -> float:
    """Seconds a chunk task works before handing the rest to a new task (half the timeout)."""
    return float(settings.Q_CLUSTER["timeout"]) / 2
