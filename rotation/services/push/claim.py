"""Claiming rotations for push, and giving them back or failing them: short transactions
that hold the rotations' row locks and call nothing outside."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from rotation import vercel
from rotation.audit import AuditAction, audit_context, audit_record
from rotation.models import CredentialVersion, Installation, Resource, Rotation
from rotation.services.locks import rotation_lock, rotations_lock
from rotation.services.timing import stuck_after

State = Rotation.State
Stage = CredentialVersion.Stage


@dataclass
class Push:
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
            return rotation_fail_locked(rotation, status=status, code=code, message=message)

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


def rotations_claim(rotation_ids: list[int]) -> tuple[list[Push], dict[int, str]]:
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
        pushes = rotations_claim_locked([(r, pendings.get(r.pk)) for r in claimable], states)
    return pushes, states


def rotations_claim_locked(
    ready: list[tuple[Rotation, CredentialVersion | None]], states: dict[int, str]
) -> list[Push]:
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
            states[rotation.pk] = rotation_fail_locked(
                rotation, status=None, code="not_pushable", message=gone
            )
            continue
        rotation.state = State.PUSHING
        rotation.state_changed_at = now
        rotation.next_attempt_at = None
        rotation.attempts += 1
        states[rotation.pk] = State.PUSHING
        pushes.append(Push(rotation, pending))
    Rotation.objects.filter(pk__in=[push.rotation.pk for push in pushes]).update(
        state=State.PUSHING,
        state_changed_at=now,
        next_attempt_at=None,
        attempts=F("attempts") + 1,
    )
    return pushes


def rotations_release(pushes: list[Push]) -> list[int]:
    """Hand claimed but unsent rotations back: due now, for the next task to claim."""
    ids = [push.rotation.pk for push in pushes]
    now = timezone.now()
    # state_changed_at == next_attempt_at: the sweeper leaves them to the continuation task.
    Rotation.objects.filter(pk__in=ids, state=State.PUSHING).update(
        next_attempt_at=now, state_changed_at=now, attempts=F("attempts") - 1
    )
    return ids


def rotation_fail_locked(rotation: Rotation, *, status: int | None, code: str, message: str) -> str:
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
