"""django-q2 tasks for rotate and push: thin, ids in, ids or counts out, never a secret value.

django-q2 stores task arguments and results signed but not encrypted, in its tables and
admin pages, so these functions take and return ids and counts only.
"""

from __future__ import annotations

import time

from rotation import services, vercel
from rotation.audit.checkpoints import audit_checkpoint_write

SWEEPER_SCHEDULE_NAME = "rotation: re-queue stuck rotations"
AUDIT_CHECKPOINT_SCHEDULE_NAME = "rotation: audit checkpoint"


def batch_fan_out(batch_id: int) -> int:
    """Split a batch into chunk tasks (one task per CHUNK_SIZE rotations); returns the count."""
    return services.batch_dispatch(batch_id=batch_id)


def rotations_process(rotation_ids: list[int]) -> int:
    """Prepare and push a chunk of rotations over one HTTP session; returns how many pushed."""
    deadline = time.monotonic() + services.chunk_budget()
    pushed: set[int] = set()
    services.rotations_prepare_and_push(
        rotation_ids=rotation_ids,
        session=vercel.default_session(),
        deadline=deadline,
        pushed=pushed,
    )
    # Counted by this call: another copy of the task may have pushed some of the chunk.
    return len(pushed)


def rotations_sweep() -> int:
    """The periodic sweeper: re-queue lost or due rotations; returns how many."""
    return len(services.rotations_requeue_stuck()) + services.marketplace_requeue_due()


def audit_checkpoint() -> int | None:
    """The hourly schedule: anchor a signed checkpoint of the audit chain; returns its last id."""
    return audit_checkpoint_write(via="schedule").last_id
