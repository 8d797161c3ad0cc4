"""Deadline and expiry of the old credentials once every project has redeployed."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django_q.tasks import async_task

from rotation.audit import AuditAction, audit_record
from rotation.models import AuditEvent, CredentialVersion, Rotation
from rotation.providers.retirement import Retirement, versions_mark_retiring, versions_retire
from rotation.redeploy.notification import notifications_after_commit
from rotation.redeploy.reminders import reminders_cancel_open

State = Rotation.State
Stage = CredentialVersion.Stage
EXPIRE_TASK = "rotation.tasks_redeploy.rotation_expire_old_task"
# Why an expiring rotation retires its previous version (and how it finds it again).
EXPIRY_WHY = "old credentials expired"


def expiry_enqueue_after_commit(rotation_id: int) -> None:
    """Expire the rotation's old credentials in a task, right after the caller commits."""
    transaction.on_commit(lambda: async_task(EXPIRE_TASK, rotation_id))


def rotations_escalate_due() -> int:
    """Rotations past their redeploy deadline (and not expiring on it) become escalated."""
    if settings.ROTATION_EXPIRE_ON_DEADLINE:
        return 0
    now = timezone.now()
    count = 0
    overdue = Rotation.objects.filter(
        state=State.AWAITING_REDEPLOY,
        redeploy_deadline_at__lte=now,
        redeployed_at__isnull=True,
        # Vercel-requested rotations wait for no redeploy: they expire at their deadline.
        expire_old_after_push__isnull=True,
    ).select_related("resource")
    for rotation in overdue:
        with transaction.atomic():
            if not Rotation.objects.filter(
                pk=rotation.pk, state=State.AWAITING_REDEPLOY, redeployed_at__isnull=True
            ).update(state=State.ESCALATED, state_changed_at=now):
                continue
            audit_record(
                action=AuditAction.ROTATION_ESCALATED,
                actor_type=AuditEvent.ActorType.SYSTEM,
                resource=rotation.resource,
                rotation=rotation,
                details={
                    "deadline": rotation.redeploy_deadline_at.isoformat()
                    if rotation.redeploy_deadline_at
                    else None
                },
            )
            count += 1
    return count


def rotation_expiry_due(*, rotation: Rotation, now: datetime | None = None) -> bool:
    """Whether the old credentials of `rotation` may be expired now."""
    now = now or timezone.now()
    if rotation.rollback_pending:
        return False  # the old credentials are about to become current again
    if rotation.state == State.EXPIRING:
        return rotation.next_attempt_at is None or rotation.next_attempt_at <= now
    if rotation.state not in Rotation.WAITING_STATES:
        return False
    if rotation.emergency:
        return True
    if rotation.keep_old_until and now < rotation.keep_old_until:
        return False
    if rotation.expire_old_after_push is not None and rotation.keep_old_until:
        return True  # Vercel redeploys the projects itself; its delay has passed
    delay = timedelta(minutes=settings.ROTATION_EXPIRE_SAFETY_DELAY_MINUTES)
    if rotation.redeployed_at and now >= rotation.redeployed_at + delay:
        return True
    return bool(
        settings.ROTATION_EXPIRE_ON_DEADLINE
        and rotation.redeploy_deadline_at
        and now >= rotation.redeploy_deadline_at
    )


