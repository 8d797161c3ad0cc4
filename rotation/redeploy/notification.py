"""The warning on a resource in the customer's Vercel dashboard (CONTRACT §9): set after a
push ("new credentials are in place: redeploy"), cleared when the rotation completes, is
rolled back or is cancelled.

It never blocks a rotation: the hooks only record what is wanted, after the rotation's
transaction commits, and queue a task (ids only). The task PATCHes the resource outside any
transaction and records the outcome; a transient error is retried with backoff (the sweeper
re-queues due retries), a permanent one or too many attempts leave it `failed`, with the
error on the rotation page. Every outcome is audited.

Text and link come from `VERCEL_NOTIFICATION_TITLE`, `..._MESSAGE` and `..._HREF`, templates
with `{variables}` (the resource's variable names), `{resource}` (its name),
`{resource_id}`, `{installation_id}` and `{deadline}` (the redeploy deadline, or "").
"""

from __future__ import annotations

import logging
import random
import string
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from rotation import vercel
from rotation.audit import AuditAction, audit_record
from rotation.crypto import CryptoError
from rotation.error_text import error_text
from rotation.models import AuditEvent, Rotation

if TYPE_CHECKING:
    import requests

logger = logging.getLogger(__name__)
Notification = Rotation.Notification
TASK = "rotation.tasks_marketplace.rotation_notification"
SET, CLEAR = "set", "clear"
PENDING = (Notification.SETTING, Notification.CLEARING)
# Once shown (or being shown, or failed while showing): these need clearing at the end.
SHOWN = (Notification.SETTING, Notification.SET, Notification.FAILED)
BACKOFF_MAX = 300.0


def _enqueue(rotation_id: int) -> None:
    async_task(TASK, rotation_id, task_name=f"notification-{rotation_id}")


def notifications_after_commit(rotation_ids: Iterable[int], *, wanted: str) -> None:
    """After the caller's transaction commits, set (or clear) these rotations' notifications."""
    ids = list(rotation_ids)
    if ids and wanted == CLEAR:
        # Most rotations never showed one (cancelled before the push): nothing to queue.
        ids = list(
            Rotation.objects.filter(pk__in=ids, notification_state__in=SHOWN).values_list(
                "pk", flat=True
            )
        )
    if ids:
        # robust: a failure here is logged and never undoes or fails the rotation's change.
        transaction.on_commit(partial(notifications_request, ids, wanted=wanted), robust=True)


def notifications_request(rotation_ids: list[int], *, wanted: str) -> list[int]:
    """Record what is wanted and queue the tasks; returns the rotations queued."""
    now = timezone.now()
    with transaction.atomic():
        rotations = Rotation.objects.select_for_update().filter(pk__in=rotation_ids)
        if wanted == CLEAR:
            # Nothing to clear where nothing was shown (and a failed clear stays failed).
            rotations = rotations.filter(notification_state__in=SHOWN).exclude(
                notification_wanted=CLEAR
            )
        ids = list(rotations.values_list("pk", flat=True))
        Rotation.objects.filter(pk__in=ids).update(
            notification_wanted=wanted,
            notification_state=Notification.SETTING if wanted == SET else Notification.CLEARING,
            notification_attempts=0,
            notification_error="",
            notification_next_attempt_at=now + _stuck_after(),
        )
        for rotation_id in ids:
            transaction.on_commit(partial(_enqueue, rotation_id))
    return ids


def _stuck_after() -> timedelta:
    return timedelta(seconds=settings.ROTATION_STUCK_AFTER_SECONDS)


def _render(template: str, values: dict[str, str], setting: str) -> str:
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    unknown = sorted(fields - set(values))
    if unknown:
        raise vercel.VercelError(
            status=None,
            code="invalid_request",
            message=f"{setting} uses unknown placeholder(s) {', '.join(unknown)}",
            permanent=True,
        )
    # Only plain names were found above: no attribute or index lookups reach `format`.
    return template.format(**values)


def notification_text(rotation: Rotation) -> dict[str, str]:
    """The notification for a pushed rotation, from the configured templates."""
    resource = rotation.resource
    names = [f"{item.get('prefix') or ''}{item['name']}" for item in resource.secret_template]
    deadline = rotation.redeploy_deadline_at
    values = {
        "variables": ", ".join(names) or "the resource's variables",
        "resource": resource.name,
        "resource_id": resource.vercel_id,
        "installation_id": resource.installation.vercel_id,
        "deadline": deadline.strftime("%Y-%m-%d") if deadline else "",
    }
    return vercel.notification_body(
        level="warn",
        title=_render(settings.VERCEL_NOTIFICATION_TITLE, values, "VERCEL_NOTIFICATION_TITLE"),
        message=_render(
            settings.VERCEL_NOTIFICATION_MESSAGE, values, "VERCEL_NOTIFICATION_MESSAGE"
        ),
        href=_render(settings.VERCEL_NOTIFICATION_HREF, values, "VERCEL_NOTIFICATION_HREF"),
    )


