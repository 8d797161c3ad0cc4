"""Push: send each pending version to Vercel, a chunk of rotations at a time.

Database work is done per chunk (one transaction to claim, one per group of successful
pushes) because per-rotation transactions cost more than the HTTP call itself. Audit events
stay per rotation, so each rotation's timeline is complete.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from rotation import vercel
from rotation.audit import AuditAction, audit_context, audit_record, audit_record_many
from rotation.crypto import CryptoError
from rotation.models import CredentialVersion, Installation, Resource, Rotation
from rotation.providers.retirement import versions_mark_retiring, versions_retire_after_commit
from rotation.redeploy.begin import rotations_redeploy_begin
from rotation.redeploy.notification import (
    SET,
    notification_fields,
    notifications_set_after_commit,
)
from rotation.services.backoff import resource_secrets_put
from rotation.services.enqueue import rotations_enqueue
from rotation.services.locks import rotation_lock, rotations_lock
from rotation.services.pace import PACER
from rotation.services.timing import stuck_after
from rotation.vercel.endpoints import endpoint_in_effect

if TYPE_CHECKING:
    import requests

logger = logging.getLogger(__name__)
State = Rotation.State
Stage = CredentialVersion.Stage

# Successful pushes are recorded in groups of this many (one transaction per group): a whole
# chunk, since every write transaction contends with the other workers. A worker that dies
# before recording a group leaves those rotations `pushing`; the sweeper pushes the same
# pending values again, which Vercel takes as the same update.
SUCCESS_GROUP = 50
# With threads sending, successes are also recorded while waiting on Vercel's answers, at least
# this many at a time (for the same reason).
WAITING_GROUP = 16


@dataclass
class _Push:
    """One claimed push; its methods are its side of `resource_secrets_put`."""

    rotation: Rotation  # as locked when claimed, with resource, installation and batch
    pending: CredentialVersion

    @property
    def attempts(self) -> int:
        return self.rotation.attempts

    def fail(self, *, status: int | None, code: str, message: str) -> str:
        with transaction.atomic():
            rotation = rotation_lock(self.rotation.pk)
            if rotation.state != State.PUSHING:
                return rotation.state
            return _fail_rotation_lock(rotation, status=status, code=code, message=message)

    def note_transient(self, exc: vercel.VercelError, *, wait: float, defer: bool) -> bool:
        """Record a transient failure; when deferring, free the worker until `next_attempt_at`."""
        with transaction.atomic():
            rotation = rotation_lock(self.rotation.pk)
            if rotation.state != State.PUSHING:
                return False
            rotation.last_error = exc.message[:1000]
            rotation.last_error_code = exc.code[:64]
            rotation.last_error_status = exc.status
            fields = ["last_error", "last_error_code", "last_error_status"]
            if defer:
                now = timezone.now()
                rotation.next_attempt_at = now + timedelta(seconds=wait)
                rotation.state_changed_at = now
                fields += ["next_attempt_at", "state_changed_at"]
            rotation.save(update_fields=fields)
            audit_record(
                action=AuditAction.ROTATION_PUSH_DEFERRED,
                outcome="failure",
                resource=rotation.resource,
                rotation=rotation,
                details={
                    "status": exc.status,
                    "code": exc.code,
                    "error": rotation.last_error,
                    "attempt": rotation.attempts,
                    "wait_seconds": round(wait, 3),
                    "in_worker": not defer,
                },
                **audit_context(rotation),
            )
            return True

    def attempt_again(self) -> bool:
        """Start the next inline attempt, unless the rotation changed meanwhile."""
        with transaction.atomic():
            rotation = rotation_lock(self.rotation.pk)
            if rotation.state != State.PUSHING:
                return False
            rotation.attempts += 1
            rotation.state_changed_at = timezone.now()
            rotation.next_attempt_at = None
            rotation.save(update_fields=["attempts", "state_changed_at", "next_attempt_at"])
            self.rotation.attempts = rotation.attempts
            return True

    def state(self) -> str:
        return Rotation.objects.values_list("state", flat=True).get(pk=self.rotation.pk)

    def still_wanted(self) -> bool:
        return Rotation.objects.filter(pk=self.rotation.pk, state=State.PUSHING).exists()


def _claimable(rotation: Rotation, now: datetime) -> bool:
    if rotation.state == State.PREPARING:
        return True
    if rotation.state != State.PUSHING:
        return False  # cancelled, failed, superseded or already pushed: never push
    due = rotation.next_attempt_at
    if due is not None:
        return due <= now  # waiting out a transient error until then
    # Pushing with nothing due: another worker is on it, unless it died long ago.
    return rotation.state_changed_at <= now - stuck_after()


def _claim(rotation_ids: list[int]) -> tuple[list[_Push], dict[int, str]]:
    """Mark the pushable rotations `pushing` (one attempt each) in one transaction."""
    with transaction.atomic():
        rotations = rotations_lock(rotation_ids)
        states = {rotation.pk: rotation.state for rotation in rotations}
        now = timezone.now()
        claimable = [rotation for rotation in rotations if _claimable(rotation, now)]
        stopped = [r for r in rotations if r.state in (State.CANCELLED, State.ROLLED_BACK)]
        if stopped:
            # Evidence that a stopped rotation met its (stale) push task and was not pushed.
            audit_record(
                action=AuditAction.ROTATION_PUSH_SKIPPED,
                batch=stopped[0].batch_id,
                details={
                    "rotations": [r.pk for r in stopped],
                    "states": [r.state for r in stopped],
                },
            )
        pendings = {
            version.rotation_id: version
            for version in CredentialVersion.objects.filter(
                rotation_id__in=[rotation.pk for rotation in claimable], stage=Stage.PENDING
            )
        }
        pushes = _claim_locked([(r, pendings.get(r.pk)) for r in claimable], states)
    return pushes, states


def _claim_locked(
    ready: list[tuple[Rotation, CredentialVersion | None]], states: dict[int, str]
) -> list[_Push]:
    """Mark locked rotations `pushing` (one attempt each) with their pending versions, or
    failed when they cannot be pushed; `states` receives their states."""
    now = timezone.now()
    pushes = []
    for rotation, pending in ready:
        installation, resource = rotation.resource.installation, rotation.resource
        gone = ""
        if installation.status == Installation.Status.REMOVED:
            gone = f"Installation {installation.vercel_id} was removed on Vercel."
        elif resource.status == Resource.Status.REMOVED:
            gone = "The resource was removed."
        elif pending is None:
            if rotation.state == State.PREPARING:
                continue  # still being made by another worker; the sweeper watches it
            gone = "The pending credentials are missing; request a new rotation."
        if gone or pending is None:
            rotation.attempts += 1
            states[rotation.pk] = _fail_rotation_lock(
                rotation, status=None, code="not_pushable", message=gone
            )
            continue
        rotation.state = State.PUSHING
        rotation.state_changed_at = now
        rotation.next_attempt_at = None
        rotation.attempts += 1
        states[rotation.pk] = State.PUSHING
        pushes.append(_Push(rotation, pending))
    Rotation.objects.filter(pk__in=[push.rotation.pk for push in pushes]).update(
        state=State.PUSHING,
        state_changed_at=now,
        next_attempt_at=None,
        attempts=F("attempts") + 1,
    )
    return pushes


def _release(pushes: list[_Push]) -> list[int]:
    """Hand claimed but unsent rotations back: due now, for the next task to claim."""
    ids = [push.rotation.pk for push in pushes]
    now = timezone.now()
    # state_changed_at == next_attempt_at: the sweeper leaves them to the continuation task.
    Rotation.objects.filter(pk__in=ids, state=State.PUSHING).update(
        next_attempt_at=now, state_changed_at=now, attempts=F("attempts") - 1
    )
    return ids


def _fail_rotation_lock(rotation: Rotation, *, status: int | None, code: str, message: str) -> str:
    rotation.state = State.FAILED
    rotation.last_error = message[:1000]
    rotation.last_error_code = code[:64]
    rotation.last_error_status = status
    rotation.next_attempt_at = None
    rotation.state_changed_at = timezone.now()
    rotation.save()
    audit_record(
        action=AuditAction.ROTATION_PUSH_FAILED,
        outcome="failure",
        resource=rotation.resource,
        rotation=rotation,
        details={
            "status": status,
            "code": code,
            "error": rotation.last_error,
            "attempts": rotation.attempts,
        },
        **audit_context(rotation),
    )
    return State.FAILED


def _succeed(pushes: list[_Push], pushed: set[int] | None = None) -> dict[int, str]:
    """pending -> current, current -> previous, for a group; then redeploy tracking begins.
    The ids it finalized are added to `pushed` once committed."""
    with transaction.atomic():
        rotations = {
            rotation.pk: rotation for rotation in rotations_lock([p.rotation.pk for p in pushes])
        }
        states = {pk: rotation.state for pk, rotation in rotations.items()}
        live = [p for p in pushes if states.get(p.rotation.pk) == State.PUSHING]
        stages: dict[int, dict[str, CredentialVersion]] = defaultdict(dict)
        for version in CredentialVersion.objects.select_for_update().filter(
            resource_id__in=[p.rotation.resource_id for p in live],
            stage__in=[Stage.PENDING, Stage.CURRENT, Stage.PREVIOUS],
        ):
            stages[version.resource_id][version.stage] = version
        done: list[tuple[Rotation, CredentialVersion, CredentialVersion | None]] = []
        superseded: dict[int, CredentialVersion] = {}
        for push in live:
            rotation = rotations[push.rotation.pk]
            held = stages[rotation.resource_id]
            pending = held.get(Stage.PENDING)
            if pending is None or pending.pk != push.pending.pk:
                states[rotation.pk] = _fail_rotation_lock(
                    rotation,
                    status=None,
                    code="pending_changed",
                    message="The pending credentials changed during the push; retry.",
                )
                continue
            previous = held.get(Stage.PREVIOUS)
            if previous is not None:
                # Two generations old: nothing may use it once the new set is live.
                superseded[rotation.pk] = previous
            done.append((rotation, pending, held.get(Stage.CURRENT)))
        # First out of `previous`, so the current version may take its place; expired at the
        # provider after the commit.
        versions_retire_after_commit(
            versions_mark_retiring(by_rotation=superseded, why="superseded twice")
        )
        now = timezone.now()
        CredentialVersion.objects.filter(
            pk__in=[current.pk for _, _, current in done if current is not None]
        ).update(stage=Stage.PREVIOUS, stage_changed_at=now)
        CredentialVersion.objects.filter(pk__in=[pending.pk for _, pending, _ in done]).update(
            stage=Stage.CURRENT, stage_changed_at=now
        )
        cleared = {"last_error": "", "last_error_code": "", "last_error_status": None}
        # The dashboard notification is asked for in the same statement (its tasks are queued
        # after the commit).
        Rotation.objects.filter(pk__in=[rotation.pk for rotation, _, _ in done]).update(
            state=State.AWAITING_REDEPLOY,
            pushed_at=now,
            state_changed_at=now,
            next_attempt_at=None,
            **cleared,
            **notification_fields(SET),
        )
        entries: list[dict[str, Any]] = []
        for rotation, pending, current in done:
            rotation.state = State.AWAITING_REDEPLOY
            rotation.pushed_at = rotation.state_changed_at = now
            rotation.next_attempt_at = None
            for name, value in cleared.items():
                setattr(rotation, name, value)
            entries.append(
                {
                    "action": AuditAction.ROTATION_PUSHED,
                    "resource": rotation.resource,
                    "rotation": rotation,
                    "details": {
                        "version": str(pending.pk),
                        "previous_version": str(current.pk) if current else None,
                        "retiring_version": (
                            str(superseded[rotation.pk].pk) if rotation.pk in superseded else None
                        ),
                        "attempts": rotation.attempts,
                        "endpoint": endpoint_in_effect(rotation.resource.installation.endpoint),
                    },
                    **audit_context(rotation),
                }
            )
            states[rotation.pk] = State.AWAITING_REDEPLOY
        # One event per pushed rotation: what redeploy tracking planned goes in its details.
        plans = rotations_redeploy_begin(rotations=[rotation for rotation, _, _ in done])
        for entry, plan in zip(entries, plans, strict=True):
            entry["details"]["redeploy"] = plan
        # Last: on PostgreSQL the audit chain's lock is held from here to the commit.
        audit_record_many(entries)
        notifications_set_after_commit([rotation.pk for rotation, _, _ in done])
    if pushed is not None:
        pushed.update(rotation.pk for rotation, _, _ in done)
    return states


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
    SUCCESS_GROUP; with threads sending, also whenever the caller's thread would otherwise
    wait for the next answer."""

    def __init__(
        self,
        *,
        session: requests.Session | None,
        deadline: float | None,
        pushed: set[int] | None,
    ) -> None:
        self.states: dict[int, str] = {}
        self.claimed: set[int] = set()  # the ids claimed (pushed or not)
        self._flight = _InFlight(session=session, deadline=deadline)
        self._held: list[_Push] = []  # claimed in a transaction not yet committed
        self._pushed = pushed
        self._succeeded: list[_Push] = []
        self._unsent: list[_Push] = []
        self._failure: BaseException | None = None

    def claim(self, rotation_ids: list[int]) -> None:
        """Claim the pushable rotations among `rotation_ids` and start sending them."""
        pushes, states = _claim(rotation_ids)
        self.claimed.update(rotation_ids)
        self.states.update(states)
        self._flight.add(pushes)

    def claim_prepared(self, prepared: list[tuple[Rotation, CredentialVersion]]) -> dict[int, str]:
        """Claim rotations with the pending versions just stored, inside the caller's (record)
        transaction, which holds their row locks; sent once it commits (`recorded`)."""
        states: dict[int, str] = {}
        self._held += _claim_locked(list(prepared), states)
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
            rest = _release(self._unsent)
            logger.info("out of time; %s rotations handed to a new task", len(rest))
            rotations_enqueue(rotation_ids=rest, group="continued")
        if self._failure is not None:
            raise self._failure
        return self.states

    def _send(self) -> None:
        while self._flight.outstanding:
            self._note(*self._flight.take(idle=self._record_while_waiting))

    def _note(self, push: _Push, outcome: str | BaseException | None) -> None:
        if isinstance(outcome, BaseException):
            # Left `pushing`: the sweeper re-queues it once the task's time is up.
            logger.error("push of rotation %s raised %s", push.rotation.pk, type(outcome).__name__)
            self._failure = self._failure or outcome
        elif outcome is _NOT_STARTED:
            self._unsent.append(push)
        elif outcome is None:
            self._succeeded.append(push)
        else:
            self.states[push.rotation.pk] = outcome
        if len(self._succeeded) >= SUCCESS_GROUP:
            self._record()

    def _record_while_waiting(self) -> bool:
        return len(self._succeeded) >= WAITING_GROUP and self._record()

    def _record(self) -> bool:
        """Record the successes not yet recorded; whether there were any."""
        if not self._succeeded:
            return False
        self.states.update(_succeed(self._succeeded, self._pushed))
        self._succeeded = []
        return True


