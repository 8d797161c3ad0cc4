"""Redeploy tracking: after a push, wait for every connected project to redeploy, remind the
customer, then expire the old credentials.

Vercel does not redeploy projects after a secrets update, so running deployments keep the
old values until the customer redeploys; expiring old credentials earlier would break them.

Modules: `begin` (what to wait for, when a push lands), `progress` (deployments seen,
confirmations), `projects` (connected projects, removed installations), `events` (webhook
deliveries), `reminders`, `expiry`, `dashboard` (figures for staff).
"""

from rotation.redeploy.begin import rotations_redeploy_begin
from rotation.redeploy.events import (
    WebhookInvalid,
    webhook_event_handle,
    webhook_events_prune,
    webhook_refusal_record,
)
from rotation.redeploy.expiry import (
    rotation_expire_old,
    rotation_expiry_due,
    rotations_escalate_due,
    rotations_expire_due,
)
from rotation.redeploy.progress import rotation_confirm_redeploy, rotation_mark_project_redeployed
from rotation.redeploy.projects import (
    connected_project_corrected,
    installation_removed,
    project_connected,
    project_disconnected,
)
from rotation.redeploy.reminders import reminder_send, reminders_cancel_open, reminders_send_due

__all__ = [
    "WebhookInvalid",
    "connected_project_corrected",
    "installation_removed",
    "project_connected",
    "project_disconnected",
    "reminder_send",
    "reminders_cancel_open",
    "reminders_send_due",
    "rotation_confirm_redeploy",
    "rotation_expire_old",
    "rotation_expiry_due",
    "rotation_mark_project_redeployed",
    "rotations_escalate_due",
    "rotations_expire_due",
    "rotations_redeploy_begin",
    "webhook_event_handle",
    "webhook_events_prune",
    "webhook_refusal_record",
]