def _claim(rotation_id: int) -> Rotation | None:
    with transaction.atomic():
        rotation = (
            Rotation.objects.select_for_update(of=("self",))
            .select_related("resource__installation")
            .filter(pk=rotation_id, notification_state__in=PENDING)
            .first()
        )
        if rotation is None:
            return None
        # A worker that dies is noticed by the sweeper after this.
        rotation.notification_next_attempt_at = timezone.now() + _stuck_after()
        rotation.save(update_fields=["notification_next_attempt_at"])
    return rotation


def rotation_notification_sync(*, rotation_id: int, session: requests.Session | None = None) -> str:
    """Set or clear the rotation's dashboard notification; returns its state."""
    rotation = _claim(rotation_id)
    if rotation is None:
        return Rotation.objects.values_list("notification_state", flat=True).get(pk=rotation_id)
    wanted = rotation.notification_wanted
    resource = rotation.resource
    try:
        note: dict[str, str] | None = notification_text(rotation) if wanted == SET else None
        vercel.update_resource(
            installation_id=resource.installation.vercel_id,
            resource_id=resource.vercel_id,
            token=resource.installation.access_token(),
            fields={"notification": note},
            session=session,
        )
    except (vercel.VercelError, CryptoError) as exc:
        return _record_failure(rotation_id, wanted=wanted, error=exc)
    return _record_done(rotation_id, wanted=wanted, note=note)


def _record_done(rotation_id: int, *, wanted: str, note: dict[str, str] | None) -> str:
    with transaction.atomic():
        rotation = Rotation.objects.select_for_update(of=("self",)).get(pk=rotation_id)
        if rotation.notification_wanted != wanted or rotation.notification_state not in PENDING:
            return rotation.notification_state  # asked otherwise meanwhile: that task records
        rotation.notification_state = Notification.SET if wanted == SET else Notification.CLEARED
        rotation.notification_error = ""
        rotation.notification_next_attempt_at = None
        rotation.save(
            update_fields=[
                "notification_state",
                "notification_error",
                "notification_next_attempt_at",
            ]
        )
        details: dict[str, Any] = {"attempts": rotation.notification_attempts + 1}
        if note is not None:
            details.update(level=note["level"], title=note["title"])
        audit_record(
            action=AuditAction.NOTIFICATION_SET
            if wanted == SET
            else AuditAction.NOTIFICATION_CLEARED,
            resource=rotation.resource,
            rotation=rotation,
            details=details,
        )
    return rotation.notification_state


def _record_failure(rotation_id: int, *, wanted: str, error: Exception) -> str:
    transient = isinstance(error, vercel.VercelError) and not error.permanent
    now = timezone.now()
    with transaction.atomic():
        rotation = Rotation.objects.select_for_update(of=("self",)).get(pk=rotation_id)
        if rotation.notification_wanted != wanted or rotation.notification_state not in PENDING:
            return rotation.notification_state
        rotation.notification_attempts += 1
        attempts = rotation.notification_attempts
        stop = not transient or attempts >= settings.ROTATION_PUSH_MAX_ATTEMPTS
        rotation.notification_error = error_text(error)
        if stop:
            rotation.notification_state = Notification.FAILED
            rotation.notification_next_attempt_at = None
        else:
            wait = getattr(error, "retry_after", None) or _backoff(attempts)
            rotation.notification_next_attempt_at = now + timedelta(seconds=wait)
        rotation.save(
            update_fields=[
                "notification_state",
                "notification_attempts",
                "notification_error",
                "notification_next_attempt_at",
            ]
        )
        audit_record(
            action=AuditAction.NOTIFICATION_FAILED,
            outcome=AuditEvent.Outcome.FAILURE,
            resource=rotation.resource,
            rotation=rotation,
            details={
                "wanted": wanted,
                "error": rotation.notification_error,
                "attempts": attempts,
                "stopped": stop,
            },
        )
    return rotation.notification_state


def _backoff(attempts: int) -> float:
    base = settings.ROTATION_PUSH_BACKOFF_BASE * 2 ** (attempts - 1)
    return min(base, BACKOFF_MAX) * random.uniform(0.5, 1.0)


def notifications_requeue(*, now: datetime | None = None) -> list[int]:
    """Queue notifications whose retry is due or whose task was lost (the sweeper calls it)."""
    now = now or timezone.now()
    with transaction.atomic():
        due = Rotation.objects.select_for_update(skip_locked=True, of=("self",)).filter(
            notification_state__in=PENDING, notification_next_attempt_at__lte=now
        )
        ids = list(due.values_list("pk", flat=True))
        Rotation.objects.filter(pk__in=ids).update(
            notification_next_attempt_at=now + _stuck_after()
        )
        for rotation_id in ids:
            transaction.on_commit(partial(_enqueue, rotation_id))
    return ids
