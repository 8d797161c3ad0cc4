"""A chunk task's work: prepare a chunk of rotations and push it, as a stream.

Prepare's record transaction claims the rotations it stored for push (no second locked read
of the chunk), and they are sent once it commits. When threads are worth having
(`push_concurrency`: Vercel's latency, ~100 ms) the first recorded group is small, so PUTs
start while the rest is prepared. Pushed one at a time (a local pace, ~0 ms), a fast
provider's chunk is one group: one record-and-claim transaction, the PUTs, one record of the
successes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rotation.services.prepare import RECORD_GROUP, rotations_prepare
from rotation.services.push import Pushing, push_concurrency

if TYPE_CHECKING:
    import requests


def rotations_prepare_and_push(
    *,
    rotation_ids: list[int],
    session: requests.Session | None = None,
    deadline: float | None = None,
    pushed: set[int] | None = None,
) -> dict[int, str]:
    """`rotations_prepare`, then `rotations_push` of the chunk, streamed; the push's states."""
    pushing = Pushing(session=session, deadline=deadline, pushed=pushed)
    rotations_prepare(
        rotation_ids=rotation_ids,
        deadline=deadline,
        first_group=push_concurrency(len(rotation_ids)) or RECORD_GROUP,
        handoff=pushing,
    )
    # What prepare did not store (retries, pending versions made earlier, cancelled, failed):
    # push's own claim, which skips or re-checks each.
    rest = [pk for pk in rotation_ids if pk not in pushing.claimed]
    if rest:
        pushing.claim(rest)
    return pushing.finish()
