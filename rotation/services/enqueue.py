"""Handing rotations to django-q2: chunk tasks of rotation ids, never a secret value."""

from __future__ import annotations

from django.db import transaction
from django_q.tasks import async_task

from rotation.selectors import chunked

CHUNK_SIZE = (
    50  # rotations per task: per-task overhead is several ms (README, "How a rotation runs")
)
PROCESS_TASK = "rotation.tasks.rotations_process"
FAN_OUT_TASK = "rotation.tasks.batch_fan_out"


def rotations_enqueue(*, rotation_ids: list[int], group: str) -> None:
    """Enqueue chunk tasks of CHUNK_SIZE rotation ids (ids only)."""
    for chunk in chunked(rotation_ids, CHUNK_SIZE):
        async_task(PROCESS_TASK, chunk, group=group, task_name=f"{group}-{chunk[0]}")


def rotations_enqueue_after_commit(rotation_ids: list[int], *, group: str) -> None:
    """`rotations_enqueue` once the caller's transaction commits (the Redis broker is not
    transactional; with the ORM broker this costs nothing)."""
    if rotation_ids:
        ids = list(rotation_ids)
        transaction.on_commit(lambda: rotations_enqueue(rotation_ids=ids, group=group))


def batch_fan_out_enqueue(batch_id: int) -> None:
    """One task that splits a large batch into chunk tasks."""
    async_task(FAN_OUT_TASK, batch_id, group=f"batch-{batch_id}", task_name=f"batch-{batch_id}")
