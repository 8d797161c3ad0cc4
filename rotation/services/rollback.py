"""Roll back: put the previous (still valid) credentials back on Vercel, in a task.

`rotation_rollback` (staff) checks permission, reason and state, records the request on the
rotation, audits it and queues a task (the rotation id only) after the commit. The rotation
stays waiting meanwhile, so the one-open-rotation constraint still covers it, and expiry
leaves the old credentials alone while `rollback_queued_at` is set.

`rotation_rollback_run` (the task) claims the request with a lease (`next_attempt_at`), PUTs
the previous secret set outside any transaction, retrying transient errors by the push's
rules, then records: previous -> current, the newer version retiring (expired at the
provider after the commit), state rolled back, reminders cancelled. A permanent failure
clears the request: the rotation keeps waiting, with the error shown and audited; Vercel is
assumed to hold the newer set still. Running the task twice changes nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from rotation import vercel
from rotation.audit import (
    AuditAction,
    MaybeActor,
    Origin,
    actor_may,
    audit_record,
    refuse,
)
from rotation.crypto import CryptoError
from rotation.models import AuditEvent, CredentialVersion, Rotation
from rotation.providers.retirement import versions_mark_retiring, versions_retire_after_commit
from rotation.redeploy.notification import notifications_after_commit
from rotation.redeploy.reminders import reminders_cancel_open
from rotation.services.backoff import resource_secrets_put
from rotation.services.locks import rotation_lock, rotations_lock
from rotation.services.timing import stuck_after

if TYPE_CHECKING:
    import requests

State = Rotation.State
Stage = CredentialVersion.Stage
ROLLBACK_TASK = "rotation.tasks_redeploy.rotation_rollback_task"


@dataclass
class _Claim:
    """One leased rollback; its methods are its side of `resource_secrets_put`."""

    rotation: Rotation  # as locked when claimed, with resource and installation
    previous: CredentialVersion
    newer: CredentialVersion | None

    @property
    def attempts(self) -> int:
        return self.rotation.rollback_attempts

    def fail(self, *, status: int | None, code: str, message: str) -> str:
        with transaction.atomic():
            rotation = rotation_lock(self.rotation.pk)
            if rotation.rollback_pending:
                _fail_locked(rotation, status=status, code=code, message=message)
            return rotation.state

    def note_transient(self, exc: vercel.VercelError, *, wait: float, defer: bool) -> bool:
        """Show and audit a transient failure; when deferring, free the worker until then."""
        with transaction.atomic():
            rotation = rotation_lock(self.rotation.pk)
            if not rotation.rollback_pending:
                return False
            rotation.last_error = f"Roll back: {exc.message}"[:1000]
            rotation.last_error_code = exc.code[:64]
            rotation.last_error_status = exc.status
            fields = ["last_error", "last_error_code", "last_error_status"]
            if defer:
                rotation.next_attempt_at = timezone.now() + timedelta(seconds=wait)
                fields.append("next_attempt_at")
            rotation.save(update_fields=fields)
            audit_record(
                action=AuditAction.ROTATION_ROLLED_BACK,
                outcome=AuditEvent.Outcome.FAILURE,
                resource=rotation.resource,
                rotation=rotation,
                reason=rotation.rollback_reason,
                details={
                    "step": "retrying",
                    "status": exc.status,
                    "code": exc.code,
                    "error": exc.message[:1000],
                    "attempt": rotation.rollback_attempts,
                    "wait_seconds": round(wait, 3),
                    "in_worker": not defer,
                },
            )
            return True

    def attempt_again(self) -> bool:
        """Start the next in-worker attempt (renewing the lease), unless the request ended."""
        with transaction.atomic():
            rotation = rotation_lock(self.rotation.pk)
            if not rotation.rollback_pending:
                return False
            rotation.rollback_attempts += 1
            rotation.next_attempt_at = timezone.now() + stuck_after()
            rotation.save(update_fields=["rollback_attempts", "next_attempt_at"])
            self.rotation.rollback_attempts = rotation.rollback_attempts
            return True

    def state(self) -> str:
        return Rotation.objects.values_list("state", flat=True).get(pk=self.rotation.pk)

    def still_wanted(self) -> bool:
        return Rotation.objects.get(pk=self.rotation.pk).rollback_pending


def rollback_enqueue(rotation_id: int) -> None:
    """Queue the task that carries out a requested rollback (the rotation id only)."""
    async_task(ROLLBACK_TASK, rotation_id, group="rollback")


def rotation_rollback(
    *, rotation: Rotation, actor: MaybeActor, reason: str, origin: Origin | None = None
) -> Rotation:
    """Request a rollback to the previous (still valid) credentials; a task carries it out."""
    reason = (reason or "").strip()
    if not actor_may(actor, "rotation.rollback_rotation"):
        refuse(
            message="You may not roll back rotations.",
            action=AuditAction.ROLLBACK_REQUESTED,
            actor=actor,
            origin=origin,
            resource=rotation.resource,
            rotation=rotation,
        )
    if not reason:
        refuse(
            message="A reason is required to roll back.",
            action=AuditAction.ROLLBACK_REQUESTED,
            outcome=AuditEvent.Outcome.FAILURE,
            actor=actor,
            origin=origin,
            resource=rotation.resource,
            rotation=rotation,
        )
    with transaction.atomic():
        current = rotation_lock(rotation.pk)
        previous = _previous(current)
        refusal = _refusal(current, previous)
        if not refusal and previous is not None:
            current.rollback_queued_at = timezone.now()
            current.rollback_reason = reason
            current.rollback_requested_by = actor.get_username() if actor is not None else ""
            current.rollback_attempts = 0
            current.next_attempt_at = None
            current.save(
                update_fields=[
                    "rollback_queued_at",
                    "rollback_reason",
                    "rollback_requested_by",
                    "rollback_attempts",
                    "next_attempt_at",
                ]
            )
            audit_record(
                action=AuditAction.ROLLBACK_REQUESTED,
                actor=actor,
                origin=origin,
                resource=current.resource,
                rotation=current,
                reason=reason,
                details={"restore_version": str(previous.pk)},
            )
            transaction.on_commit(partial(rollback_enqueue, current.pk))
    if refusal:
        refuse(
            action=AuditAction.ROLLBACK_REQUESTED,
            message=refusal,
            outcome=AuditEvent.Outcome.FAILURE,
            actor=actor,
            origin=origin,
            resource=current.resource,
            rotation=current,
            reason=reason,
            details={"state": current.state},
        )
    return current


def _previous(rotation: Rotation) -> CredentialVersion | None:
    return CredentialVersion.objects.filter(
        resource_id=rotation.resource_id, stage=Stage.PREVIOUS
    ).first()


def _refusal(rotation: Rotation, previous: CredentialVersion | None) -> str:
    if rotation.state not in Rotation.WAITING_STATES:
        return (
            f"Rotation #{rotation.pk} is {rotation.get_state_display().lower()}; only a "
            "rotation waiting for redeploys can be rolled back (the old credentials must "
            "still work)."
        )
    if rotation.rollback_pending:
        return f"A rollback of rotation #{rotation.pk} is already under way."
    if previous is None or not previous.secrets_encrypted:
        return f"Rotation #{rotation.pk} has no previous credentials to restore."
    return ""


def rotation_rollback_run(
    *,
    rotation_id: int,
    session: requests.Session | None = None,
    deadline: float | None = None,
) -> str:
    """Carry out a requested rollback (idempotent); returns the rotation's state afterwards.

    `deadline` (a `time.monotonic()` value) bounds in-worker waits; longer ones are left to
    the sweeper.
    """
    claim = _claim(rotation_id)
    if claim is None:
        return Rotation.objects.filter(pk=rotation_id).values_list("state", flat=True).first() or ""
    resource = claim.rotation.resource
    try:
        secrets = claim.previous.secrets()
        token = resource.installation.access_token()
    except CryptoError as exc:
        return claim.fail(status=None, code="decrypt_failed", message=str(exc))
    stopped = resource_secrets_put(
        claim, resource=resource, token=token, secrets=secrets, session=session, deadline=deadline
    )
    del secrets
    if stopped is not None:
        return stopped
    return _succeed(claim)


def _claim(rotation_id: int) -> _Claim | None:
    """Lease a pending rollback for one attempt; None when there is nothing to do now."""
    with transaction.atomic():
        found = rotations_lock([rotation_id])
        if not found or not found[0].rollback_pending:
            return None
        rotation = found[0]
        now = timezone.now()
        if rotation.next_attempt_at is not None and rotation.next_attempt_at > now:
            return None  # another worker holds it, or a transient error is waited out
        versions = {
            version.stage: version
            for version in CredentialVersion.objects.filter(
                resource_id=rotation.resource_id, stage__in=[Stage.PREVIOUS, Stage.CURRENT]
            )
        }
        previous = versions.get(Stage.PREVIOUS)
        if previous is None or not previous.secrets_encrypted:
            _fail_locked(
                rotation,
                status=None,
                code="nothing_to_restore",
                message="The previous credentials are gone; nothing to restore.",
            )
            return None
        rotation.rollback_attempts += 1
        # Longer than a task may live: a lease past it belongs to a dead worker (the sweeper).
        rotation.next_attempt_at = now + stuck_after()
        rotation.save(update_fields=["rollback_attempts", "next_attempt_at"])
        return _Claim(rotation, previous, versions.get(Stage.CURRENT))


def _fail_locked(rotation: Rotation, *, status: int | None, code: str, message: str) -> None:
    """The request ends; the rotation keeps waiting with the newer credentials current."""
    rotation.rollback_queued_at = None
    rotation.next_attempt_at = None
    rotation.last_error = f"Roll back failed, nothing changed: {message}"[:1000]
    rotation.last_error_code = code[:64]
    rotation.last_error_status = status
    rotation.save(
        update_fields=[
            "rollback_queued_at",
            "next_attempt_at",
            "last_error",
            "last_error_code",
            "last_error_status",
        ]
    )
    audit_record(
        action=AuditAction.ROTATION_ROLLED_BACK,
        outcome=AuditEvent.Outcome.FAILURE,
        resource=rotation.resource,
        rotation=rotation,
        reason=rotation.rollback_reason,
        details={
            "step": "failed",
            "status": status,
            "code": code,
            "error": rotation.last_error,
            "attempts": rotation.rollback_attempts,
        },
    )


def _succeed(claim: _Claim) -> str:
    """Vercel holds the previous set again: make it current and retire the newer one."""
    with transaction.atomic():
        rotation = rotation_lock(claim.rotation.pk)
        if not rotation.rollback_pending:
            return rotation.state  # another copy of the task recorded it
        wanted = [claim.previous.pk] + ([claim.newer.pk] if claim.newer else [])
        versions = {
            version.pk: version
            for version in CredentialVersion.objects.select_for_update().filter(pk__in=wanted)
        }
        previous = versions[claim.previous.pk]
        newer = versions.get(claim.newer.pk) if claim.newer else None
        if previous.stage != Stage.PREVIOUS or (newer is not None and newer.stage != Stage.CURRENT):
            _fail_locked(
                rotation,
                status=None,
                code="versions_changed",
                message="The credential versions changed during the rollback; check Vercel.",
            )
            return rotation.state
        now = timezone.now()
        # The newer set leaves `current` first, so the previous one may take its place.
        retiring = versions_mark_retiring(
            by_rotation={rotation.pk: newer} if newer else {}, why="rolled back"
        )
        previous.stage = Stage.CURRENT
        previous.stage_changed_at = now
        previous.save(update_fields=["stage", "stage_changed_at"])
        rotation.state = State.ROLLED_BACK
        rotation.state_changed_at = now
        rotation.next_attempt_at = None
        rotation.last_error = ""
        rotation.last_error_code = ""
        rotation.last_error_status = None
        rotation.save(
            update_fields=[
                "state",
                "state_changed_at",
                "next_attempt_at",
                "last_error",
                "last_error_code",
                "last_error_status",
            ]
        )
        reminders_cancel_open(rotation_ids=[rotation.pk])
        notifications_after_commit([rotation.pk], wanted="clear")
        audit_record(
            action=AuditAction.ROTATION_ROLLED_BACK,
            resource=rotation.resource,
            rotation=rotation,
            reason=rotation.rollback_reason,
            details={
                "step": "done",
                "restored_version": str(previous.pk),
                "newer_version": str(newer.pk) if newer else None,
                "requested_by": rotation.rollback_requested_by,
                "attempts": rotation.rollback_attempts,
            },
        )
        versions_retire_after_commit(retiring)
    return rotation.state
