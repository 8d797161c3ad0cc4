"""The redeploy panel on the rotation page: projects waited for, reminders, actions."""

from __future__ import annotations

from typing import Any

from django import template

from rotation.admin.staff_actions import REDEPLOY_CONFIRM, ROTATION_ROLLBACK
from rotation.models import Reminder, Rotation
from rotation.redeploy.reminders import reminders_plan

register = template.Library()


@register.inclusion_tag("admin/rotation/redeploy/panel.html", takes_context=True)
def redeploy_panel(context: dict[str, Any], rotation: Any) -> dict[str, Any]:
    """Per-project redeploy status and the confirm / roll back buttons the user may use."""
    request = context["request"]
    return {
        "rotation": rotation,
        "checks": list(rotation.redeploy_checks.all()),
        "reminders": _reminders(rotation),
        "waiting": rotation.state in Rotation.WAITING_STATES,
        "can_confirm": REDEPLOY_CONFIRM.allowed(request),
        "can_rollback": ROTATION_ROLLBACK.allowed(request),
    }


def _reminders(rotation: Rotation) -> list[Reminder]:
    """The reminders made so far, and those planned whose rows are made when they fall due."""
    made = list(rotation.reminders.all())
    if rotation.next_reminder_at is None or rotation.state not in Rotation.WAITING_STATES:
        return made
    if rotation.pushed_at is None or rotation.redeploy_deadline_at is None:
        return made
    steps = {reminder.step for reminder in made}
    planned = reminders_plan(
        rotation, pushed_at=rotation.pushed_at, deadline=rotation.redeploy_deadline_at
    )
    return sorted(made + [r for r in planned if r.step not in steps], key=lambda r: r.due_at)