def rotation_expire_old(*, rotation: Rotation) -> bool:
    """Expire the previous credentials at the provider and wipe them; a failure is retried.

    Claim (the rotation becomes `expiring` with a lease; the previous version `retiring`),
    retire the version outside any transaction, then record the rotation's outcome.
    """
    now = timezone.now()
    if not rotation_expiry_due(rotation=rotation, now=now):
        return False
    lease = now + timedelta(minutes=settings.ROTATION_EXPIRE_RETRY_MINUTES)
    with transaction.atomic():
        claim = Rotation.objects.filter(
            pk=rotation.pk, state=rotation.state, rollback_queued_at__isnull=True
        ).filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        changes: dict[str, Any] = {"state": State.EXPIRING, "next_attempt_at": lease}
        if rotation.state != State.EXPIRING:
            changes["state_changed_at"] = now
        if not claim.update(**changes):
            return False  # another worker has it, or a rollback got there first
        rotation = Rotation.objects.select_related("resource__installation").get(pk=rotation.pk)
        previous = (
            CredentialVersion.objects.filter(resource=rotation.resource, stage=Stage.PREVIOUS)
            .exclude(rotation=rotation)
            .first()
        )
        versions_mark_retiring(
            by_rotation={rotation.pk: previous} if previous else {}, why=EXPIRY_WHY
        )
    # This rotation's old version, whether marked just now or by an earlier attempt.
    version_ids = list(
        CredentialVersion.objects.filter(
            retired_by=rotation, retire_reason=EXPIRY_WHY, stage=Stage.RETIRING
        ).values_list("pk", flat=True)
    )
    outcome = versions_retire(version_ids=version_ids)
    with transaction.atomic():
        left = CredentialVersion.objects.filter(pk__in=version_ids, stage=Stage.RETIRING)
        if left.exists():
            return _expiry_failed(rotation, outcome, left=left)
        if not Rotation.objects.filter(pk=rotation.pk, state=State.EXPIRING).update(
            state=State.COMPLETED,
            state_changed_at=now,
            expired_at=now,
            completed_at=now,
            next_attempt_at=None,
            last_error="",
        ):
            return False
        reminders_cancel_open(rotation_ids=[rotation.pk])
        notifications_after_commit([rotation.pk], wanted="clear")
        audit_record(
            action=AuditAction.OLD_CREDENTIALS_EXPIRED,
            actor_type=AuditEvent.ActorType.SYSTEM,
            resource=rotation.resource,
            rotation=rotation,
            details={
                "version": str(version_ids[0]) if version_ids else None,
                "emergency": rotation.emergency,
                "keep_old_until": rotation.keep_old_until.isoformat()
                if rotation.keep_old_until
                else None,
                "redeployed_at": rotation.redeployed_at.isoformat()
                if rotation.redeployed_at
                else None,
            },
        )
    return True


def _expiry_failed(
    rotation: Rotation, outcome: Retirement, *, left: QuerySet[CredentialVersion]
) -> bool:
    """Still retiring: come back when the version is free again; audit a provider failure."""
    retry_at = max(
        (at for at in left.values_list("retire_lease_until", flat=True) if at is not None),
        default=timezone.now() + timedelta(minutes=settings.ROTATION_EXPIRE_RETRY_MINUTES),
    )
    Rotation.objects.filter(pk=rotation.pk, state=State.EXPIRING).update(next_attempt_at=retry_at)
    if outcome.failed:
        version_id, error = next(iter(outcome.failed.items()))
        audit_record(
            action=AuditAction.OLD_CREDENTIALS_EXPIRED,
            outcome=AuditEvent.Outcome.FAILURE,
            actor_type=AuditEvent.ActorType.SYSTEM,
            resource=rotation.resource,
            rotation=rotation,
            details={"version": str(version_id), "error": error, "retry_at": retry_at.isoformat()},
        )
    return False


def rotations_expire_due() -> int:
    """Expire the old credentials of every rotation whose time has come."""
    now = timezone.now()
    delay = timedelta(minutes=settings.ROTATION_EXPIRE_SAFETY_DELAY_MINUTES)
    wanted = (
        Q(state=State.EXPIRING)
        | Q(emergency=True)
        | Q(redeployed_at__lte=now - delay)
        | Q(expire_old_after_push__isnull=False, keep_old_until__lte=now)
    )
    if settings.ROTATION_EXPIRE_ON_DEADLINE:
        wanted |= Q(redeploy_deadline_at__lte=now)
    candidates = Rotation.objects.filter(
        state__in=[*Rotation.WAITING_STATES, State.EXPIRING], rollback_queued_at__isnull=True
    ).filter(wanted)
    count = 0
    for rotation in candidates.order_by("pk"):
        if rotation_expiry_due(rotation=rotation, now=now):
            count += rotation_expire_old(rotation=rotation)
    return count
