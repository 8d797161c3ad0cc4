"""Staff interventions: cancel and retry, one rotation or a whole batch."""

from __future__ import annotations

import uuid

from django.db import transaction
from django.utils import timezone

from rotation.audit import (
    AuditAction,
    MaybeActor,
    Origin,
    actor_may,
    audit_context,
    audit_record,
    refuse,
)
from rotation.models import CredentialVersion, Rotation, RotationBatch
from rotation.providers.retirement import (
    versions_mark_retiring,
    versions_retire_queue_after_commit,
)
from rotation.redeploy.notification import notifications_after_commit
from rotation.selectors import IN_CHUNK, chunked
from rotation.services.enqueue import rotations_enqueue_after_commit
from rotation.services.locks import rotation_lock

State = Rotation.State
Stage = CredentialVersion.Stage

CANCELLABLE_STATES = (State.REQUESTED, State.PREPARING, State.FAILED)


def rotation_cancel(
    *, rotation: Rotation, actor: MaybeActor, origin: Origin | None = None
) -> Rotation:
    """Cancel before the push starts or after a failure; the pending version is expired
    at the provider after the commit."""
    if not actor_may(actor, "rotation.cancel_rotation"):
        refuse(
            message="You do not have permission to cancel rotations.",
            action=AuditAction.ROTATION_CANCELLED,
            actor=actor,
            origin=origin,
            rotation=rotation,
            resource=rotation.resource,
        )
    refusal = ""
    with transaction.atomic():
        current = rotation_lock(rotation.pk)
        if current.state in CANCELLABLE_STATES:
            from_state = current.state
            retiring = _cancel_locked(current)
        else:
            label = State(current.state).label.lower()
            refusal = (
                f"Rotation #{current.pk} is {label}; only requested, preparing or failed "
                "rotations can be cancelled."
            )
        if not refusal:
            audit_record(
                action=AuditAction.ROTATION_CANCELLED,
                actor=actor,
                origin=origin,
                resource=current.resource,
                rotation=current,
                details={"from_state": from_state, "retiring_versions": retiring},
                **audit_context(current),
            )
    if refusal:
        refuse(
            action=AuditAction.ROTATION_CANCELLED,
            message=refusal,
            outcome="failure",
            actor=actor,
            origin=origin,
            resource=current.resource,
            rotation=current,
            details={"state": current.state},
            **audit_context(current),
        )
    return current


def _cancel_locked(rotation: Rotation) -> list[str]:
    """Cancel a locked rotation; its pending version retires after the commit."""
    pending = CredentialVersion.objects.filter(rotation=rotation, stage=Stage.PENDING).first()
    retiring = versions_mark_retiring(
        by_rotation={rotation.pk: pending} if pending else {}, why="rotation cancelled"
    )
    versions_retire_queue_after_commit(retiring)
    rotation.state = State.CANCELLED
    rotation.state_changed_at = timezone.now()
    rotation.next_attempt_at = None
    rotation.save(update_fields=["state", "state_changed_at", "next_attempt_at"])
    notifications_after_commit([rotation.pk], wanted="clear")
    return [str(pk) for pk in retiring]


def rotation_retry(
    *, rotation: Rotation, actor: MaybeActor, origin: Origin | None = None
) -> Rotation:
    """Send a failed rotation round again, reusing its pending version."""
    if not actor_may(actor, "rotation.retry_rotation"):
        refuse(
            message="You do not have permission to retry rotations.",
            action=AuditAction.ROTATION_RETRIED,
            actor=actor,
            origin=origin,
            rotation=rotation,
            resource=rotation.resource,
        )
    refusal = ""
    with transaction.atomic():
        current = rotation_lock(rotation.pk)
        if current.state == State.FAILED:
            _retry_locked([current.pk])
            previous_error = current.last_error
            current.refresh_from_db()
            rotations_enqueue_after_commit([current.pk], group=f"batch-{current.batch_id}")
            audit_record(
                action=AuditAction.ROTATION_RETRIED,
                actor=actor,
                origin=origin,
                resource=current.resource,
                rotation=current,
                details={"previous_error": previous_error},
                **audit_context(current),
            )
        else:
            label = State(current.state).label.lower()
            refusal = f"Rotation #{current.pk} is {label}; only failed rotations can be retried."
    if refusal:
        refuse(
            action=AuditAction.ROTATION_RETRIED,
            message=refusal,
            outcome="failure",
            actor=actor,
            origin=origin,
            resource=current.resource,
            rotation=current,
            details={"state": current.state},
            **audit_context(current),
        )
    return current


