"""Redeploy tracking: after a push, wait for every connected project to redeploy, remind the
customer, then expire the old credentials (or roll back while they still work).

Vercel does not redeploy projects after a secrets update, so running deployments keep the
old values until the customer redeploys; expiring old credentials earlier would break them.
"""

from rotation.redeploy.events import WebhookInvalid, webhook_event_handle
from rotation.redeploy.expiry import (
    rotation_expire_old,
    rotation_expiry_due,
    rotations_escalate_due,
    rotations_expire_due,
)
from rotation.redeploy.reminders import reminder_send, reminders_send_due
from rotation.redeploy.rollback import rotation_rollback
from rotation.redeploy.tracking import (
    WAITING_STATES,
    RedeployRefused,
    connected_project_corrected,
    installation_removed,
    project_connected,
    project_disconnected,
    rotation_confirm_redeploy,
    rotation_mark_project_redeployed,
    rotation_redeploy_begin,
    rotations_redeploy_begin,
)

__all__ = [
    "WAITING_STATES",
    "RedeployRefused",
    "WebhookInvalid",
    "connected_project_corrected",
    "installation_removed",
    "project_connected",
    "project_disconnected",
    "reminder_send",
    "reminders_send_due",
    "rotation_confirm_redeploy",
    "rotation_expire_old",
    "rotation_expiry_due",
    "rotation_mark_project_redeployed",
    "rotation_redeploy_begin",
    "rotation_rollback",
    "rotations_escalate_due",
    "rotations_expire_due",
    "rotations_redeploy_begin",
    "webhook_event_handle",
]
