"""django-q2 tasks for redeploy tracking: thin, ids only, results are counts.

One periodic schedule (created by migration 0003_redeploy) runs `redeploy_tick` every minute.
"""

from __future__ import annotations

from rotation import redeploy
from rotation.models import Rotation


def redeploy_tick() -> dict[str, int]:
    """Send due reminders, escalate overdue rotations, expire old credentials that are due."""
    return {
        "reminders_sent": redeploy.reminders_send_due(),
        "escalated": redeploy.rotations_escalate_due(),
        "expired": redeploy.rotations_expire_due(),
    }


def rotation_expire_old_task(rotation_id: int) -> bool:
    """Expire one rotation's old credentials now (emergency rotations, right after the push)."""
    rotation = Rotation.objects.filter(pk=rotation_id).first()
    if rotation is None:
        return False
    return redeploy.rotation_expire_old(rotation=rotation)