# What `_push_one` returns for a push it did not start (the task ran out of time).
_NOT_STARTED = "not started"


def _push_one(
    push: _Push,
    *,
    tokens: dict[int, str],
    session: requests.Session | None,
    deadline: float | None,
) -> str | None:
    """One rotation's PUT with its retries: None when Vercel took it, else the state."""
    if deadline is not None and time.monotonic() > deadline:
        return _NOT_STARTED
    installation = push.rotation.resource.installation
    try:
        secrets = push.pending.secrets()
        if installation.pk not in tokens:
            tokens[installation.pk] = installation.access_token()
    except CryptoError as exc:
        return push.fail(status=None, code="decrypt_failed", message=str(exc))
    try:
        return resource_secrets_put(
            push,
            resource=push.rotation.resource,
            token=tokens[installation.pk],
            secrets=secrets,
            session=session,
            deadline=deadline,
        )
    finally:
        del secrets


def push_concurrency(count: int) -> int:
    """Threads pushing a chunk of `count`; 0 means in this thread.

    As many as Vercel's latency makes worth having (`Pacer.threads`), up to
    `ROTATION_PUSH_CONCURRENCY`. Threads use their own database connections, which cannot see
    rows of a transaction the caller left open, nor share an in-memory SQLite database safely:
    both push in this thread.
    """
    threads = min(PACER.threads(settings.ROTATION_PUSH_CONCURRENCY), count)
    if threads <= 1 or connection.in_atomic_block:
        return 0
    if connection.vendor == "sqlite" and connection.is_in_memory_db():  # type: ignore[attr-defined]
        return 0
    return threads


