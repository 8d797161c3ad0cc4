"""The redeploy panel on the rotation page: projects waited for, reminders, actions."""

from __future__ import annotations

from typing import Any

from django import template

from rotation.admin.staff_actions import REDEPLOY_CONFIRM, ROTATION_ROLLBACK
from rotation.models import Rotation

register = template.Library()


@register.inclusion_tag("admin/rotation/redeploy/panel.html", takes_context=True)
def redeploy_panel(context: dict[str, Any], rotation: Any) -> dict[str, Any]:
    """Per-project redeploy status and the confirm / roll back buttons the user may use."""
    request = context["request"]
    return {
        "rotation": rotation,
        "checks": list(rotation.redeploy_checks.all()),
        "reminders": list(rotation.reminders.all()),
        "waiting": rotation.state in Rotation.WAITING_STATES,
        "can_confirm": REDEPLOY_CONFIRM.allowed(request),
        "can_rollback": ROTATION_ROLLBACK.allowed(request),
    }
