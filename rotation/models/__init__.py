"""Installations, resources, their credential versions, rotations and the audit trail."""

from rotation.models.audit import (
    AuditAction,
    AuditEvent,
    AuditEventImmutable,
    AuditEventQuerySet,
    audit_action_choices,
)
from rotation.models.inventory import InventoryFinding, InventoryReport
from rotation.models.pace import NotificationPace, PushPace
from rotation.models.partner_api import PartnerApiIdempotencyKey
from rotation.models.policies import CredentialAge, RotationPolicy
from rotation.models.redeploy import RedeployCheck, Reminder, WebhookEvent
from rotation.models.resources import (
    ConnectedProject,
    CredentialVersion,
    Installation,
    Resource,
    TokenRotationStep,
)
from rotation.models.rotations import Rotation, RotationBatch

__all__ = [
    "AuditAction",
    "AuditEvent",
    "AuditEventImmutable",
    "AuditEventQuerySet",
    "ConnectedProject",
    "CredentialAge",
    "CredentialVersion",
    "Installation",
    "InventoryFinding",
    "InventoryReport",
    "NotificationPace",
    "PartnerApiIdempotencyKey",
    "PushPace",
    "RedeployCheck",
    "Reminder",
    "Resource",
    "Rotation",
    "RotationBatch",
    "RotationPolicy",
    "TokenRotationStep",
    "WebhookEvent",
    "audit_action_choices",
]
