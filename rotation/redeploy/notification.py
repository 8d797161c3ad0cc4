"""The warning on a resource in the customer's Vercel dashboard (CONTRACT §9): set after a
push ("new credentials are in place: redeploy"), cleared when the rotation completes, is
rolled back or is cancelled.

It never blocks a rotation: the hooks only record what is wanted, after the rotation's
transaction commits, and queue tasks of up to GROUP rotation ids (ids only; one task per
rotation cost more than its PATCH). A task claims its rotations in one transaction, PATCHes
each resource outside any transaction (a few in flight: Vercel shows the notification per
resource, CONTRACT §9, so there is one PATCH per rotation), and records the outcomes in one
more; a transient error is retried with backoff (the sweeper re-queues due retries), a
permanent one or too many attempts leave it `failed`, with the error on the rotation page.
Every outcome is audited, one event per rotation. The PATCHes keep the installation's
notification pace (`NotificationPace`, rotation.services.pace): Vercel limits this endpoint
apart from the pushes'; while a 429's pause lasts none is sent, and each waits for its end.

Text and link come from `VERCEL_NOTIFICATION_TITLE`, `..._MESSAGE` and `..._HREF`, templates
with `{variables}` (the resource's variable names), `{resource}` (its name),
`{resource_id}`, `{installation_id}` and `{deadline}` (the redeploy deadline, or "").
"""

from __future__ import annotations

import logging
import random
import string
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django_q.tasks import async_task

from rotation import vercel
from rotation.audit import AuditAction, audit_record, audit_record_many
from rotation.crypto import CryptoError
from rotation.error_text import error_text
from rotation.models import AuditEvent, Rotation
from rotation.selectors import chunked
from rotation.services.pace import (
    NOTIFICATION_PACER,
    Pacer,
    threads_may_query,
)

if TYPE_CHECKING:
    import requests

logger = logging.getLogger(__name__)
Notification = Rotation.Notification
TASK = "rotation.tasks_marketplace.rotation_notifications"
# Rotations per task: a push records its successes in groups of 50 (rotation.services.push).
GROUP = 50
SET, CLEAR = "set", "clear"
PENDING = (Notification.SETTING, Notification.CLEARING)
# Once shown (or being shown, or failed while showing): these need clearing at the end.
SHOWN = (Notification.SETTING, Notification.SET, Notification.FAILED)
BACKOFF_MAX = 300.0


def _enqueue(rotation_ids: list[int]) -> None:
    # One transaction: the ORM broker then closes no connection per task (it does outside
    # one), so the worker's next query does not reconnect with a cold cache.
    with transaction.atomic():
        for group in chunked(sorted(rotation_ids), GROUP):
            async_task(TASK, group, task_name=f"notifications-{group[0]}")


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
    with transaction.atomic():
        rotations = Rotation.objects.select_for_update().filter(pk__in=rotation_ids)
        if wanted == CLEAR:
            # Nothing to clear where nothing was shown (and a failed clear stays failed).
            rotations = rotations.filter(notification_state__in=SHOWN).exclude(
                notification_wanted=CLEAR
            )
        ids = list(rotations.values_list("pk", flat=True))
        Rotation.objects.filter(pk__in=ids).update(**notification_fields(wanted))
        if ids:
            transaction.on_commit(partial(_enqueue, ids))
    return ids


def notification_fields(wanted: str) -> dict[str, Any]:
    """The rotation fields that ask for the notification to be set (or cleared)."""
    return {
        "notification_wanted": wanted,
        "notification_state": Notification.SETTING if wanted == SET else Notification.CLEARING,
        "notification_attempts": 0,
        "notification_error": "",
        "notification_next_attempt_at": timezone.now() + _stuck_after(),
    }


