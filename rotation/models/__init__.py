"""Installations, resources, their credential versions, rotations and the audit trail."""

from rotation.models.audit import (
    AuditAction,
    AuditEvent,
    AuditEventImmutable,
    AuditEventQuerySet,
    audit_action_choices,
)
from rotation.models.pace import PushPace
from rotation.models.redeploy import RedeployCheck, Reminder, WebhookEvent
from rotation.models.resources import ConnectedProject, CredentialVersion, Installation, Resource
from rotation.models.rotations import Rotation, RotationBatch

__all__ = [
    "AuditAction",
    "AuditEvent",
    "AuditEventImmutable",
    "AuditEventQuerySet",
    "ConnectedProject",
    "CredentialVersion",
    "Installation",
    "PushPace",
    "RedeployCheck",
    "Reminder",
    "Resource",
    "Rotation",
    "RotationBatch",
    "WebhookEvent",
    "audit_action_choices",
]
