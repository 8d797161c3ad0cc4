"""Staff interventions: cancel and retry, one rotation or a whole batch."""

from __future__ import annotations

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
from rotation.providers import CredentialProvider, get_provider
from rotation.providers.retirement import version_expire
from rotation.selectors import IN_CHUNK, chunked
from rotation.services.enqueue import rotations_enqueue_after_commit
from rotation.services.locks import rotation_lock

State = Rotation.State
Stage = CredentialVersion.Stage

CANCELLABLE_STATES = (State.REQUESTED, State.PREPARING, State.FAILED)


def rotation_cancel(
    *, rotation: Rotation, actor: MaybeActor, origin: Origin | None = None
) -> Rotation:
    """Cancel before the push starts or after a failure; the pending version is expired."""
    if not actor_may(actor, "rotation.cancel_rotation"):
        refuse(
            message="You do not have permission to cancel rotations.",
            action=AuditAction.ROTATION_CANCELLED,
            actor=actor,
            origin=origin,
            rotation=rotation,
            resource=rotation.resource,
        )
    provider = get_provider()
    refusal = ""
    with transaction.atomic():
        current = rotation_lock(rotation.pk)
        if current.state in CANCELLABLE_STATES:
            from_state = current.state
            _cancel_locked(current, provider=provider)
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
                details={"from_state": from_state},
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


def _cancel_locked(rotation: Rotation, *, provider: CredentialProvider) -> None:
    pending = CredentialVersion.objects.filter(rotation=rotation, stage=Stage.PENDING).first()
    if pending is not None:
        version_expire(
            provider=provider,
            resource=rotation.resource,
            version=pending,
            rotation=rotation,
            why="rotation cancelled",
        )
    rotation.state = State.CANCELLED
    rotation.state_changed_at = timezone.now()
    rotation.next_attempt_at = None
    rotation.save(update_fields=["state", "state_changed_at", "next_attempt_at"])


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
    provider = get_provider()
    with transaction.atomic():
        ids = list(
            Rotation.objects.select_for_update()
            .filter(batch=batch, state__in=CANCELLABLE_STATES)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        now = timezone.now()
        for chunk in chunked(ids, IN_CHUNK):
            pendings = CredentialVersion.objects.select_related("resource").filter(
                rotation_id__in=chunk, stage=Stage.PENDING
            )
            for version in pendings:
                provider.expire(resource=version.resource, version=version)
            CredentialVersion.objects.filter(rotation_id__in=chunk, stage=Stage.PENDING).update(
                stage=Stage.EXPIRED,
                stage_changed_at=now,
                expired_at=now,
                secrets_encrypted=b"",
                key_id="",
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
            details={"rotations": ids},
        )
    return len(ids)
