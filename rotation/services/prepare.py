"""Prepare: the credential provider makes new credentials, sealed as the pending version.

Three steps per chunk of rotations, so no provider call happens under a row lock:

1. claim (one short transaction): lock the chunk, decide which rotations need credentials,
   mark them `preparing` with a lease (`next_attempt_at`) so a second copy of the task does
   not call the provider for them too, and retire pending versions that other (ended)
   rotations left behind;
2. call the provider for each claimed rotation, outside any transaction, sealing at once;
3. record (a short transaction for what the provider made within RECORD_SECONDS, at most
   RECORD_GROUP rotations, so a worker that dies leaves few made credentials unrecorded, and
   a fast provider's chunk costs one transaction, not one per few rotations): each rotation
   still `preparing` and still without a pending version gets the new one; credentials
   nobody can use any more (the rotation was cancelled, or another worker stored its own
   first) are retired, never left valid.

A chunk stops calling the provider at its deadline, records what it made, and hands the
rest to a new task, so a slow provider never makes a task run into its timeout. Audit events
stay per rotation; the database work is a fixed number of queries per group.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

from django.db import transaction
from django.utils import timezone

from rotation.audit import AuditAction, audit_context, audit_record, audit_record_many
from rotation.models import CredentialVersion, Rotation
from rotation.providers import CredentialProvider, CredentialProviderError, get_provider
from rotation.providers.retirement import versions_mark_retiring, versions_retire_after_commit
from rotation.redaction import redact
from rotation.services.enqueue import rotations_enqueue
from rotation.services.locks import rotations_lock
from rotation.services.timing import stuck_after

logger = logging.getLogger(__name__)
State = Rotation.State
# Made credentials are recorded at least this often, and at most this many at a time: fewer
# transactions than one per rotation (every write transaction waits for the other workers'),
# few unrecorded credentials if the worker dies while a slow provider works.
RECORD_SECONDS = 0.25
RECORD_GROUP = 50
Stage = CredentialVersion.Stage


@dataclass
class _Made:
    """The provider's answer for one claimed rotation: a sealed version, or the error."""

    rotation: Rotation
    version: CredentialVersion | None = None
    error: Exception | None = None


