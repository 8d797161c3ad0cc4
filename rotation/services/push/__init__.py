"""Push: send each pending version to Vercel, a chunk of rotations at a time.

Database work is done per chunk (one transaction to claim, unless prepare's record claimed
the rotations, and one per group of successful pushes) because per-rotation transactions
cost more than the HTTP call itself. Audit events stay per rotation, so each rotation's
timeline is complete.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rotation.models import CredentialVersion, Rotation
from rotation.services.enqueue import rotations_enqueue
from rotation.services.push.claim import (
    Push,
    rotations_claim,
    rotations_claim_locked,
    rotations_release,
)
from rotation.services.push.in_flight import NOT_STARTED, InFlight, push_concurrency
from rotation.services.push.record import rotations_succeed

if TYPE_CHECKING:
    import requests

logger = logging.getLogger(__name__)

# Successful pushes are recorded in groups of this many (one transaction per group): a whole
# chunk, since every write transaction contends with the other workers and each group queues
# its own dashboard-notification task (groups of 16, recorded while waiting on Vercel, cost
# P5 a fifth or more on PostgreSQL). A worker that dies before recording a group leaves those
# rotations `pushing`; the sweeper pushes the same pending values again, which Vercel takes
# as the same update.
SUCCESS_GROUP = 50


def rotations_push(
    *,
    rotation_ids: list[int],
    session: requests.Session | None = None,
    deadline: float | None = None,
    pushed: set[int] | None = None,
) -> dict[int, str]:
    """Push each rotation's pending version to Vercel; returns the states afterwards.

    Re-checks state first, so a cancelled, failed or superseded rotation is never pushed.
    `deadline` (a `time.monotonic()` value) bounds this call: waits that would pass it are
    left to the sweeper (`next_attempt_at`), and rotations not reached are re-queued.
    `pushed`, when given, receives the ids this call pushed: the states also show rotations
    another worker pushed meanwhile.
    """
    pushing = Pushing(session=session, deadline=deadline, pushed=pushed)
    pushing.claim(rotation_ids)
    return pushing.finish()


class Pushing:
    """One call's pushes: claimed (`claim`, or `claim_prepared` in prepare's record transaction;
    once per id), sent as they are claimed, and their successes recorded in groups of up to
    SUCCESS_GROUP."""

    def __init__(
        self,
        *,
        session: requests.Session | None,
        deadline: float | None,
        pushed: set[int] | None,
    ) -> None:
        self.states: dict[int, str] = {}
        self.claimed: set[int] = set()  # the ids claimed (pushed or not)
        self._flight = InFlight(session=session, deadline=deadline)
        self._held: list[Push] = []  # claimed in a transaction not yet committed
        self._pushed = pushed
        self._succeeded: list[Push] = []
        self._unsent: list[Push] = []
        self._failure: BaseException | None = None

    def claim(self, rotation_ids: list[int]) -> None:
        """Claim the pushable rotations among `rotation_ids` and start sending them."""
        pushes, states = rotations_claim(rotation_ids)
        self.claimed.update(rotation_ids)
        self.states.update(states)
        self._flight.add(pushes)

    def claim_prepared(self, prepared: list[tuple[Rotation, CredentialVersion]]) -> dict[int, str]:
        """Claim rotations with the pending versions just stored, inside the caller's (record)
        transaction, which holds their row locks; sent once it commits (`recorded`)."""
        states: dict[int, str] = {}
        self._held += rotations_claim_locked(list(prepared), states)
        self.claimed.update(rotation.pk for rotation, _ in prepared)
        self.states.update(states)
        return states

    def recorded(self) -> None:
        """Send what `claim_prepared` claimed, now committed: threads take it, else this thread
        pushes it before the caller goes on."""
        self._flight.add(self._held)
        self._held = []
        if self._flight.threads:
            self.collect()
        else:
            self._send()

    def collect(self) -> None:
        """Note the answers already in, without waiting."""
        while (done := self._flight.ready()) is not None:
            self._note(*done)

    def finish(self) -> dict[int, str]:
        """Wait for every push; record, hand unsent ones to a new task; the states after."""
        self._send()
        self._record()
        if self._unsent:
            rest = rotations_release(self._unsent)
            logger.info("out of time; %s rotations handed to a new task", len(rest))
            rotations_enqueue(rotation_ids=rest, group="continued")
        if self._failure is not None:
            raise self._failure
        return self.states

    def _send(self) -> None:
        while self._flight.outstanding:
            self._note(*self._flight.take())

    def _note(self, push: Push, outcome: str | BaseException | None) -> None:
        if isinstance(outcome, BaseException):
            # Left `pushing`: the sweeper re-queues it once the task's time is up.
            logger.error("push of rotation %s raised %s", push.rotation.pk, type(outcome).__name__)
            self._failure = self._failure or outcome
        elif outcome is NOT_STARTED:
            self._unsent.append(push)
        elif outcome is None:
            self._succeeded.append(push)
        else:
            self.states[push.rotation.pk] = outcome
        if len(self._succeeded) >= SUCCESS_GROUP:
            self._record()

    def _record(self) -> None:
        """Record the successes not yet recorded."""
        if self._succeeded:
            self.states.update(rotations_succeed(self._succeeded, self._pushed))
            self._succeeded = []


def rotation_push(
    *,
    rotation_id: int,
    session: requests.Session | None = None,
    deadline: float | None = None,
) -> str:
    """`rotations_push` for one rotation; returns its state afterwards."""
    states = rotations_push(rotation_ids=[rotation_id], session=session, deadline=deadline)
    if rotation_id not in states:
        raise Rotation.DoesNotExist(f"rotation {rotation_id} does not exist")
    return states[rotation_id]


__all__ = ["Pushing", "push_concurrency", "rotation_push", "rotations_push"]
