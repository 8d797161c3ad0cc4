"""Redeploys after a push: deployments seen on webhooks, confirmations recorded by staff."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction
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
    values): a recorded `deployment.created`."""
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
    if RedeployCheck.Status.WAITING in checks:
        return False
    return _redeploy_done(rotation, projects=len(checks), actor_type=actor_type)


def _redeploy_done(rotation: Rotation, *, projects: int, actor_type: str) -> bool:
    """Record the redeploy of a rotation with no project left to wait for, once."""
    if rotation.redeployed_at or not projects:
        return False
    rotation.redeployed_at = timezone.now()
    rotation.save(update_fields=["redeployed_at"])
    reminders_cancel_open(rotation_ids=[rotation.pk])
    audit_record(
        action=AuditAction.REDEPLOY_DONE,
        actor_type=actor_type,
        resource=rotation.resource,
        rotation=rotation,
        details={"projects": projects},
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
        counted = _count_deployment(
            resource=resource,
            project_id=project_id,
            deployed_at=deployed_at,
            deployment_id=deployment_id,
            target=target,
            event_id=event_id,
        )
        if not counted:
            return _not_counted(
                resource,
                project_id=project_id,
                deployed_at=deployed_at,
                deployment_id=deployment_id,
            )
        # One open rotation per resource, and its lock held: this is the rotation counted. A
        # statement of its own, after the lock, so it sees every check counted before it.
        rotation, projects, remaining = _counted_rotation(resource)
        rotation.resource = resource  # loaded with its installation: the audit names both
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
        done = not remaining and _redeploy_done(
            rotation, projects=projects, actor_type=AuditEvent.ActorType.VERCEL
        )
        return [
            f"rotation {rotation.pk}: project {project_id} redeployed"
            + ("; all projects redeployed" if done else "")
        ]


# The two statements every counted deployment runs are written out: the ORM took longer to
# build them than the database to answer.


def _count_deployment(
    *,
    resource: Resource,
    project_id: str,
    deployed_at: datetime,
    deployment_id: str,
    target: str,
    event_id: str,
) -> int:
    """In one statement, lock the resource's waiting rotation and count the deployment for it
    when it came after the push; returns the number of checks counted (0 or 1). The lock
    orders the deliveries of the rotation's projects."""
    checks, rotations = RedeployCheck._meta.db_table, Rotation._meta.db_table
    adapt = connection.ops.adapt_datetimefield_value
    states = Rotation.WAITING_STATES
    waited = f"o.resource_id = %s AND o.state IN ({', '.join(['%s'] * len(states))})"
    waited += " AND o.pushed_at < %s"
    params: list[Any] = [resource.pk, *states, adapt(deployed_at)]
    if deployment_id:  # and not built before the push: no `deployment.created` from before it
        waited += (
            f" AND NOT EXISTS (SELECT 1 FROM {WebhookEvent._meta.db_table} e"  # noqa: S608
            " WHERE e.deployment_id = %s AND e.type = %s AND e.occurred_at <= o.pushed_at)"
        )
        params += [deployment_id, "deployment.created"]
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    sql = (
        f"UPDATE {checks} SET status = %s, deployment_id = %s, deployment_target = %s,"  # noqa: S608 (model names)
        " deployed_at = %s, event_id = %s, resolved_at = %s"
        " WHERE project_id = %s AND status = %s"
        f" AND rotation_id IN (SELECT o.id FROM {rotations} o WHERE {waited}{lock})"
    )
    values = [
        RedeployCheck.Status.REDEPLOYED,
        deployment_id[:64],
        (target or "")[:32],
        adapt(deployed_at),
        event_id[:128],
        adapt(timezone.now()),
        project_id,
        RedeployCheck.Status.WAITING,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, values + params)
        return cursor.rowcount


def _counted_rotation(resource: Resource) -> tuple[Rotation, int, int]:
    """The resource's waiting rotation (with what marking its redeploy reads), the number of
    its projects and of those still waited for."""
    checks, rotations = RedeployCheck._meta.db_table, Rotation._meta.db_table
    states = Rotation.WAITING_STATES
    columns = "o.id, o.batch_id, o.redeployed_at, o.keep_old_until"
    sql = (
        f"SELECT {columns}, COUNT(c.id) AS projects,"  # noqa: S608 (model names)
        " COUNT(CASE WHEN c.status = %s THEN 1 END) AS remaining"
        f" FROM {rotations} o JOIN {checks} c ON c.rotation_id = o.id"
        f" WHERE o.resource_id = %s AND o.state IN ({', '.join(['%s'] * len(states))})"
        f" GROUP BY {columns}"
    )
    (rotation,) = Rotation.objects.raw(sql, [RedeployCheck.Status.WAITING, resource.pk, *states])
    return rotation, int(rotation.projects), int(rotation.remaining)  # type: ignore[attr-defined]


def _not_counted(
    resource: Resource, *, project_id: str, deployed_at: datetime, deployment_id: str
) -> list[str]:
    """Why a deployment counted for none of the resource's waiting rotations."""
    outcomes = []
    waiting = Rotation.objects.filter(resource=resource, state__in=Rotation.WAITING_STATES)
    for rotation in waiting.annotate(started_before=_started_before_the_push(deployment_id)):
        if rotation.pushed_at is None or deployed_at <= rotation.pushed_at:
            outcomes.append(f"rotation {rotation.pk}: deployment before the push")
        elif rotation.started_before:
            outcomes.append(f"rotation {rotation.pk}: deployment started before the push")
        else:
            outcomes.append(f"rotation {rotation.pk}: project {project_id} not waited for")
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
