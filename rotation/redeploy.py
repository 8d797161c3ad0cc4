"""Redeploy tracking: after a push, wait for every connected project to redeploy, remind the
customer, then expire the old credentials (or roll back while they still work).

Vercel does not redeploy projects after a secrets update, so running deployments keep the
old values until the customer redeploys; expiring old credentials earlier would break them.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from rotation.audit import AuditAction, audit_record
from rotation.models import (
    AuditEvent,
    ConnectedProject,
    CredentialVersion,
    Installation,
    RedeployCheck,
    Reminder,
    Resource,
    Rotation,
    WebhookEvent,
)

if TYPE_CHECKING:
    from django.http import HttpRequest

logger = logging.getLogger(__name__)

State = Rotation.State
# States in which the rotation waits for redeploys and the old credentials still work.
WAITING_STATES = (State.AWAITING_REDEPLOY, State.ESCALATED)
VERCEL = AuditEvent.ActorType.VERCEL
SYSTEM = AuditEvent.ActorType.SYSTEM
ERROR_LIMIT = 500


class RedeployRefused(Exception):
    """A redeploy action was refused; the message is safe to show to staff."""


def _short_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:ERROR_LIMIT]


# ---------------------------------------------------------------------------------------
# Start of the wait (called by rotation_push in the push's transaction)
# ---------------------------------------------------------------------------------------


def rotation_redeploy_begin(*, rotation: Rotation) -> None:
    """Snapshot the projects to wait for, set the deadline and plan reminders; idempotent."""
    now = timezone.now()
    pushed_at = rotation.pushed_at or now
    projects = ConnectedProject.objects.filter(
        resource_id=rotation.resource_id, connected_at__lte=pushed_at
    ).filter(Q(disconnected_at__isnull=True) | Q(disconnected_at__gt=pushed_at))
    RedeployCheck.objects.bulk_create(
        [
            RedeployCheck(rotation=rotation, project_id=p.project_id, connected_at=p.connected_at)
            for p in projects
        ],
        ignore_conflicts=True,
    )
    if rotation.redeploy_deadline_at is None:
        rotation.redeploy_deadline_at = pushed_at + timedelta(
            days=settings.ROTATION_REDEPLOY_GRACE_DAYS
        )
        Rotation.objects.filter(pk=rotation.pk).update(
            redeploy_deadline_at=rotation.redeploy_deadline_at
        )
    deadline = rotation.redeploy_deadline_at
    reminders: list[Reminder] = []
    if not rotation.emergency:
        for days in sorted(set(settings.ROTATION_REMINDER_DAYS)):
            due = pushed_at + timedelta(days=days)
            if due < deadline:
                reminders.append(
                    Reminder(
                        rotation=rotation,
                        step=f"day-{days:g}",
                        kind=Reminder.Kind.CUSTOMER,
                        due_at=due,
                    )
                )
        escalate_at = deadline - timedelta(hours=settings.ROTATION_ESCALATION_HOURS_BEFORE_DEADLINE)
        reminders.append(
            Reminder(
                rotation=rotation,
                step="escalation",
                kind=Reminder.Kind.ESCALATION,
                due_at=max(escalate_at, pushed_at),
            )
        )
        reminders.append(
            Reminder(
                rotation=rotation, step="overdue", kind=Reminder.Kind.ESCALATION, due_at=deadline
            )
        )
    Reminder.objects.bulk_create(reminders, ignore_conflicts=True)
    audit_record(
        action=AuditAction.REDEPLOY_STARTED,
        actor_type=SYSTEM,
        resource=rotation.resource,
        rotation=rotation,
        details={
            "projects": sorted(p.project_id for p in projects),
            "deadline": deadline.isoformat(),
            "emergency": rotation.emergency,
            "reminders": [r.step for r in reminders],
        },
    )
    if rotation.emergency:
        rotation_id = rotation.pk
        transaction.on_commit(lambda: _enqueue_expiry(rotation_id))


def _enqueue_expiry(rotation_id: int) -> None:
    from django_q.tasks import async_task

    async_task("rotation.tasks_redeploy.rotation_expire_old_task", rotation_id)


# ---------------------------------------------------------------------------------------
# Redeploys seen (webhooks) or confirmed (staff)
# ---------------------------------------------------------------------------------------


def _deployment_started_before(deployment_id: str, moment: datetime) -> bool:
    """A deployment created before the push was built with the old values."""
    return (
        bool(deployment_id)
        and WebhookEvent.objects.filter(
            deployment_id=deployment_id, type="deployment.created", occurred_at__lte=moment
        ).exists()
    )


def _redeploy_done_if_complete(*, rotation: Rotation, actor_type: str) -> bool:
    checks = list(rotation.redeploy_checks.values_list("status", flat=True))
    if rotation.redeployed_at or not checks or RedeployCheck.Status.WAITING in checks:
        return False
    rotation.redeployed_at = timezone.now()
    rotation.save(update_fields=["redeployed_at"])
    Reminder.objects.filter(
        rotation=rotation, status__in=[Reminder.Status.SCHEDULED, Reminder.Status.FAILED]
    ).update(status=Reminder.Status.CANCELLED)
    audit_record(
        action=AuditAction.REDEPLOY_DONE,
        actor_type=actor_type,
        resource=rotation.resource,
        rotation=rotation,
        details={"projects": len(checks)},
    )
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
        with transaction.atomic():
            audit_record(
                action=AuditAction.REDEPLOY_CONFIRMED,
                outcome=AuditEvent.Outcome.DENIED,
                actor=actor,
                request=request,
                resource=rotation.resource,
                rotation=rotation,
            )
        raise RedeployRefused("You may not record redeploy confirmations.")
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
        Reminder.objects.filter(
            rotation=rotation, status__in=[Reminder.Status.SCHEDULED, Reminder.Status.FAILED]
        ).update(status=Reminder.Status.CANCELLED)
        audit_record(
            action=AuditAction.REDEPLOY_CONFIRMED,
            actor=actor,
            request=request,
            resource=rotation.resource,
            rotation=rotation,
            reason=note,
            details={"projects_confirmed": waiting},
        )
    return rotation


# ---------------------------------------------------------------------------------------
# Connected projects and installations (webhooks)
# ---------------------------------------------------------------------------------------


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
        Reminder.objects.filter(
            rotation=rotation, status__in=[Reminder.Status.SCHEDULED, Reminder.Status.FAILED]
        ).update(status=Reminder.Status.CANCELLED)
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


# ---------------------------------------------------------------------------------------
# Reminders
# ---------------------------------------------------------------------------------------


def _escalation_recipients() -> list[str]:
    if settings.ROTATION_ESCALATION_EMAILS:
        return list(settings.ROTATION_ESCALATION_EMAILS)
    permission = Permission.objects.filter(
        content_type__app_label="rotation", codename="confirm_redeploy"
    ).first()
    users = get_user_model().objects.filter(is_active=True, is_staff=True).exclude(email="")
    users = users.filter(
        Q(is_superuser=True) | Q(user_permissions=permission) | Q(groups__permissions=permission)
    )
    return sorted(set(users.values_list("email", flat=True)))


def _reminder_message(reminder: Reminder) -> tuple[str, str]:
    rotation = reminder.rotation
    resource = rotation.resource
    installation = resource.installation
    names = (
        ", ".join(f"{item.get('prefix') or ''}{item['name']}" for item in resource.secret_template)
        or "the resource's secrets"
    )
    waiting = list(
        rotation.redeploy_checks.filter(status=RedeployCheck.Status.WAITING).values_list(
            "project_id", flat=True
        )
    )
    pushed = rotation.pushed_at.strftime("%Y-%m-%d %H:%M UTC") if rotation.pushed_at else "?"
    deadline = rotation.redeploy_deadline_at.strftime("%Y-%m-%d %H:%M UTC")
    projects = (
        "\n".join(f"  - {project}" for project in waiting)
        if waiting
        else "  (we know of no connected project: please redeploy every project that uses it)"
    )
    what_changed = (
        f"On {pushed} the credentials of {resource.name} ({resource.vercel_id}) were rotated and "
        f"the new values of {names} were saved to your Vercel projects. Vercel does not "
        "redeploy projects by itself: running deployments still use the old credentials."
    )
    if reminder.kind == Reminder.Kind.CUSTOMER:
        subject = f"Action needed: redeploy projects using {resource.name}"
        body = (
            f"Hello,\n\n{what_changed}\n\nWhat to do: redeploy these projects on Vercel:\n"
            f"{projects}\n\nThe old credentials stop working once every project has "
            f"redeployed, and at the latest around {deadline}.\n"
        )
    else:
        late = reminder.step == "overdue"
        subject = (
            f"{'Overdue' if late else 'Deadline near'}: rotation #{rotation.pk} of "
            f"{resource.name} waits for redeploys"
        )
        body = (
            f"{what_changed}\n\nInstallation: {installation} <{installation.contact_email}>\n"
            f"Redeploy deadline: {deadline}{' (passed)' if late else ''}\n"
            f"Projects not yet redeployed:\n{projects}\n\n"
            "Contact the customer, then record a confirmed redeploy or roll back in the admin.\n"
        )
    return subject, body


def _reminder_recipients(reminder: Reminder) -> list[str]:
    if reminder.kind == Reminder.Kind.CUSTOMER:
        email = reminder.rotation.resource.installation.contact_email
        return [email] if email else []
    return _escalation_recipients()


def reminder_send(*, reminder: Reminder) -> bool:
    """Claim one due reminder (one worker wins), send it and record the outcome."""
    now = timezone.now()
    claimed = Reminder.objects.filter(
        pk=reminder.pk, status=reminder.status, attempts=reminder.attempts
    ).update(status=Reminder.Status.SENDING, claimed_at=now, attempts=F("attempts") + 1)
    if not claimed:
        return False
    reminder.refresh_from_db()
    rotation = reminder.rotation
    recipients = _reminder_recipients(reminder)
    error = ""
    if not recipients:
        error = "no recipient (installation contact email or escalation list is empty)"
    else:
        try:
            subject, body = _reminder_message(reminder)
            send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients)
        except Exception as exc:  # any mail failure: keep it visible and retry later
            error = _short_error(exc)
    with transaction.atomic():
        if error:
            final = (
                Reminder.Status.SKIPPED
                if not recipients or reminder.attempts >= settings.ROTATION_REMINDER_MAX_ATTEMPTS
                else Reminder.Status.FAILED
            )
            Reminder.objects.filter(pk=reminder.pk).update(status=final, last_error=error)
        else:
            Reminder.objects.filter(pk=reminder.pk).update(
                status=Reminder.Status.SENT,
                sent_at=timezone.now(),
                recipients=", ".join(recipients),
                last_error="",
            )
        audit_record(
            action=AuditAction.REMINDER_SENT,
            outcome=AuditEvent.Outcome.FAILURE if error else AuditEvent.Outcome.SUCCESS,
            actor_type=SYSTEM,
            resource=rotation.resource,
            rotation=rotation,
            details={
                "step": reminder.step,
                "kind": reminder.kind,
                "recipients": recipients,
                "attempt": reminder.attempts,
                "error": error,
            },
        )
    return not error


def reminders_send_due() -> int:
    """Send every due reminder once; earlier customer steps not yet sent are skipped."""
    now = timezone.now()
    open_reminders = Reminder.objects.filter(
        status__in=[Reminder.Status.SCHEDULED, Reminder.Status.FAILED]
    )
    open_reminders.exclude(rotation__state__in=WAITING_STATES).update(
        status=Reminder.Status.CANCELLED
    )
    open_reminders.filter(rotation__redeployed_at__isnull=False).update(
        status=Reminder.Status.CANCELLED
    )
    due = list(
        open_reminders.filter(
            due_at__lte=now, attempts__lt=settings.ROTATION_REMINDER_MAX_ATTEMPTS
        ).order_by("rotation_id", "kind", "-due_at")
    )
    sent = 0
    latest: set[tuple[int, str]] = set()
    for reminder in due:
        key = (reminder.rotation_id, reminder.kind)
        if key in latest and reminder.kind == Reminder.Kind.CUSTOMER:
            # Catching up after downtime: one email with the newest step is enough.
            Reminder.objects.filter(pk=reminder.pk, status=reminder.status).update(
                status=Reminder.Status.SKIPPED, last_error="superseded by a later reminder"
            )
            continue
        latest.add(key)
        sent += reminder_send(reminder=reminder)
    return sent


# ---------------------------------------------------------------------------------------
# Deadline and expiry of the old credentials
# ---------------------------------------------------------------------------------------


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
                actor_type=SYSTEM,
                resource=rotation.resource,
                rotation=rotation,
                details={"deadline": rotation.redeploy_deadline_at.isoformat()},
            )
            count += 1
    return count


def rotation_expiry_due(*, rotation: Rotation, now: datetime | None = None) -> bool:
    """Whether the old credentials of `rotation` may be expired now."""
    now = now or timezone.now()
    if rotation.state == State.EXPIRING:
        return rotation.next_attempt_at is None or rotation.next_attempt_at <= now
    if rotation.state not in WAITING_STATES:
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
    from rotation.credentials import get_provider

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
            error = _short_error(exc)
    with transaction.atomic():
        if error:
            Rotation.objects.filter(pk=rotation.pk, state=State.EXPIRING).update(
                last_error=f"Expiring the old credentials failed: {error}"
            )
            audit_record(
                action=AuditAction.OLD_CREDENTIALS_EXPIRED,
                outcome=AuditEvent.Outcome.FAILURE,
                actor_type=SYSTEM,
                resource=rotation.resource,
                rotation=rotation,
                details={"version": str(version.pk), "error": error, "retry_at": lease.isoformat()},
            )
            return False
        if version is not None:
            version.stage = CredentialVersion.Stage.EXPIRED
            version.stage_changed_at = now
            version.expired_at = now
            version.wipe()
            version.save(
                update_fields=[
                    "stage",
                    "stage_changed_at",
                    "expired_at",
                    "secrets_encrypted",
                    "key_id",
                ]
            )
        Rotation.objects.filter(pk=rotation.pk, state=State.EXPIRING).update(
            state=State.COMPLETED,
            state_changed_at=now,
            expired_at=now,
            completed_at=now,
            next_attempt_at=None,
            last_error="",
        )
        Reminder.objects.filter(
            rotation=rotation, status__in=[Reminder.Status.SCHEDULED, Reminder.Status.FAILED]
        ).update(status=Reminder.Status.CANCELLED)
        audit_record(
            action=AuditAction.OLD_CREDENTIALS_EXPIRED,
            actor_type=SYSTEM,
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
    candidates = Rotation.objects.filter(state__in=[*WAITING_STATES, State.EXPIRING]).filter(wanted)
    count = 0
    for rotation in candidates.order_by("pk"):
        if rotation_expiry_due(rotation=rotation, now=now):
            count += rotation_expire_old(rotation=rotation)
    return count


# ---------------------------------------------------------------------------------------
# Rollback
# ---------------------------------------------------------------------------------------


def rotation_rollback(
    *, rotation: Rotation, actor: Any, reason: str, request: HttpRequest | None = None
) -> Rotation:
    """Re-push the previous (still valid) credentials, make them current, expire the newer."""
    from rotation import vercel
    from rotation.credentials import get_provider

    reason = (reason or "").strip()
    if not actor.has_perm("rotation.rollback_rotation"):
        with transaction.atomic():
            audit_record(
                action=AuditAction.ROTATION_ROLLED_BACK,
                outcome=AuditEvent.Outcome.DENIED,
                actor=actor,
                request=request,
                resource=rotation.resource,
                rotation=rotation,
            )
        raise RedeployRefused("You may not roll back rotations.")
    if not reason:
        raise RedeployRefused("A reason is required to roll back.")
    failure = ""
    with transaction.atomic():
        # The row lock keeps the expiry task away until the rollback is done.
        rotation = (
            Rotation.objects.select_for_update()
            .select_related("resource__installation")
            .get(pk=rotation.pk)
        )
        resource = rotation.resource
        installation = resource.installation
        if rotation.state not in WAITING_STATES:
            raise RedeployRefused(
                f"Rotation #{rotation.pk} is {rotation.get_state_display().lower()}; only a "
                "rotation waiting for redeploys can be rolled back (the old credentials must "
                "still work)."
            )
        versions = CredentialVersion.objects.select_for_update().filter(resource=resource)
        previous = versions.filter(stage=CredentialVersion.Stage.PREVIOUS).first()
        newer = versions.filter(stage=CredentialVersion.Stage.CURRENT).first()
        if previous is None or not previous.secrets_encrypted:
            raise RedeployRefused(
                f"Rotation #{rotation.pk} has no previous credentials to restore."
            )
        try:
            # Reference: https://vercel.com/docs/rest-api/reference/endpoints/marketplace/update-resource-secrets
            vercel.update_resource_secrets(
                installation_id=installation.vercel_id,
                resource_id=resource.vercel_id,
                token=installation.access_token(),
                secrets=previous.secrets(),
                endpoint=installation.endpoint,
                product=resource.product,
            )
        except Exception as exc:  # VercelError or CryptoError: refuse, nothing changed
            failure = _short_error(exc)
        if not failure:
            now = timezone.now()
            expiry_error = ""
            if newer is not None:
                newer.stage = CredentialVersion.Stage.EXPIRED
                newer.stage_changed_at = now
                newer.save(update_fields=["stage", "stage_changed_at"])
            previous.stage = CredentialVersion.Stage.CURRENT
            previous.stage_changed_at = now
            previous.save(update_fields=["stage", "stage_changed_at"])
            if newer is not None:
                try:
                    get_provider().expire(resource=resource, version=newer)
                    newer.expired_at = now
                    newer.wipe()
                    newer.save(update_fields=["expired_at", "secrets_encrypted", "key_id"])
                except Exception as exc:  # keep the newer set valid and visible
                    expiry_error = _short_error(exc)
                    newer.stage = CredentialVersion.Stage.PREVIOUS
                    newer.save(update_fields=["stage"])
            rotation.state = State.ROLLED_BACK
            rotation.state_changed_at = now
            rotation.next_attempt_at = None
            rotation.last_error = (
                f"Rolled back; expiring the newer credentials failed: {expiry_error}"
                if expiry_error
                else ""
            )
            rotation.save(
                update_fields=["state", "state_changed_at", "next_attempt_at", "last_error"]
            )
            Reminder.objects.filter(
                rotation=rotation, status__in=[Reminder.Status.SCHEDULED, Reminder.Status.FAILED]
            ).update(status=Reminder.Status.CANCELLED)
            audit_record(
                action=AuditAction.ROTATION_ROLLED_BACK,
                actor=actor,
                request=request,
                resource=resource,
                rotation=rotation,
                reason=reason,
                details={
                    "restored_version": str(previous.pk),
                    "newer_version": str(newer.pk) if newer else None,
                    "newer_expired": bool(newer) and not expiry_error,
                    "expiry_error": expiry_error,
                },
            )
            return rotation
    with transaction.atomic():
        audit_record(
            action=AuditAction.ROTATION_ROLLED_BACK,
            outcome=AuditEvent.Outcome.FAILURE,
            actor=actor,
            request=request,
            resource=rotation.resource,
            rotation=rotation,
            reason=reason,
            details={"error": failure},
        )
    raise RedeployRefused(f"Roll back failed, nothing changed: {failure}")


# ---------------------------------------------------------------------------------------
# Webhook events
# ---------------------------------------------------------------------------------------


class WebhookInvalid(Exception):
    """The event is not a Vercel webhook envelope we can read (answer 400)."""


def _event_time(event: dict) -> datetime | None:
    created = event.get("createdAt")
    if isinstance(created, bool) or not isinstance(created, int | float):
        return None
    try:
        return datetime.fromtimestamp(created / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _event_resources(payload: dict) -> list[Resource]:
    """Resources named by the event: integrations[].resources[] or payload.resource.id."""
    pairs: list[tuple[str, str]] = []
    for integration in _list(payload.get("integrations")):
        integration = _dict(integration)
        installation_id = _str(integration.get("installationId"))
        for item in _list(integration.get("resources")):
            resource_id = _str(_dict(item).get("externalResourceId"))
            if installation_id and resource_id:
                pairs.append((installation_id, resource_id))
    resource_id = _str(_dict(payload.get("resource")).get("id")) or _str(payload.get("resourceId"))
    if resource_id and not pairs:
        installation_id = (
            _str(_dict(payload.get("configuration")).get("id"))
            or _str(payload.get("installationId"))
            or next(
                (
                    _str(_dict(i).get("installationId"))
                    for i in _list(payload.get("integrations"))
                    if _str(_dict(i).get("installationId"))
                ),
                "",
            )
        )
        pairs.append((installation_id, resource_id))
    found: list[Resource] = []
    for installation_id, resource_id in pairs:
        matches = Resource.objects.filter(vercel_id=resource_id).select_related("installation")
        if installation_id:
            matches = matches.filter(installation__vercel_id=installation_id)
        elif matches.count() > 1:
            continue  # ambiguous without the installation
        found.extend(r for r in matches if r not in found)
    return found


def _project_id(payload: dict) -> str:
    return _str(_dict(payload.get("project")).get("id")) or _str(payload.get("projectId"))


def _handle_deployment(event: dict, payload: dict, occurred_at: datetime | None) -> str:
    project_id = _project_id(payload)
    if not project_id:
        return "no project id"
    if occurred_at is None:
        return "no createdAt: cannot tell whether the deployment followed the push"
    resources = _event_resources(payload)
    if not resources:
        return "no resource of ours"
    outcomes: list[str] = []
    for resource in resources:
        outcomes += rotation_mark_project_redeployed(
            resource=resource,
            project_id=project_id,
            deployed_at=occurred_at,
            deployment_id=_str(_dict(payload.get("deployment")).get("id")),
            target=_str(payload.get("target")),
            event_id=_str(event.get("id")),
        )
    return "; ".join(outcomes)


def _handle_connection(event: dict, payload: dict, occurred_at: datetime | None) -> str:
    project_id = _project_id(payload)
    resources = _event_resources(payload)
    if not project_id or not resources:
        return "no project id or no resource of ours"
    service = (
        project_connected
        if event["type"] == "integration-resource.project-connected"
        else project_disconnected
    )
    return "; ".join(
        service(
            resource=resource,
            project_id=project_id,
            occurred_at=occurred_at,
            event_id=_str(event.get("id")),
        )
        for resource in resources
    )


def _handle_removed(event: dict, payload: dict, occurred_at: datetime | None) -> str:
    installation_id = _str(_dict(payload.get("configuration")).get("id"))
    installation = Installation.objects.filter(vercel_id=installation_id).first()
    if installation is None:
        return f"installation {installation_id or '?'} is not ours"
    return installation_removed(
        installation=installation, occurred_at=occurred_at, event_id=_str(event.get("id"))
    )


HANDLERS = {
    "deployment.succeeded": _handle_deployment,
    "deployment.ready": _handle_deployment,
    "integration-resource.project-connected": _handle_connection,
    "integration-resource.project-disconnected": _handle_connection,
    "integration-configuration.removed": _handle_removed,
}
# Recorded (for `deployment.created` times) but otherwise ignored.
RECORDED_ONLY = {"deployment.created"}


def webhook_event_handle(*, event: Any, request: HttpRequest | None = None) -> str:
    """Record a verified delivery once by event id and apply it; returns what happened."""
    if not isinstance(event, dict):
        raise WebhookInvalid("the body is not a JSON object")
    event_id, event_type = _str(event.get("id")), _str(event.get("type"))
    if not event_id or not event_type or len(event_id) > 128:
        raise WebhookInvalid("the event needs a string id and type")
    payload = _dict(event.get("payload"))
    occurred_at = _event_time(event)
    handler = HANDLERS.get(event_type)
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = WebhookEvent.objects.create(
                    event_id=event_id,
                    type=event_type[:64],
                    occurred_at=occurred_at,
                    deployment_id=_str(_dict(payload.get("deployment")).get("id"))[:64],
                    payload=event,
                    status=(
                        WebhookEvent.Status.PROCESSED if handler else WebhookEvent.Status.IGNORED
                    ),
                )
        except IntegrityError:
            return "duplicate"
        if handler is None:
            return "ignored"
        # A failure rolls everything back (the event row too), so a redelivery retries it.
        result = handler(event, payload, occurred_at)
        record.result = result[:2000]
        record.save(update_fields=["result"])
        audit_record(
            action=AuditAction.WEBHOOK_RECEIVED,
            actor_type=VERCEL,
            request=request,
            details={"event": event_id, "type": event_type, "result": result[:2000]},
        )
    return result
