"""Redeploy reminders: planned at push time, each row made when it falls due, each (rotation,
step) sent at most once.

A push only records when the first reminder falls due (`Rotation.next_reminder_at`); the
redeploy tick makes the rows that have fallen due (from the rotation's push time, deadline and
the reminder settings) and moves `next_reminder_at` on, so a batch of 10,000 pushes writes no
reminder rows, and ended or redeployed rotations never get any. The unique (rotation, step)
makes a row once however many ticks run at the same time.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from rotation.audit import AuditAction, audit_record
from rotation.error_text import error_text
from rotation.models import AuditEvent, RedeployCheck, Reminder, Rotation

# A failed email is tried again after this long (until ROTATION_REMINDER_MAX_ATTEMPTS).
RETRY_AFTER = timedelta(minutes=5)
# Rotations whose reminders are made per query, so a tick's memory stays bounded.
CREATE_BATCH = 1000


def reminders_plan(
    rotation: Rotation, *, pushed_at: datetime, deadline: datetime
) -> list[Reminder]:
    """The reminders of a pushed rotation (unsaved), from the settings: customer reminders on
    the policy days before the deadline, the escalation, and the overdue warning."""
    if rotation.emergency or rotation.expire_old_after_push is not None:
        return []  # nothing to wait for: expiry comes at once, or when Vercel asked
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


def reminders_create_due(*, now: datetime) -> None:
    """Make the reminder rows that have fallen due, and move each rotation's next due time on.

    Idempotent: rows that exist already are left as they are (sent, failed or skipped).
    """
    due = Rotation.objects.filter(next_reminder_at__lte=now)
    # Ended or redeployed: nothing left to remind anybody of.
    due.filter(~Q(state__in=Rotation.WAITING_STATES) | Q(redeployed_at__isnull=False)).update(
        next_reminder_at=None
    )
    waiting = due.filter(state__in=Rotation.WAITING_STATES, redeployed_at__isnull=True)
    while True:
        rotations = list(
            waiting.order_by("pk").only(
                "pk", "emergency", "expire_old_after_push", "pushed_at", "redeploy_deadline_at"
            )[:CREATE_BATCH]
        )
        if not rotations:
            return
        rows: list[Reminder] = []
        next_due: dict[datetime | None, list[int]] = defaultdict(list)
        for rotation in rotations:
            planned = []
            if rotation.pushed_at and rotation.redeploy_deadline_at:
                planned = reminders_plan(
                    rotation, pushed_at=rotation.pushed_at, deadline=rotation.redeploy_deadline_at
                )
            rows += [reminder for reminder in planned if reminder.due_at <= now]
            later = [reminder.due_at for reminder in planned if reminder.due_at > now]
            next_due[min(later, default=None)].append(rotation.pk)
        Reminder.objects.bulk_create(rows, ignore_conflicts=True)
        for due_at, pks in next_due.items():
            Rotation.objects.filter(pk__in=pks).update(next_reminder_at=due_at)


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
    deadline = (
        rotation.redeploy_deadline_at.strftime("%Y-%m-%d %H:%M UTC")
        if rotation.redeploy_deadline_at
        else "?"
    )
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
            + (
                f"redeployed, and at the latest on {deadline}.\n"
                if settings.ROTATION_EXPIRE_ON_DEADLINE
                else f"redeployed. Please redeploy before {deadline}.\n"
            )
        )
    else:
        late = reminder.step == "overdue"
        at_deadline = (
            "will be expired (ROTATION_EXPIRE_ON_DEADLINE)"
            if settings.ROTATION_EXPIRE_ON_DEADLINE
            else "stay valid and the rotation is escalated"
        )
        subject = (
            f"{'Overdue' if late else 'Deadline near'}: rotation #{rotation.pk} of "
            f"{resource.name} waits for redeploys"
        )
        body = (
            f"{what_changed}\n\nInstallation: {installation} <{installation.contact_email}>\n"
            f"Redeploy deadline: {deadline}{' (passed)' if late else ''}\n"
            f"Projects not yet redeployed:\n{projects}\n\n"
            f"At the deadline the old credentials {at_deadline}.\n"
            "Contact the customer, then record a confirmed redeploy or roll back in the admin.\n"
        )
    return subject, body


def _reminder_recipients(reminder: Reminder) -> list[str]:
    if reminder.kind == Reminder.Kind.CUSTOMER:
        email = reminder.rotation.resource.installation.contact_email
        return [email] if email else []
    return _escalation_recipients()


def reminders_cancel_open(*, rotation_ids: list[int]) -> None:
    """Nothing is left to remind anybody of: the rotation redeployed or ended."""
    Reminder.objects.filter(
        rotation_id__in=rotation_ids,
        status__in=[Reminder.Status.SCHEDULED, Reminder.Status.FAILED],
    ).update(status=Reminder.Status.CANCELLED)


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
            error = error_text(exc)
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
            actor_type=AuditEvent.ActorType.SYSTEM,
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
    reminders_create_due(now=now)
    open_reminders = Reminder.objects.filter(
        status__in=[Reminder.Status.SCHEDULED, Reminder.Status.FAILED]
    )
    open_reminders.exclude(rotation__state__in=Rotation.WAITING_STATES).update(
        status=Reminder.Status.CANCELLED
    )
    open_reminders.filter(rotation__redeployed_at__isnull=False).update(
        status=Reminder.Status.CANCELLED
    )
    due = list(
        open_reminders.filter(due_at__lte=now, attempts__lt=settings.ROTATION_REMINDER_MAX_ATTEMPTS)
        .filter(
            Q(status=Reminder.Status.SCHEDULED)
            | Q(status=Reminder.Status.FAILED, claimed_at__lte=now - RETRY_AFTER)
        )
        .order_by("rotation_id", "kind", "-due_at")
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