def _retry_locked(rotation_ids: list[int]) -> None:
    """failed -> preparing (pending kept) or requested (nothing prepared yet)."""
    with_pending = set(
        CredentialVersion.objects.filter(
            rotation_id__in=rotation_ids, stage=Stage.PENDING
        ).values_list("rotation_id", flat=True)
    )
    now = timezone.now()
    reset = {
        "attempts": 0,
        "next_attempt_at": None,
        "state_changed_at": now,
        "last_error": "",
        "last_error_code": "",
        "last_error_status": None,
    }
    Rotation.objects.filter(pk__in=[pk for pk in rotation_ids if pk in with_pending]).update(
        state=State.PREPARING, **reset
    )
    Rotation.objects.filter(pk__in=[pk for pk in rotation_ids if pk not in with_pending]).update(
        state=State.REQUESTED, **reset
    )


def batch_retry_failed(
    *, batch: RotationBatch, actor: MaybeActor, origin: Origin | None = None
) -> int:
    """Retry every failed rotation of the batch; returns how many."""
    if not actor_may(actor, "rotation.retry_rotation"):
        refuse(
            message="You do not have permission to retry rotations.",
            action=AuditAction.BATCH_RETRIED,
            actor=actor,
            origin=origin,
            batch=batch,
        )
    with transaction.atomic():
        ids = list(
            Rotation.objects.select_for_update()
            .filter(batch=batch, state=State.FAILED)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        for chunk in chunked(ids, IN_CHUNK):
            _retry_locked(chunk)
        audit_record(
            action=AuditAction.BATCH_RETRIED,
            actor=actor,
            origin=origin,
            batch=batch,
            reason=batch.reason,
            ticket=batch.ticket,
            details={"rotations": ids},
        )
        rotations_enqueue_after_commit(ids, group=f"batch-{batch.pk}")
    return len(ids)


def batch_cancel(*, batch: RotationBatch, actor: MaybeActor, origin: Origin | None = None) -> int:
    """Cancel every rotation of the batch that has not started pushing; returns how many."""
    if not actor_may(actor, "rotation.cancel_rotation"):
        refuse(
            message="You do not have permission to cancel rotations.",
            action=AuditAction.BATCH_CANCELLED,
            actor=actor,
            origin=origin,
            batch=batch,
        )
    with transaction.atomic():
        ids = list(
            Rotation.objects.select_for_update()
            .filter(batch=batch, state__in=CANCELLABLE_STATES)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        now = timezone.now()
        retiring: list[uuid.UUID] = []
        for chunk in chunked(ids, IN_CHUNK):
            pendings = CredentialVersion.objects.filter(rotation_id__in=chunk, stage=Stage.PENDING)
            retiring += versions_mark_retiring(
                by_rotation={
                    version.rotation_id: version for version in pendings if version.rotation_id
                },
                why="rotation cancelled",
            )
            Rotation.objects.filter(pk__in=chunk).update(
                state=State.CANCELLED, state_changed_at=now, next_attempt_at=None
            )
        audit_record(
            action=AuditAction.BATCH_CANCELLED,
            actor=actor,
            origin=origin,
            batch=batch,
            reason=batch.reason,
            ticket=batch.ticket,
            details={"rotations": ids, "retiring_versions": len(retiring)},
        )
        versions_retire_queue_after_commit(retiring)
    return len(ids)