class _InFlight:
    """Pushes of a chunk with up to `ROTATION_PUSH_CONCURRENCY` PUTs in flight (each
    installation capped by its pace, `rotation.services.pace`).

    The threads worth having are counted again as PUTs complete (`push_concurrency`), and
    started when the count rises: a chunk that began pushing here, one PUT at a time, takes on
    threads as soon as Vercel turns out slow. No thread is ever stopped early: one finds no
    push waiting, and ends.
    """

    def __init__(self, *, session: requests.Session | None, deadline: float | None) -> None:
        self._session, self._deadline = session, deadline
        self._tokens: dict[int, str] = {}
        self._lock = threading.Lock()
        self._waiting: deque[_Push] = deque()
        self._threads = 0  # running; changed under the lock, with `_waiting`
        self._done: queue.SimpleQueue[tuple[_Push, str | BaseException | None]] = (
            queue.SimpleQueue()
        )
        self.outstanding = 0  # handed in, their outcomes not yet taken

    def add(self, pushes: list[_Push]) -> None:
        with self._lock:
            self._waiting.extend(pushes)
        self.outstanding += len(pushes)
        self._grow()

    @property
    def threads(self) -> int:
        """Threads running."""
        with self._lock:
            return self._threads

    def ready(self) -> tuple[_Push, str | BaseException | None] | None:
        """The next outcome if one is in (see `take`), else None."""
        try:
            done = self._done.get_nowait()
        except queue.Empty:
            return None
        self._taken()
        return done

    def take(self, *, idle: Callable[[], bool]) -> tuple[_Push, str | BaseException | None]:
        """The next outcome: an exception raised by the push, `_NOT_STARTED`, None when Vercel
        took it, else the state. Pushes here when no thread is running; calls `idle` (until it
        returns False) rather than wait for the threads' next answer."""
        while True:
            try:
                done = self._done.get_nowait()
                break
            except queue.Empty:
                pass
            with self._lock:
                push = self._waiting.popleft() if self._waiting and not self._threads else None
            if push is not None:
                done = (push, self._push(push))
                break
            if not idle():
                done = self._done.get()
                break
        self._taken()
        return done

    def _taken(self) -> None:
        self.outstanding -= 1
        self._grow()

    def _grow(self) -> None:
        wanted = push_concurrency(self.outstanding)
        with self._lock:
            start = max(0, min(wanted - self._threads, len(self._waiting)))
            self._threads += start
        for _ in range(start):
            threading.Thread(target=self._work, name="push", daemon=True).start()

    def _work(self) -> None:
        try:
            while True:
                with self._lock:
                    if not self._waiting:
                        self._threads -= 1
                        return
                    push = self._waiting.popleft()
                self._done.put((push, self._push(push)))
        finally:
            connection.close()  # this thread's own connection

    def _push(self, push: _Push) -> str | BaseException | None:
        try:
            return _push_one(
                push, tokens=self._tokens, session=self._session, deadline=self._deadline
            )
        except Exception as exc:  # handed to the caller, raised once the rest is recorded
            return exc


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
