"""Which projects use a resource (webhooks and staff corrections), and removed installations.

Each function owns its transaction; waiting rotations are kept in step with the change.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from rotation.audit import AuditAction, MaybeActor, Origin, audit_record
from rotation.models import (
    AuditEvent,
    ConnectedProject,
    Installation,
    RedeployCheck,
    Resource,
    Rotation,
)
from rotation.redeploy.progress import rotation_redeploy_done_if_complete
from rotation.redeploy.reminders import reminders_cancel_open


@transaction.atomic
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
        actor_type=AuditEvent.ActorType.VERCEL,
        resource=resource,
        details={"project": project_id, "event": event_id},
    )
    return f"project {project_id} connected"


@transaction.atomic
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
        actor_type=AuditEvent.ActorType.VERCEL,
        resource=resource,
        details={"project": project_id, "event": event_id},
    )
    rotations = Rotation.objects.select_for_update().filter(
        resource=resource, state__in=Rotation.WAITING_STATES
    )
    for rotation in rotations:
        waived = RedeployCheck.objects.filter(
            rotation=rotation, project_id=project_id, status=RedeployCheck.Status.WAITING
        ).update(status=RedeployCheck.Status.DISCONNECTED, resolved_at=timezone.now())
        if waived:
            rotation_redeploy_done_if_complete(
                rotation=rotation, actor_type=AuditEvent.ActorType.VERCEL
            )
    return f"project {project_id} disconnected"


@transaction.atomic
def connected_project_corrected(
    *,
    project: ConnectedProject,
    actor: MaybeActor,
    change: str,
    origin: Origin | None = None,
) -> None:
    """Staff added, changed or removed a connected project by hand: audit it, and keep the
    waiting rotations of its resource in step. `change` is "added", "changed" or "deleted"."""
    active = change != "deleted" and project.disconnected_at is None
    audit_record(
        action=AuditAction.PROJECT_CONNECTED if active else AuditAction.PROJECT_DISCONNECTED,
        actor=actor,
        origin=origin,
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
        resource_id=project.resource_id, state__in=Rotation.WAITING_STATES
    )
    for rotation in rotations:
        checks = RedeployCheck.objects.filter(rotation=rotation, project_id=project.project_id)
        if not active:
            if checks.filter(status=RedeployCheck.Status.WAITING).update(
                status=RedeployCheck.Status.DISCONNECTED, resolved_at=timezone.now()
            ):
                rotation_redeploy_done_if_complete(
                    rotation=rotation, actor_type=AuditEvent.ActorType.SYSTEM
                )
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


@transaction.atomic
def installation_removed(
    *,
    installation: Installation,
    occurred_at: datetime | None = None,
    actor_type: str = AuditEvent.ActorType.VERCEL,
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
    reminders_cancel_open(rotation_ids=[rotation.pk for rotation in rotations])
    for rotation in rotations:
        previous_state = rotation.state
        rotation.state = Rotation.State.CANCELLED
        rotation.state_changed_at = now
        rotation.next_attempt_at = None
        rotation.last_error = "Installation removed on Vercel; rotation stopped."
        rotation.save(update_fields=["state", "state_changed_at", "next_attempt_at", "last_error"])
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
