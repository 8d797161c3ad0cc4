"""A chunk task's work: prepare a chunk of rotations and push it, as a stream when Vercel is
slow.

When threads are worth having (`push_concurrency`: Vercel's latency, here ~100 ms), pushes
start on the first recorded group of prepared rotations while the rest is prepared, and
successes are recorded while the threads wait on Vercel. At a local pace (pushed one at a
time, here) the chunk is prepared, then pushed, in as few transactions as that takes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rotation.services.prepare import rotations_prepare
from rotation.services.push import Pushing, push_concurrency, rotations_push

if TYPE_CHECKING:
    import requests


def rotations_prepare_and_push(
    *,
    rotation_ids: list[int],
    session: requests.Session | None = None,
    deadline: float | None = None,
    pushed: set[int] | None = None,
) -> dict[int, str]:
    """`rotations_prepare`, then `rotations_push` of the chunk; returns the push's states."""
    threads = push_concurrency(len(rotation_ids))
    if not threads:
        rotations_prepare(rotation_ids=rotation_ids, deadline=deadline)
        return rotations_push(
            rotation_ids=rotation_ids, session=session, deadline=deadline, pushed=pushed
        )
    pushing = Pushing(session=session, deadline=deadline, pushed=pushed)
    claimed: set[int] = set()

    def recorded(states: dict[int, str]) -> None:
        # Committed: push claims each rotation of the group (the cancelled ones are skipped).
        pushing.claim(list(states))
        claimed.update(states)
        pushing.collect()

    rotations_prepare(
        rotation_ids=rotation_ids, deadline=deadline, first_group=threads, recorded=recorded
    )
    # Rotations prepare did not record (retries, pending versions made earlier, others').
    rest = [pk for pk in rotation_ids if pk not in claimed]
    if rest:
        pushing.claim(rest)
    return pushing.finish()