def batch_dispatch(*, batch_id: int) -> int:
    """Enqueue the batch's waiting rotations in chunks (the fan-out task); returns the count."""
    ids = list(
        Rotation.objects.filter(batch_id=batch_id, state__in=[State.REQUESTED, State.PREPARING])
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    rotations_enqueue(rotation_ids=ids, group=f"batch-{batch_id}")
    return len(ids)


class Handoff(Protocol):
    """Where recorded credentials go next: the chunk's push (`rotation.services.chunk`)."""

    def claim_prepared(self, prepared: list[tuple[Rotation, CredentialVersion]]) -> dict[int, str]:
        """Inside the record transaction (the rotations locked): take them, ending their
        prepare lease (`next_attempt_at`); their states."""
        ...

    def recorded(self) -> None:
        """Once that transaction committed."""
        ...


def rotations_prepare(
    *,
    rotation_ids: list[int],
    deadline: float | None = None,
    first_group: int = RECORD_GROUP,
    handoff: Handoff | None = None,
) -> dict[int, str]:
    """Seal a pending version for each rotation that lacks one (idempotent); returns states.

    `preparing` means "ready to push" once the pending version exists; other states are left
    as they are. `deadline` (a `time.monotonic()` value) stops the provider calls; rotations
    not reached are released and handed to a new task. `handoff`, when given, takes each
    recorded group in its record transaction, so push needs no claim of its own; the first
    group has at most `first_group` rotations (so pushes can start early), the others at most
    RECORD_GROUP.
    """
    claimed, states = _claim(rotation_ids)
    if not claimed:
        return states
    providers: dict[str, CredentialProvider] = {}
    made: list[_Made] = []
    first_made = 0.0
    group = min(first_group, RECORD_GROUP)

    def record(made: list[_Made]) -> None:
        states.update(_record(made, handoff))
        if handoff is not None:
            handoff.recorded()

    for index, rotation in enumerate(claimed):
        if deadline is not None and time.monotonic() > deadline:
            _release(claimed[index:])
            break
        product = rotation.resource.product
        try:
            provider = providers.get(product) or providers.setdefault(
                product, get_provider(product)
            )
        except ImportError as exc:  # a misconfigured provider fails the rotation, visibly
            made.append(_Made(rotation, error=exc))
        else:
            made.append(_make(provider, rotation))
        if len(made) == 1:
            first_made = time.monotonic()
        if len(made) >= group or time.monotonic() - first_made >= RECORD_SECONDS:
            record(made)
            made = []
            group = RECORD_GROUP
    if made:
        record(made)
    return states


def _release(rotations: list[Rotation]) -> None:
    """Free the provider lease of rotations not reached, and queue them again."""
    ids = [rotation.pk for rotation in rotations]
    Rotation.objects.filter(pk__in=ids, state=State.PREPARING).update(next_attempt_at=None)
    logger.info("prepare out of time; %s rotations handed to a new task", len(ids))
    rotations_enqueue(rotation_ids=ids, group="continued")


def _claim(rotation_ids: list[int]) -> tuple[list[Rotation], dict[int, str]]:
    """Lock the chunk; lease the rotations that need credentials; retire stale pendings."""
    with transaction.atomic():
        rotations = rotations_lock(rotation_ids)
        states = {rotation.pk: rotation.state for rotation in rotations}
        todo = [r for r in rotations if r.state in (State.REQUESTED, State.PREPARING)]
        if not todo:
            return [], states
        pendings = {
            version.resource_id: version
            for version in CredentialVersion.objects.filter(
                resource_id__in=[rotation.resource_id for rotation in todo], stage=Stage.PENDING
            )
        }
        now = timezone.now()
        stale: dict[int, CredentialVersion] = {}
        claimed: list[Rotation] = []
        for rotation in todo:
            states[rotation.pk] = State.PREPARING
            pending = pendings.get(rotation.resource_id)
            if pending is not None and pending.rotation_id != rotation.pk:
                # Left by an earlier rotation that ended without it: never reuse another's.
                stale[rotation.pk] = pending
                pending = None
            leased = (
                rotation.state == State.PREPARING
                and rotation.next_attempt_at is not None
                and rotation.next_attempt_at > now
            )
            if pending is None and not leased:
                claimed.append(rotation)
        retiring = versions_mark_retiring(by_rotation=stale, why="stale pending version")
        versions_retire_after_commit(retiring)
        claimed_ids = {rotation.pk for rotation in claimed}
        # Longer than a task may live: a lease past it belongs to a dead worker (the sweeper).
        Rotation.objects.filter(pk__in=claimed_ids).update(
            state=State.PREPARING, state_changed_at=now, next_attempt_at=now + stuck_after()
        )
        Rotation.objects.filter(
            pk__in=[r.pk for r in todo if r.state == State.REQUESTED and r.pk not in claimed_ids]
        ).update(state=State.PREPARING, state_changed_at=now)
    return claimed, states


def _make(provider: CredentialProvider, rotation: Rotation) -> _Made:
    """Call the provider (outside any transaction); seal the secrets into an unsaved version."""
    resource = rotation.resource
    version = CredentialVersion(resource=resource, rotation=rotation, stage=Stage.PENDING)
    try:
        # Keyed by the rotation: a retry after a crash reuses the same login.
        secrets = provider.create(resource=resource, rotation_id=rotation.pk)
        verify = getattr(provider, "verify", None)
        if verify is not None and not verify(resource=resource, secrets=secrets):
            raise CredentialProviderError("the new credentials did not pass the check")
        version.seal(secrets)
    except Exception as exc:  # recorded as the rotation's failure
        return _Made(rotation, error=exc)
    del secrets
    return _Made(rotation, version=version)


def _record(made: list[_Made], handoff: Handoff | None = None) -> dict[int, str]:
    """Store what the provider made where it is still wanted (handed off, when given); retire
    the rest."""
    states: dict[int, str] = {}
    with transaction.atomic():
        rotations = {r.pk: r for r in rotations_lock([m.rotation.pk for m in made])}
        pending_of = dict(
            CredentialVersion.objects.filter(
                resource_id__in=[r.resource_id for r in rotations.values()], stage=Stage.PENDING
            ).values_list("resource_id", "rotation_id")
        )
        taken = set(pending_of)
        stored: list[tuple[Rotation, CredentialVersion]] = []
        unwanted: dict[int, CredentialVersion] = {}
        for item in made:
            rotation = rotations[item.rotation.pk]
            states[rotation.pk] = rotation.state
            if item.version is None:
                if rotation.state == State.PREPARING and rotation.resource_id not in taken:
                    states[rotation.pk] = _prepare_fail(rotation, item.error)
            elif pending_of.get(rotation.resource_id) == rotation.pk:
                # Another copy of this rotation stored first: the same login (create is keyed
                # by the rotation), so expiring ours would revoke the stored one. Dropped.
                logger.warning("rotation %s: credentials made twice; kept the first", rotation.pk)
            elif rotation.state != State.PREPARING or rotation.resource_id in taken:
                # Cancelled meanwhile, or another worker stored its own first: never left valid.
                item.version.stage = Stage.RETIRING
                unwanted[rotation.pk] = item.version
            else:
                taken.add(rotation.resource_id)
                stored.append((rotation, item.version))
        CredentialVersion.objects.bulk_create(
            [version for _, version in stored] + list(unwanted.values())
        )
        versions_retire_after_commit(
            versions_mark_retiring(by_rotation=unwanted, why="made but not needed")
        )
        if handoff is not None and stored:
            # Its claim ends the lease in the statement that marks them `pushing`.
            states.update(handoff.claim_prepared(stored))
        else:
            Rotation.objects.filter(pk__in=[rotation.pk for rotation, _ in stored]).update(
                next_attempt_at=None
            )
        # Last: on PostgreSQL the audit chain's lock is held from here to the commit.
        audit_record_many(
            {
                "action": AuditAction.ROTATION_PREPARED,
                "resource": rotation.resource,
                "rotation": rotation,
                "details": {"version": str(version.pk)},
                **audit_context(rotation),
            }
            for rotation, version in stored
        )
    return states


def _prepare_fail(rotation: Rotation, exc: Exception | None) -> str:
    message = redact(f"Credential provider: {exc}", limit=500)
    logger.warning("rotation %s: provider failed (%s)", rotation.pk, type(exc).__name__)
    rotation.state = State.FAILED
    rotation.last_error = message
    rotation.last_error_code = "provider_error"
    rotation.last_error_status = None
    rotation.next_attempt_at = None
    rotation.state_changed_at = timezone.now()
    rotation.save(
        update_fields=[
            "state",
            "last_error",
            "last_error_code",
            "last_error_status",
            "next_attempt_at",
            "state_changed_at",
        ]
    )
    audit_record(
        action=AuditAction.ROTATION_PREPARE_FAILED,
        outcome="failure",
        resource=rotation.resource,
        rotation=rotation,
        details={"error": message},
        **audit_context(rotation),
    )
    return State.FAILED


def rotation_prepare(*, rotation_id: int) -> str:
    """`rotations_prepare` for one rotation; returns its state afterwards."""
    states = rotations_prepare(rotation_ids=[rotation_id])
    if rotation_id not in states:
        raise Rotation.DoesNotExist(f"rotation {rotation_id} does not exist")
    return states[rotation_id]
