"""Redeploys after a push: deployments seen on webhooks, confirmations recorded by staff."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Value
from django.utils import timezone

from rotation.audit import (
    AuditAction,
    MaybeActor,
    Origin,
    actor_may,
    audit_record,
    refuse,
)
from rotation.models import AuditEvent, RedeployCheck, Resource, Rotation, WebhookEvent
from rotation.redeploy.expiry import expiry_enqueue_after_commit
from rotation.redeploy.reminders import reminders_cancel_open


def expire_soon_if_no_delay(rotation: Rotation) -> None:
    """Without a safety delay, expire right after the commit instead of at the next tick."""
    if settings.ROTATION_EXPIRE_SAFETY_DELAY_MINUTES > 0:
        return
    if rotation.keep_old_until and rotation.keep_old_until > timezone.now():
        return
    expiry_enqueue_after_commit(rotation.pk)


def _started_before_the_push(deployment_id: str) -> Exists | Value:
    """Whether the deployment was created before the rotation's push (so built with the old
    values): a recorded `deployment.created`, read in the query that locks the rotation."""
    if not deployment_id:
        return Value(False)
    return Exists(
        WebhookEvent.objects.filter(
            deployment_id=deployment_id,
            type="deployment.created",
            occurred_at__lte=OuterRef("pushed_at"),
        )
    )


def rotation_redeploy_done_if_complete(*, rotation: Rotation, actor_type: str) -> bool:
    """Once no project is waited for, record the redeploy as done (in the caller's
    transaction, which holds the rotation's lock)."""
    checks = list(rotation.redeploy_checks.values_list("status", flat=True))
    if rotation.redeployed_at or not checks or RedeployCheck.Status.WAITING in checks:
        return False
    rotation.redeployed_at = timezone.now()
    rotation.save(update_fields=["redeployed_at"])
    reminders_cancel_open(rotation_ids=[rotation.pk])
    audit_record(
        action=AuditAction.REDEPLOY_DONE,
        actor_type=actor_type,
        resource=rotation.resource,
        rotation=rotation,
        details={"projects": len(checks)},
    )
    expire_soon_if_no_delay(rotation)
    return True


def rotation_mark_project_redeployed(
    *,
    resource: Resource,
    project_id: str,
    deployed_at: datetime,
    deployment_id: str = "",
    target: str = "",
    event_id: str = "",
) -> list[str]:
    """Count a deployment of `project_id` for the resource's waiting rotation(s)."""
    targets = settings.ROTATION_REDEPLOY_TARGETS
    if targets and (target or "") not in targets:
        return [f"target {target or 'none'} does not count"]
    # No savepoint when nested (a webhook delivery): a failure rolls the caller back anyway.
    with transaction.atomic(savepoint=False):
        return _project_redeployed(
            resource=resource,
            project_id=project_id,
            deployed_at=deployed_at,
            deployment_id=deployment_id,
            target=target,
            event_id=event_id,
        )


def _project_redeployed(
    *,
    resource: Resource,
    project_id: str,
    deployed_at: datetime,
    deployment_id: str,
    target: str,
    event_id: str,
) -> list[str]:
    outcomes: list[str] = []
    rotations = (
        Rotation.objects.select_for_update()
        .filter(resource=resource, state__in=Rotation.WAITING_STATES)
        .annotate(started_before=_started_before_the_push(deployment_id))
    )
    for rotation in rotations:
        rotation.resource = resource  # loaded with its installation: the audit names both
        if rotation.pushed_at is None or deployed_at <= rotation.pushed_at:
            outcomes.append(f"rotation {rotation.pk}: deployment before the push")
            continue
        if rotation.started_before:
            outcomes.append(f"rotation {rotation.pk}: deployment started before the push")
            continue
        updated = RedeployCheck.objects.filter(
            rotation=rotation, project_id=project_id, status=RedeployCheck.Status.WAITING
        ).update(
            status=RedeployCheck.Status.REDEPLOYED,
            deployment_id=deployment_id[:64],
            deployment_target=(target or "")[:32],
            deployed_at=deployed_at,
            event_id=event_id[:128],
            resolved_at=timezone.now(),
        )
        if not updated:
            outcomes.append(f"rotation {rotation.pk}: project {project_id} not waited for")
            continue
        audit_record(
            action=AuditAction.PROJECT_REDEPLOYED,
            actor_type=AuditEvent.ActorType.VERCEL,
            resource=resource,
            rotation=rotation,
            details={
                "project": project_id,
                "deployment": deployment_id,
                "target": target,
                "event": event_id,
            },
        )
        done = rotation_redeploy_done_if_complete(
            rotation=rotation, actor_type=AuditEvent.ActorType.VERCEL
        )
        outcomes.append(
            f"rotation {rotation.pk}: project {project_id} redeployed"
            + ("; all projects redeployed" if done else "")
        )
    return outcomes or ["no rotation waiting for a redeploy"]


def rotation_confirm_redeploy(
    *, rotation: Rotation, actor: MaybeActor, note: str, origin: Origin | None = None
) -> Rotation:
    """Record that the customer confirmed redeploying every project (staff, with a note)."""
    note = (note or "").strip()
    refusal: dict[str, Any] = {
        "action": AuditAction.REDEPLOY_CONFIRMED,
        "actor": actor,
        "origin": origin,
        "resource": rotation.resource,
        "rotation": rotation,
    }
    if not actor_may(actor, "rotation.confirm_redeploy"):
        refuse(message="You may not record redeploy confirmations.", **refusal)
    if not note:
        refuse(
            message="A note saying how the customer confirmed is required.",
            outcome="failure",
            **refusal,
        )
    with transaction.atomic():
        rotation = (
            Rotation.objects.select_for_update().select_related("resource").get(pk=rotation.pk)
        )
        waiting = rotation.state in Rotation.WAITING_STATES
        if waiting:
            _confirm_locked(rotation, actor=actor, note=note, origin=origin)
    if not waiting:
        refuse(
            message=(
                f"Rotation #{rotation.pk} is {rotation.get_state_display().lower()}, "
                "not waiting for a redeploy."
            ),
            outcome="failure",
            reason=note,
            **refusal,
        )
    return rotation


def _confirm_locked(
    rotation: Rotation, *, actor: MaybeActor, note: str, origin: Origin | None
) -> None:
    """Every waiting project counts as confirmed; the rotation is locked by the caller."""
    waiting = list(
        rotation.redeploy_checks.filter(status=RedeployCheck.Status.WAITING).values_list(
            "project_id", flat=True
        )
    )
    rotation.redeploy_checks.filter(status=RedeployCheck.Status.WAITING).update(
        status=RedeployCheck.Status.CONFIRMED, resolved_at=timezone.now()
    )
    if rotation.redeployed_at is None:
        rotation.redeployed_at = timezone.now()
        rotation.save(update_fields=["redeployed_at"])
    reminders_cancel_open(rotation_ids=[rotation.pk])
    audit_record(
        action=AuditAction.REDEPLOY_CONFIRMED,
        actor=actor,
        origin=origin,
        resource=rotation.resource,
        rotation=rotation,
        reason=note,
        details={"projects_confirmed": waiting},
    )
    expire_soon_if_no_delay(rotation)
