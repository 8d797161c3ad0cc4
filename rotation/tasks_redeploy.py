"""django-q2 tasks for redeploy tracking and rollbacks: thin, ids only, results are counts.

One periodic schedule (created by migration 0003_redeploy) runs `redeploy_tick` every minute.
"""

from __future__ import annotations

import time
import uuid

from rotation import redeploy, services, vercel
from rotation.models import Rotation
from rotation.providers.retirement import versions_retire, versions_retire_due
from rotation.services.task_results import task_results_prune
from rotation.services.vercel_request import idempotency_keys_prune


def redeploy_tick() -> dict[str, int]:
    """Send due reminders, escalate overdue rotations, expire old credentials that are due,
    retry retiring credential versions whose expiry at the provider did not go through, forget
    Vercel's Idempotency-Keys past their retention, and prune stored webhook deliveries past
    theirs and successful task results beyond those kept."""
    return {
        "reminders_sent": redeploy.reminders_send_due(),
        "escalated": redeploy.rotations_escalate_due(),
        "expired": redeploy.rotations_expire_due(),
        "retired": versions_retire_due(),
        "idempotency_keys_pruned": idempotency_keys_prune(),
        "webhook_events_pruned": redeploy.webhook_events_prune(),
        "task_results_pruned": task_results_prune(),
    }


def rotation_expire_old_task(rotation_id: int) -> bool:
    """Expire one rotation's old credentials now (emergency rotations, right after the push)."""
    rotation = Rotation.objects.filter(pk=rotation_id).first()
    if rotation is None:
        return False
    return redeploy.rotation_expire_old(rotation=rotation)


def rotation_rollback_task(rotation_id: int) -> bool:
    """Carry out a requested rollback over the shared HTTP session; True once rolled back."""
    deadline = time.monotonic() + services.chunk_budget()
    state = services.rotation_rollback_run(
        rotation_id=rotation_id, session=vercel.default_session(), deadline=deadline
    )
    return state == Rotation.State.ROLLED_BACK


def versions_retire_task(version_ids: list[str]) -> int:
    """Expire retiring credential versions at the provider (queued by staff cancellations);
    returns how many expired. Ids only: versions still retiring are retried by the tick."""
    return len(versions_retire(version_ids=[uuid.UUID(pk) for pk in version_ids]).expired)
