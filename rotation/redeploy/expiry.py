"""Deadline and expiry of the old credentials once every project has redeployed."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from rotation.audit import AuditAction, audit_record
from rotation.error_text import error_text
from rotation.models import AuditEvent, CredentialVersion, Rotation
from rotation.providers import get_provider
from rotation.redeploy.reminders import reminders_cancel_open

State = Rotation.State
EXPIRE_TASK = "rotation.tasks_redeploy.rotation_expire_old_task"


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
        state=State.AWAITING_REDEPLOY, redeploy_deadline_at__lte=now, redeployed_at__isnull=True
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
                details={"deadline": rotation.redeploy_deadline_at.isoformat()},
            )
            count += 1
    return count


def _version_expired(version: CredentialVersion, now: datetime) -> None:
    """Record that the provider expired `version`, and forget its ciphertext."""
    version.stage = CredentialVersion.Stage.EXPIRED
    version.stage_changed_at = now
    version.expired_at = now
    version.wipe()
    version.save(
        update_fields=["stage", "stage_changed_at", "expired_at", "secrets_encrypted", "key_id"]
    )


def rotation_expiry_due(*, rotation: Rotation, now: datetime | None = None) -> bool:
    """Whether the old credentials of `rotation` may be expired now."""
    now = now or timezone.now()
    if rotation.state == State.EXPIRING:
        return rotation.next_attempt_at is None or rotation.next_attempt_at <= now
    if rotation.state not in Rotation.WAITING_STATES:
        return False
    if rotation.emergency:
        return True
    if rotation.keep_old_until and now < rotation.keep_old_until:
        return False
    delay = timedelta(minutes=settings.ROTATION_EXPIRE_SAFETY_DELAY_MINUTES)
    if rotation.redeployed_at and now >= rotation.redeployed_at + delay:
        return True
    return bool(
        settings.ROTATION_EXPIRE_ON_DEADLINE
        and rotation.redeploy_deadline_at
        and now >= rotation.redeploy_deadline_at
    )


def rotation_expire_old(*, rotation: Rotation) -> bool:
    """Expire the previous credentials at the provider and wipe them; a failure is retried."""
    now = timezone.now()
    if not rotation_expiry_due(rotation=rotation, now=now):
        return False
    lease = now + timedelta(minutes=settings.ROTATION_EXPIRE_RETRY_MINUTES)
    claim = Rotation.objects.filter(pk=rotation.pk, state=rotation.state).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )
    changes: dict[str, Any] = {"state": State.EXPIRING, "next_attempt_at": lease}
    if rotation.state != State.EXPIRING:
        changes["state_changed_at"] = now
    if not claim.update(**changes):
        return False  # another worker has it, or a rollback got there first
    rotation = Rotation.objects.select_related("resource__installation").get(pk=rotation.pk)
    version = (
        CredentialVersion.objects.filter(
            resource=rotation.resource, stage=CredentialVersion.Stage.PREVIOUS
        )
        .exclude(rotation=rotation)
        .first()
    )
    error = ""
    if version is not None:
        try:
            get_provider().expire(resource=rotation.resource, version=version)
        except Exception as exc:  # the provider's failure stays visible and is retried
            error = error_text(exc)
    with transaction.atomic():
        if error:
            Rotation.objects.filter(pk=rotation.pk, state=State.EXPIRING).update(
                last_error=f"Expiring the old credentials failed: {error}"
            )
            audit_record(
                action=AuditAction.OLD_CREDENTIALS_EXPIRED,
                outcome=AuditEvent.Outcome.FAILURE,
                actor_type=AuditEvent.ActorType.SYSTEM,
                resource=rotation.resource,
                rotation=rotation,
                details={"version": str(version.pk), "error": error, "retry_at": lease.isoformat()},
            )
            return False
        if version is not None:
            _version_expired(version, now)
        Rotation.objects.filter(pk=rotation.pk, state=State.EXPIRING).update(
            state=State.COMPLETED,
            state_changed_at=now,
            expired_at=now,
            completed_at=now,
            next_attempt_at=None,
            last_error="",
        )
        reminders_cancel_open(rotation_ids=[rotation.pk])
        audit_record(
            action=AuditAction.OLD_CREDENTIALS_EXPIRED,
            actor_type=AuditEvent.ActorType.SYSTEM,
            resource=rotation.resource,
            rotation=rotation,
            details={
                "version": str(version.pk) if version else None,
                "emergency": rotation.emergency,
                "redeployed_at": rotation.redeployed_at.isoformat()
                if rotation.redeployed_at
                else None,
            },
        )
    return True


def rotations_expire_due() -> int:
    """Expire the old credentials of every rotation whose time has come."""
    now = timezone.now()
    delay = timedelta(minutes=settings.ROTATION_EXPIRE_SAFETY_DELAY_MINUTES)
    wanted = Q(state=State.EXPIRING) | Q(emergency=True) | Q(redeployed_at__lte=now - delay)
    if settings.ROTATION_EXPIRE_ON_DEADLINE:
        wanted |= Q(redeploy_deadline_at__lte=now)
    candidates = Rotation.objects.filter(
        state__in=[*Rotation.WAITING_STATES, State.EXPIRING]
    ).filter(wanted)
    count = 0
    for rotation in candidates.order_by("pk"):
        if rotation_expiry_due(rotation=rotation, now=now):
            count += rotation_expire_old(rotation=rotation)
    return count + _rolled_back_leftovers_expire()


def _rolled_back_leftovers_expire() -> int:
    """Retry expiring the newer credentials of a rollback whose first attempt failed."""
    count = 0
    leftovers = CredentialVersion.objects.filter(
        stage=CredentialVersion.Stage.PREVIOUS, rotation__state=State.ROLLED_BACK
    ).values_list("pk", flat=True)
    for version_id in list(leftovers):
        with transaction.atomic():
            version = (
                CredentialVersion.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("resource__installation", "rotation")
                .filter(pk=version_id, stage=CredentialVersion.Stage.PREVIOUS)
                .first()
            )
            if version is None:
                continue  # another worker has it, or it is done
            try:
                get_provider().expire(resource=version.resource, version=version)
            except Exception as exc:  # stays visible on the rotation; tried again next tick
                Rotation.objects.filter(pk=version.rotation_id).update(
                    last_error=f"Rolled back; expiring the newer credentials failed: "
                    f"{error_text(exc)}"
                )
                continue
            now = timezone.now()
            _version_expired(version, now)
            Rotation.objects.filter(pk=version.rotation_id).update(last_error="")
            audit_record(
                action=AuditAction.OLD_CREDENTIALS_EXPIRED,
                actor_type=AuditEvent.ActorType.SYSTEM,
                resource=version.resource,
                rotation=version.rotation,
                details={"version": str(version.pk), "after": "rollback"},
            )
            count += 1
    return count
