"""django-q2 tasks for the Marketplace surfaces: installation token rotation, the inventory
check and the dashboard notification. Thin: ids in, counts or steps out, never a token."""

from __future__ import annotations

from rotation import vercel
from rotation.redeploy.notification import (
    rotation_notification_sync,
    rotations_notification_sync,
)
from rotation.services.installation_tokens import installation_token_advance
from rotation.services.inventory import inventory_check, inventory_check_run

INVENTORY_SCHEDULE_NAME = "rotation: daily inventory check against Vercel"


def installation_token_rotate(installation_id: int) -> str:
    """Run an installation's token rotation to its end; returns the step it stopped at."""
    return installation_token_advance(
        installation_id=installation_id, session=vercel.default_session()
    )


def inventory_check_all() -> int:
    """The daily schedule: check every installation; returns the report id."""
    return inventory_check(installation_ids=None, source="schedule", actor=None, origin=None).pk


def inventory_check_report(report_id: int) -> int:
    """Run a check staff asked for in the admin; returns how many differences it found."""
    return inventory_check_run(report_id=report_id, session=vercel.default_session()).differences


def rotation_notification(rotation_id: int) -> str:
    """Set or clear a rotation's dashboard notification (tasks queued before groups were)."""
    return rotation_notification_sync(rotation_id=rotation_id, session=vercel.default_session())


def rotation_notifications(rotation_ids: list[int]) -> list[str]:
    """Set or clear the dashboard notifications of a group of rotations; returns their states."""
    states = rotations_notification_sync(
        rotation_ids=rotation_ids, session=vercel.default_session()
    )
    return [states[pk] for pk in sorted(states)]
