"""Redeploy state of a rotation: the projects to wait for, redeploys seen or confirmed."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from rotation.audit import AuditAction, audit_record, audit_record_many
from rotation.models import (
    AuditEvent,
    ConnectedProject,
    Installation,
    RedeployCheck,
    Reminder,
    Resource,
    Rotation,
    WebhookEvent,
)
from rotation.services import RotationRefused
from rotation.services.common import refuse

if TYPE_CHECKING:
    from django.http import HttpRequest


State = Rotation.State
# States in which the rotation waits for redeploys and the old credentials still work.
WAITING_STATES = (State.AWAITING_REDEPLOY, State.ESCALATED)
VERCEL = AuditEvent.ActorType.VERCEL
SYSTEM = AuditEvent.ActorType.SYSTEM
ERROR_LIMIT = 500


class RedeployRefused(RotationRefused):
    """A redeploy action was refused; the message is safe to show to staff."""


def short_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:ERROR_LIMIT]


def _reminders_for(rotation: Rotation, pushed_at: datetime, deadline: datetime) -> list[Reminder]:
    if rotation.emergency:
        return []
    reminders = [
        Reminder(
            rotation=rotation,
            step=f"day-{days:g}",
            kind=Reminder.Kind.CUSTOMER,
            due_at=pushed_at + timedelta(days=days),
        )
        for days in sorted(set(settings.ROTATION_REMINDER_DAYS))
        if pushed_at + timedelta(days=days) < deadline
    ]
    escalate_at = deadline - timedelta(hours=settings.ROTATION_ESCALATION_HOURS_BEFORE_DEADLINE)
    reminders.append(
        Reminder(
            rotation=rotation,
            step="escalation",
            kind=Reminder.Kind.ESCALATION,
            due_at=max(escalate_at, pushed_at),
        )
    )
    if not settings.ROTATION_EXPIRE_ON_DEADLINE:  # otherwise expiry, not a warning, is due
        reminders.append(
            Reminder(
                rotation=rotation, step="overdue", kind=Reminder.Kind.ESCALATION, due_at=deadline
            )
        )
    return reminders


def rotations_redeploy_begin(
    *, rotations: list[Rotation], record_audit: bool = True
) -> list[dict[str, Any]]:
    """Snapshot the projects to wait for, set deadlines and plan reminders; idempotent.

    Works on a group of just-pushed rotations with a fixed number of queries, because the
    push pipeline records its successes a group at a time. Returns the audit entries; with
    `record_audit=False` the caller appends them (last, to hold the chain lock briefly).
    """
    if not rotations:
        return []
    now = timezone.now()
    pushed = {rotation.pk: rotation.pushed_at or now for rotation in rotations}
    connected: dict[int, list[ConnectedProject]] = {}
    for project in ConnectedProject.objects.filter(
        resource_id__in={rotation.resource_id for rotation in rotations},
        connected_at__lte=max(pushed.values()),
    ):
        connected.setdefault(project.resource_id, []).append(project)
    checks: list[RedeployCheck] = []
    reminders: list[Reminder] = []
    new_deadlines: dict[datetime, list[int]] = {}
    audit_entries: list[dict[str, Any]] = []
    for rotation in rotations:
        pushed_at = pushed[rotation.pk]
        projects = [
            p
            for p in connected.get(rotation.resource_id, [])
            if p.connected_at <= pushed_at
            and (p.disconnected_at is None or p.disconnected_at > pushed_at)
        ]
        checks += [
            RedeployCheck(rotation=rotation, project_id=p.project_id, connected_at=p.connected_at)
            for p in projects
        ]
        if rotation.redeploy_deadline_at is None:
            rotation.redeploy_deadline_at = pushed_at + timedelta(
                days=settings.ROTATION_REDEPLOY_GRACE_DAYS
            )
            new_deadlines.setdefault(rotation.redeploy_deadline_at, []).append(rotation.pk)
        deadline = rotation.redeploy_deadline_at
        planned = _reminders_for(rotation, pushed_at, deadline)
        reminders += planned
        audit_entries.append(
            {
                "action": AuditAction.REDEPLOY_STARTED,
                "actor_type": SYSTEM,
                "resource": rotation.resource,
                "rotation": rotation,
                "details": {
                    "projects": sorted(p.project_id for p in projects),
                    "deadline": deadline.isoformat(),
                    "emergency": rotation.emergency,
                    "reminders": [r.step for r in planned],
                },
            }
        )
    RedeployCheck.objects.bulk_create(checks, ignore_conflicts=True)
    for deadline, pks in new_deadlines.items():
        Rotation.objects.filter(pk__in=pks).update(redeploy_deadline_at=deadline)
    Reminder.objects.bulk_create(reminders, ignore_conflicts=True)
    if record_audit:
        audit_record_many(audit_entries)
    for rotation in rotations:
        if rotation.emergency:
            rotation_id = rotation.pk
            transaction.on_commit(lambda rotation_id=rotation_id: _enqueue_expiry(rotation_id))
    return audit_entries


def rotation_redeploy_begin(*, rotation: Rotation) -> None:
    """`rotations_redeploy_begin` for one rotation."""
    rotations_redeploy_begin(rotations=[rotation])


def _enqueue_expiry(rotation_id: int) -> None:
    from django_q.tasks import async_task

    async_task("rotation.tasks_redeploy.rotation_expire_old_task", rotation_id)


def _expire_soon_if_no_delay(rotation: Rotation) -> None:
    """Without a safety delay, expire right after the commit instead of at the next tick."""
    if settings.ROTATION_EXPIRE_SAFETY_DELAY_MINUTES > 0:
        return
    if rotation.keep_old_until and rotation.keep_old_until > timezone.now():
        return
    rotation_id = rotation.pk
    transaction.on_commit(lambda: _enqueue_expiry(rotation_id))


def _deployment_started_before(deployment_id: str, moment: datetime) -> bool:
    """A deployment created before the push was built with the old values."""
    return (
        bool(deployment_id)
        and WebhookEvent.objects.filter(
            deployment_id=deployment_id, type="deployment.created", occurred_at__lte=moment
        ).exists()
    )


def _cancel_open_reminders(rotation: Rotation) -> None:
    """Nothing is left to remind anybody of once the redeploy is done."""
    Reminder.objects.filter(
        rotation=rotation, status__in=[Reminder.Status.SCHEDULED, Reminder.Status.FAILED]
    ).update(status=Reminder.Status.CANCELLED)


def _redeploy_done_if_complete(*, rotation: Rotation, actor_type: str) -> bool:
    checks = list(rotation.redeploy_checks.values_list("status", flat=True))
    if rotation.redeployed_at or not checks or RedeployCheck.Status.WAITING in checks:
        return False
    rotation.redeployed_at = timezone.now()
    rotation.save(update_fields=["redeployed_at"])
    _cancel_open_reminders(rotation)
    audit_record(
        action=AuditAction.REDEPLOY_DONE,
        actor_type=actor_type,
        resource=rotation.resource,
        rotation=rotation,
        details={"projects": len(checks)},
    )
    _expire_soon_if_no_delay(rotation)
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
    outcomes: list[str] = []
    rotations = Rotation.objects.select_for_update().filter(
        resource=resource, state__in=WAITING_STATES
    )
    for rotation in rotations:
        if rotation.pushed_at is None or deployed_at <= rotation.pushed_at:
            outcomes.append(f"rotation {rotation.pk}: deployment before the push")
            continue
        if _deployment_started_before(deployment_id, rotation.pushed_at):
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
            actor_type=VERCEL,
            resource=resource,
            rotation=rotation,
            details={
                "project": project_id,
                "deployment": deployment_id,
                "target": target,
                "event": event_id,
            },
        )
        done = _redeploy_done_if_complete(rotation=rotation, actor_type=VERCEL)
        outcomes.append(
            f"rotation {rotation.pk}: project {project_id} redeployed"
            + ("; all projects redeployed" if done else "")
        )
    return outcomes or ["no rotation waiting for a redeploy"]


def rotation_confirm_redeploy(
    *, rotation: Rotation, actor: Any, note: str, request: HttpRequest | None = None
) -> Rotation:
    """Record that the customer confirmed redeploying every project (staff, with a note)."""
    note = (note or "").strip()
    if not actor.has_perm("rotation.confirm_redeploy"):
        refuse(
            message="You may not record redeploy confirmations.",
            action=AuditAction.REDEPLOY_CONFIRMED,
            actor=actor,
            request=request,
            resource=rotation.resource,
            rotation=rotation,
            error=RedeployRefused,
        )
    if not note:
        raise RedeployRefused("A note saying how the customer confirmed is required.")
    with transaction.atomic():
        rotation = (
            Rotation.objects.select_for_update().select_related("resource").get(pk=rotation.pk)
        )
        if rotation.state not in WAITING_STATES:
            raise RedeployRefused(
                f"Rotation #{rotation.pk} is {rotation.get_state_display().lower()}, "
                "not waiting for a redeploy."
            )
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
        _cancel_open_reminders(rotation)
        audit_record(
            action=AuditAction.REDEPLOY_CONFIRMED,
            actor=actor,
            request=request,
            resource=rotation.resource,
            rotation=rotation,
            reason=note,
            details={"projects_confirmed": waiting},
        )
        _expire_soon_if_no_delay(rotation)
    return rotation


def project_connected(
    *, resource: Resource, project_id: str, occurred_at: datetime | None, event_id: str = ""
) -> str:
    """Add (or reconnect) a project; a stale event older than a disconnect is ignored."""
    when = occurred_at or timezone.now()
    project, created = ConnectedProject.objects.select_for_update().get_or_create(
        resource=resource,
        project_id=project_id,
        defaults={"source": ConnectedProject.Source.WEBHOOK, "connected_at": when},
    )
    if not created:
        if project.disconnected_at is None:
            return f"project {project_id} already connected"
        if project.disconnected_at > when:
            return f"project {project_id}: stale connect event ignored"
        project.connected_at = when
        project.disconnected_at = None
        project.save(update_fields=["connected_at", "disconnected_at"])
    audit_record(
        action=AuditAction.PROJECT_CONNECTED,
        actor_type=VERCEL,
        resource=resource,
        details={"project": project_id, "event": event_id},
    )
    return f"project {project_id} connected"


def project_disconnected(
    *, resource: Resource, project_id: str, occurred_at: datetime | None, event_id: str = ""
) -> str:
    """Mark a project disconnected; a waiting rotation no longer waits for it."""
    when = occurred_at or timezone.now()
    project = (
        ConnectedProject.objects.select_for_update()
        .filter(resource=resource, project_id=project_id)
        .first()
    )
    if project is None:
        return f"project {project_id} was not known"
    if project.disconnected_at is not None:
        return f"project {project_id} already disconnected"
    if project.connected_at > when:
        return f"project {project_id}: stale disconnect event ignored"
    project.disconnected_at = when
    project.save(update_fields=["disconnected_at"])
    audit_record(
        action=AuditAction.PROJECT_DISCONNECTED,
        actor_type=VERCEL,
        resource=resource,
        details={"project": project_id, "event": event_id},
    )
    rotations = Rotation.objects.select_for_update().filter(
        resource=resource, state__in=WAITING_STATES
    )
    for rotation in rotations:
        waived = RedeployCheck.objects.filter(
            rotation=rotation, project_id=project_id, status=RedeployCheck.Status.WAITING
        ).update(status=RedeployCheck.Status.DISCONNECTED, resolved_at=timezone.now())
        if waived:
            _redeploy_done_if_complete(rotation=rotation, actor_type=VERCEL)
    return f"project {project_id} disconnected"


def connected_project_corrected(
    *,
    project: ConnectedProject,
    actor: Any,
    change: str,
    request: HttpRequest | None = None,
) -> None:
    """Staff added, changed or removed a connected project by hand: audit it, and keep the
    waiting rotations of its resource in step. `change` is "added", "changed" or "deleted"."""
    active = change != "deleted" and project.disconnected_at is None
    audit_record(
        action=AuditAction.PROJECT_CONNECTED if active else AuditAction.PROJECT_DISCONNECTED,
        actor=actor,
        request=request,
        resource=project.resource,
        details={
            "project": project.project_id,
            "change": change,
            "connected_at": project.connected_at.isoformat() if project.connected_at else None,
            "disconnected_at": (
                project.disconnected_at.isoformat() if project.disconnected_at else None
            ),
        },
    )
    rotations = Rotation.objects.select_for_update().filter(
        resource_id=project.resource_id, state__in=WAITING_STATES
    )
    for rotation in rotations:
        checks = RedeployCheck.objects.filter(rotation=rotation, project_id=project.project_id)
        if not active:
            if checks.filter(status=RedeployCheck.Status.WAITING).update(
                status=RedeployCheck.Status.DISCONNECTED, resolved_at=timezone.now()
            ):
                _redeploy_done_if_complete(rotation=rotation, actor_type=SYSTEM)
        elif (
            rotation.redeployed_at is None
            and rotation.pushed_at
            and project.connected_at <= rotation.pushed_at
            and not checks.exists()
        ):
            # A project we did not know of at push time still runs the old credentials.
            RedeployCheck.objects.create(
                rotation=rotation, project_id=project.project_id, connected_at=project.connected_at
            )


def installation_removed(
    *,
    installation: Installation,
    occurred_at: datetime | None = None,
    actor_type: str = VERCEL,
    event_id: str = "",
) -> str:
    """Mark the installation removed and stop its open rotations (nothing more to push)."""
    now = timezone.now()
    installation = Installation.objects.select_for_update().get(pk=installation.pk)
    if installation.status != Installation.Status.REMOVED:
        installation.status = Installation.Status.REMOVED
        installation.removed_at = occurred_at or now
        installation.save(update_fields=["status", "removed_at", "updated_at"])
    rotations = list(
        Rotation.objects.select_for_update()
        .select_related("resource")
        .filter(resource__installation=installation, state__in=Rotation.OPEN_STATES)
    )
    for rotation in rotations:
        previous_state = rotation.state
        rotation.state = State.CANCELLED
        rotation.state_changed_at = now
        rotation.next_attempt_at = None
        rotation.last_error = "Installation removed on Vercel; rotation stopped."
        rotation.save(update_fields=["state", "state_changed_at", "next_attempt_at", "last_error"])
        _cancel_open_reminders(rotation)
        audit_record(
            action=AuditAction.ROTATION_STOPPED,
            actor_type=actor_type,
            resource=rotation.resource,
            rotation=rotation,
            details={"from_state": previous_state, "event": event_id},
        )
    audit_record(
        action=AuditAction.INSTALLATION_REMOVED,
        actor_type=actor_type,
        installation=installation,
        details={"rotations_stopped": [r.pk for r in rotations], "event": event_id},
    )
    return f"installation {installation.vercel_id} removed; {len(rotations)} rotation(s) stopped"
