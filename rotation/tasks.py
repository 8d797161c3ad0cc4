"""django-q2 tasks for rotate and push: thin, ids in, ids or counts out, never a secret value.

django-q2 stores task arguments and results signed but not encrypted, in its tables and
admin pages, so these functions take and return ids and counts only.
"""

from __future__ import annotations

import logging
import time

from rotation import services, vercel
from rotation.models import Rotation

logger = logging.getLogger(__name__)

SWEEPER_SCHEDULE_NAME = "rotation: re-queue stuck rotations"


def batch_fan_out(batch_id: int) -> int:
    """Split a batch into chunk tasks (one task per CHUNK_SIZE rotations); returns the count."""
    return services.batch_dispatch(batch_id=batch_id)


def rotations_process(rotation_ids: list[int]) -> int:
    """Prepare and push a chunk of rotations over one HTTP session; returns how many pushed."""
    session = vercel.default_session()
    deadline = time.monotonic() + services.chunk_budget()
    pushed = 0
    for index, rotation_id in enumerate(rotation_ids):
        if time.monotonic() > deadline:
            rest = list(rotation_ids[index:])
            logger.info("chunk out of time; %s rotations handed to a new task", len(rest))
            services.rotations_enqueue(rotation_ids=rest, group="continued")
            break
        try:
            state = services.rotation_prepare(rotation_id=rotation_id)
            if state in (Rotation.State.PREPARING, Rotation.State.PUSHING):
                state = services.rotation_push(
                    rotation_id=rotation_id, session=session, deadline=deadline
                )
            pushed += state == Rotation.State.AWAITING_REDEPLOY
        except Exception as exc:
            # The sweeper picks the rotation up again; the exception text may quote data.
            logger.error("rotation %s: unexpected %s", rotation_id, type(exc).__name__)
    return pushed


def rotations_sweep() -> int:
    """The periodic sweeper: re-queue lost or due rotations; returns how many."""
    return len(services.rotations_requeue_stuck())