def notifications_set_after_commit(rotation_ids: list[int]) -> None:
    """Queue the tasks that set these rotations' notifications once the caller's transaction
    commits; the caller holds their locks and wrote `notification_fields(SET)` in it (one
    transaction fewer per pushed group than `notifications_after_commit`)."""
    if rotation_ids:
        # robust: a failure here is logged and never undoes or fails the pushes; the
        # rotations stay `setting`, which the sweeper re-queues once due.
        transaction.on_commit(partial(_enqueue, list(rotation_ids)), robust=True)


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


def _claim(rotation_ids: list[int]) -> list[Rotation]:
    """The rotations whose notification waits, each leased: the sweeper re-queues it once
    the lease runs out (its worker died)."""
    with transaction.atomic():
        rotations = list(
            Rotation.objects.select_for_update(of=("self",))
            .select_related("resource__installation")
            .filter(pk__in=rotation_ids, notification_state__in=PENDING)
            .order_by("pk")
        )
        Rotation.objects.filter(pk__in=[rotation.pk for rotation in rotations]).update(
            notification_next_attempt_at=timezone.now() + _stuck_after()
        )
    return rotations


class _Paused(Exception):
    """The installation's notifications wait out Vercel's rate limit: no PATCH was sent."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"paused for {wait:.1f}s")
        self.wait = wait


def _patch(
    rotation: Rotation, *, session: requests.Session | None, pacer: Pacer
) -> tuple[dict[str, str] | None, Exception | None]:
    """One resource's PATCH in a slot of the installation's notification pace (it may run in
    a thread of `_patch_all`: no database access but the pace's own)."""
    installation = rotation.resource.installation
    paused = pacer.acquire(installation.pk)
    if paused:
        return None, _Paused(paused)
    accepted, rate_limit = False, None
    try:
        note = notification_text(rotation) if rotation.notification_wanted == SET else None
        rate_limit = vercel.update_resource(
            installation_id=installation.vercel_id,
            resource_id=rotation.resource.vercel_id,
            token=installation.access_token(),
            fields={"notification": note},
            session=session,
        )
        accepted = True
    except (vercel.VercelError, CryptoError) as exc:
        if isinstance(exc, vercel.VercelError) and exc.status == 429:
            # Every worker's notifications for this token wait, not only this one's.
            wait = exc.retry_after or _backoff(rotation.notification_attempts + 1)
            pacer.rate_limited(installation.pk, wait=wait)
        return None, exc
    finally:
        pacer.release(installation.pk, accepted=accepted, rate_limit=rate_limit)
    return note, None


def _threads(count: int) -> int:
    """Threads for `count` PATCHes; 0: in this thread (`threads_may_query`)."""
    threads = min(
        settings.ROTATION_PUSH_CONCURRENCY, settings.ROTATION_PUSH_PER_INSTALLATION, count
    )
    return threads if threads > 1 and threads_may_query() else 0


def _patch_all(
    rotations: list[Rotation], *, session: requests.Session | None, pacer: Pacer
) -> list[tuple[dict[str, str] | None, Exception | None]]:
    """Every rotation's PATCH, a few in flight; the outcomes in the rotations' order. An
    error no PATCH outcome covers (the database, say) is raised here, as in this thread."""
    threads = _threads(len(rotations))
    if not threads:
        return [_patch(rotation, session=session, pacer=pacer) for rotation in rotations]
    outcomes: dict[int, tuple[dict[str, str] | None, Exception | None]] = {}
    raised: list[BaseException] = []
    waiting = iter(enumerate(rotations))
    taking = threading.Lock()

    def work() -> None:
        try:
            while not raised:
                with taking:
                    index, rotation = next(waiting, (-1, None))
                if rotation is None:
                    return
                outcomes[index] = _patch(rotation, session=session, pacer=pacer)
        except BaseException as exc:  # raised again in the caller's thread
            raised.append(exc)
        finally:
            connection.close()  # this thread's own connection

    pool = [threading.Thread(target=work, name="notify", daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if raised:
        raise raised[0]
    return [outcomes[index] for index in range(len(rotations))]


def rotations_notification_sync(
    *,
    rotation_ids: list[int],
    session: requests.Session | None = None,
    pacer: Pacer = NOTIFICATION_PACER,
) -> dict[int, str]:
    """Set or clear these rotations' dashboard notifications; returns their states."""
    rotations = _claim(rotation_ids)
    outcomes = _patch_all(rotations, session=session, pacer=pacer)
    states = dict(
        Rotation.objects.filter(pk__in=rotation_ids).values_list("pk", "notification_state")
    )
    done = [(r, note) for r, (note, error) in zip(rotations, outcomes, strict=True) if not error]
    states.update(_record_done(done))
    paused = [
        (r, error)
        for r, (_, error) in zip(rotations, outcomes, strict=True)
        if isinstance(error, _Paused)
    ]
    if paused:
        _record_paused(paused)
    for rotation, (_, error) in zip(rotations, outcomes, strict=True):
        if error is not None and not isinstance(error, _Paused):
            states[rotation.pk] = _record_failure(
                rotation.pk, wanted=rotation.notification_wanted, error=error
            )
    return states


def rotation_notification_sync(*, rotation_id: int, session: requests.Session | None = None) -> str:
    """`rotations_notification_sync` for one rotation; returns its state."""
    states = rotations_notification_sync(rotation_ids=[rotation_id], session=session)
    if rotation_id not in states:
        raise Rotation.DoesNotExist(f"rotation {rotation_id} does not exist")
    return states[rotation_id]


def _record_done(sent: list[tuple[Rotation, dict[str, str] | None]]) -> dict[int, str]:
    """Record the PATCHes Vercel took, where the same change is still wanted."""
    if not sent:
        return {}
    with transaction.atomic():
        locked = {
            rotation.pk: rotation
            for rotation in Rotation.objects.select_for_update(of=("self",))
            .select_related("resource__installation")
            .filter(pk__in=[rotation.pk for rotation, _ in sent])
            .order_by("pk")
        }
        states = {pk: rotation.notification_state for pk, rotation in locked.items()}
        recorded: dict[str, list[int]] = {SET: [], CLEAR: []}
        entries: list[dict[str, Any]] = []
        for claimed, note in sent:
            rotation = locked[claimed.pk]
            wanted = claimed.notification_wanted
            if rotation.notification_wanted != wanted or rotation.notification_state not in PENDING:
                continue  # asked otherwise meanwhile: that task records
            recorded[wanted].append(rotation.pk)
            states[rotation.pk] = Notification.SET if wanted == SET else Notification.CLEARED
            details: dict[str, Any] = {"attempts": rotation.notification_attempts + 1}
            if note is not None:
                details.update(level=note["level"], title=note["title"])
            entries.append(
                {
                    "action": AuditAction.NOTIFICATION_SET
                    if wanted == SET
                    else AuditAction.NOTIFICATION_CLEARED,
                    "resource": rotation.resource,
                    "rotation": rotation,
                    "details": details,
                }
            )
        for wanted, ids in recorded.items():
            Rotation.objects.filter(pk__in=ids).update(
                notification_state=Notification.SET if wanted == SET else Notification.CLEARED,
                notification_error="",
                notification_next_attempt_at=None,
            )
        audit_record_many(entries)
    return states


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


def _record_paused(paused: list[tuple[Rotation, _Paused]]) -> None:
    """No PATCH went out: the installation waits out Vercel's rate limit. Due again when the
    pause ends (the sweeper re-queues it), with no attempt counted and nothing audited, since
    nothing was asked of Vercel; the 429 that began the pause was audited with its rotation."""
    now = timezone.now()
    with transaction.atomic():
        for rotation, error in paused:
            Rotation.objects.filter(
                pk=rotation.pk,
                notification_wanted=rotation.notification_wanted,
                notification_state__in=PENDING,
            ).update(notification_next_attempt_at=now + timedelta(seconds=error.wait))


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
        if ids:
            transaction.on_commit(partial(_enqueue, ids))
    return ids
