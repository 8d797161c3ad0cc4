"""The sweeper's rules: which rotations lost their task or are due for another attempt."""

from __future__ import annotations

import logging
from datetime import datetime
from functools import partial

from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from django_q.brokers import get_broker

from rotation.audit import AuditAction, audit_record
from rotation.models import Rotation
from rotation.redeploy.notification import notifications_requeue
from rotation.selectors import IN_CHUNK, chunked
from rotation.services.enqueue import rotations_enqueue_after_commit
from rotation.services.installation_tokens import installation_tokens_requeue
from rotation.services.rollback import rollback_enqueue
from rotation.services.timing import stuck_after

logger = logging.getLogger(__name__)
State = Rotation.State


def _queue_is_empty() -> bool:
    try:
        return get_broker().queue_size() == 0
    except Exception:  # a broker that cannot count: assume tasks may be lost
        logger.warning("sweeper: cannot read the broker's queue size")
        return True


def _locked_ids(rotations: QuerySet[Rotation]) -> set[int]:
    """The ids, each row locked until the commit; rows another transaction holds are skipped
    (a worker is claiming them). SQLite has no row locks: its writers are serialized."""
    locked = rotations.select_for_update(skip_locked=True, of=("self",))
    return set(locked.values_list("pk", flat=True))


def rotations_requeue_stuck(*, now: datetime | None = None) -> list[int]:
    """Re-queue rotations whose task was lost or whose retry is due; returns their ids.

    - pushing with `next_attempt_at` due: waiting out a transient error, now due (at most once
      per `stuck_after()` while the task waits in the queue);
    - preparing/pushing untouched for longer than a task may live: the worker died;
    - preparing whose provider lease (`next_attempt_at`) ran out: the worker died while the
      provider made its credentials;
    - requested for longer than that while the queue is empty: the task was lost (a long
      queue may legitimately hold them, so then they are left alone);
    - a requested rollback that is due again (lease ran out, or a transient error waited
      out), or that no task claimed for that long while the queue is empty.
    """
    now = now or timezone.now()
    stale = now - stuck_after()
    # Asked before the transaction: a broker round trip must not hold row locks.
    queue_empty = _queue_is_empty()
    with transaction.atomic():
        # The candidates are locked (skipping rows a worker is claiming right now), so a
        # lease a worker takes after this read cannot be cleared by the writes below.
        # Deferring sets state_changed_at before next_attempt_at; re-queueing sets it after.
        due = Rotation.objects.filter(state=State.PUSHING, next_attempt_at__lte=now).filter(
            Q(state_changed_at__lt=F("next_attempt_at")) | Q(state_changed_at__lte=stale)
        )
        dead = Rotation.objects.filter(
            state__in=[State.PREPARING, State.PUSHING],
            next_attempt_at__isnull=True,
            state_changed_at__lte=stale,
        )
        lapsed = Rotation.objects.filter(state=State.PREPARING, next_attempt_at__lte=now)
        ids = _locked_ids(due) | _locked_ids(dead) | _locked_ids(lapsed)
        if queue_empty:
            ids |= _locked_ids(
                Rotation.objects.filter(state=State.REQUESTED, state_changed_at__lte=stale)
            )
        ids_sorted = sorted(ids)
        for chunk in chunked(ids_sorted, IN_CHUNK):
            # Dead pushes become due now, so `_claim` accepts them.
            Rotation.objects.filter(
                pk__in=chunk, state=State.PUSHING, next_attempt_at__isnull=True
            ).update(next_attempt_at=now)
            # A lapsed provider lease is free again for the next prepare.
            Rotation.objects.filter(pk__in=chunk, state=State.PREPARING).update(
                next_attempt_at=None
            )
            Rotation.objects.filter(pk__in=chunk).update(state_changed_at=now)
        rollbacks = _rollbacks_requeue(now=now, stale=stale, queue_empty=queue_empty)
        if ids_sorted or rollbacks:
            audit_record(
                action=AuditAction.ROTATION_REQUEUED,
                details={"rotations": ids_sorted, "rollbacks": rollbacks},
            )
        rotations_enqueue_after_commit(ids_sorted, group="sweeper")
    return sorted(ids | set(rollbacks))


def _rollbacks_requeue(*, now: datetime, stale: datetime, queue_empty: bool) -> list[int]:
    """Pending rollbacks to queue again; their lease is cleared so the new task may claim."""
    pending = Rotation.objects.filter(
        state__in=Rotation.WAITING_STATES, rollback_queued_at__isnull=False
    )
    wanted = Q(next_attempt_at__lte=now)
    if queue_empty:
        wanted |= Q(next_attempt_at__isnull=True, rollback_queued_at__lte=stale)
    ids = sorted(_locked_ids(pending.filter(wanted)))
    # Re-queued now: not again before `stuck_after()` unless the queue holds it that long.
    Rotation.objects.filter(pk__in=ids).update(next_attempt_at=None, rollback_queued_at=now)
    for rotation_id in ids:
        transaction.on_commit(partial(rollback_enqueue, rotation_id))
    return ids


def marketplace_requeue_due(*, now: datetime | None = None) -> int:
    """Resume token rotations and dashboard notifications that are due or lost their task."""
    return len(installation_tokens_requeue(now=now)) + len(notifications_requeue(now=now))
