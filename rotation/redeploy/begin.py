"""The start of redeploy tracking, when a push lands: projects to wait for, deadline, and when
the first reminder falls due (its row is made then, by the redeploy tick)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from rotation.models import ConnectedProject, RedeployCheck, Rotation
from rotation.redeploy.expiry import expiry_enqueue_after_commit
from rotation.redeploy.reminders import reminders_plan


def rotations_redeploy_begin(
    *, rotations: list[Rotation], also: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Snapshot the projects to wait for, set deadlines and plan reminders; idempotent.

    `also`: more fields to set on every one of the rotations, written by the same statements
    (the push's new state: each rotation row is written once, not twice).

    Reminder rows are not made here: `next_reminder_at` says when the first falls due, and
    the redeploy tick makes each row then (`reminders_create_due`), so a push writes no more
    than a few rows per rotation.

    Runs inside the push's record transaction, on a group of just-pushed rotations, with a
    fixed number of queries. Returns each rotation's plan (projects, deadline, reminders),
    which the push writes into its `rotation.pushed` event: one event per pushed rotation.
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
    # reminders_plan reads the rotation's emergency and Vercel delay, the push time and the
    # deadline: a group pushed together mostly shares one plan.
    steps_of: dict[tuple[Any, ...], tuple[list[str], datetime | None]] = {}
    # Rotations by the fields to write and their values: one statement each, mostly one.
    changed: dict[tuple[tuple[str, datetime | None], ...], list[int]] = defaultdict(list)
    plans: list[dict[str, Any]] = []
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
        fields: dict[str, datetime | None] = {}
        if rotation.expire_old_after_push is not None and rotation.keep_old_until is None:
            # Vercel redeploys the linked projects itself: the old credentials expire when
            # Vercel's delay has passed, and that is also the rotation's deadline.
            rotation.keep_old_until = pushed_at + rotation.expire_old_after_push
            rotation.redeploy_deadline_at = rotation.keep_old_until
            fields["keep_old_until"] = rotation.keep_old_until
            fields["redeploy_deadline_at"] = rotation.redeploy_deadline_at
        if rotation.redeploy_deadline_at is None:
            rotation.redeploy_deadline_at = pushed_at + timedelta(
                days=settings.ROTATION_REDEPLOY_GRACE_DAYS
            )
            fields["redeploy_deadline_at"] = rotation.redeploy_deadline_at
        deadline = rotation.redeploy_deadline_at
        alike = (rotation.emergency, rotation.expire_old_after_push is None, pushed_at, deadline)
        if alike not in steps_of:
            planned = reminders_plan(rotation, pushed_at=pushed_at, deadline=deadline)
            steps_of[alike] = (
                [r.step for r in planned],
                min((r.due_at for r in planned), default=None),
            )
        steps, rotation.next_reminder_at = steps_of[alike]
        fields["next_reminder_at"] = rotation.next_reminder_at
        changed[tuple(sorted(fields.items()))].append(rotation.pk)
        plan: dict[str, Any] = {
            "projects": sorted(p.project_id for p in projects),
            "deadline": deadline.isoformat(),
            "emergency": rotation.emergency,
            "reminders": list(steps),
        }
        if rotation.expire_old_after_push is not None and rotation.keep_old_until:
            plan["keep_old_until"] = rotation.keep_old_until.isoformat()
        plans.append(plan)
    RedeployCheck.objects.bulk_create(checks, ignore_conflicts=True)
    for values, pks in changed.items():
        Rotation.objects.filter(pk__in=pks).update(**dict(values), **(also or {}))
    for rotation in rotations:
        vercel_delay_over = rotation.keep_old_until is not None and (
            rotation.expire_old_after_push is not None and rotation.keep_old_until <= now
        )
        if rotation.emergency or vercel_delay_over:
            expiry_enqueue_after_commit(rotation.pk)
    return plans
