"""The audit trail: one function writes every event, inside the caller's transaction.

Events form a hash chain (each stores the previous event's hash). Appends are serialized:
on PostgreSQL by a transaction-scoped advisory lock, on SQLite by its single writer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone

if TYPE_CHECKING:
    from django.http import HttpRequest

    from rotation.models import AuditEvent

GENESIS_HASH = "0" * 64
# Arbitrary constant naming the audit chain's advisory lock on PostgreSQL.
CHAIN_LOCK_ID = 7_201_202_611


class AuditAction(models.TextChoices):
    INSTALLATION_IMPORTED = "installation.imported", "Installation imported"
    INSTALLATION_TOKEN_REPLACED = "installation.token_replaced", "Installation token replaced"
    INSTALLATION_CHANGED = "installation.changed", "Installation changed"
    RESOURCE_CHANGED = "resource.changed", "Resource changed"
    SECRETS_REENCRYPTED = "secrets.reencrypted", "Secrets re-encrypted"
    # Rotate and push (rotation/services.py).
    ROTATION_REQUESTED = "rotation.requested", "Rotation requested"
    ROTATION_REQUEST_DENIED = "rotation.request_denied", "Rotation request refused"
    ROTATION_PREPARED = "rotation.prepared", "New credentials prepared (pending)"
    ROTATION_PREPARE_FAILED = "rotation.prepare_failed", "Preparing new credentials failed"
    ROTATION_PUSHED = "rotation.pushed", "New credentials pushed to Vercel"
    ROTATION_PUSH_DEFERRED = "rotation.push_deferred", "Push failed transiently; will retry"
    ROTATION_PUSH_FAILED = "rotation.push_failed", "Push to Vercel failed"
    ROTATION_PUSH_SKIPPED = "rotation.push_skipped", "Push skipped (rotation no longer due)"
    ROTATION_CANCELLED = "rotation.cancelled", "Rotation cancelled"
    ROTATION_RETRIED = "rotation.retried", "Failed rotation retried"
    ROTATION_REQUEUED = "rotation.requeued", "Stuck rotations re-queued by the sweeper"
    CREDENTIALS_EXPIRED = "credentials.expired", "Credential version expired at the provider"
    BATCH_RETRIED = "batch.retry_failed", "Failed rotations of a batch retried"
    BATCH_CANCELLED = "batch.cancelled", "Open rotations of a batch cancelled"
    # Redeploy tracking (rotation/redeploy.py, rotation/webhooks.py).
    WEBHOOK_RECEIVED = "webhook.received", "Vercel webhook handled"
    PROJECT_CONNECTED = "project.connected", "Project connected to a resource"
    PROJECT_DISCONNECTED = "project.disconnected", "Project disconnected from a resource"
    INSTALLATION_REMOVED = "installation.removed", "Installation removed on Vercel"
    REDEPLOY_STARTED = "rotation.redeploy_started", "Waiting for redeploys"
    PROJECT_REDEPLOYED = "rotation.project_redeployed", "Project redeployed after the push"
    REDEPLOY_DONE = "rotation.redeployed", "All projects redeployed"
    REDEPLOY_CONFIRMED = "rotation.redeploy_confirmed", "Customer-confirmed redeploy recorded"
    REMINDER_SENT = "rotation.reminder_sent", "Redeploy reminder sent"
    ROTATION_ESCALATED = "rotation.escalated", "Redeploy deadline passed"
    OLD_CREDENTIALS_EXPIRED = "rotation.old_expired", "Old credentials expired"
    ROTATION_STOPPED = "rotation.stopped", "Rotation stopped (installation removed)"
    ROTATION_ROLLED_BACK = "rotation.rolled_back", "Rotation rolled back"


HASHED_FIELDS = (
    "created_at",
    "actor_type",
    "actor_user_id",
    "actor_username",
    "action",
    "outcome",
    "installation_ref",
    "resource_ref",
    "rotation_ref",
    "batch_ref",
    "reason",
    "ticket",
    "source_ip",
    "user_agent",
    "request_id",
    "details",
    "prev_hash",
)


def event_hash(event: AuditEvent) -> str:
    """SHA-256 over a canonical JSON of the event's fields and its predecessor's hash."""
    values: dict[str, Any] = {name: getattr(event, name) for name in HASHED_FIELDS}
    values["created_at"] = event.created_at.astimezone(UTC).isoformat(timespec="microseconds")
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def fingerprint(value: str) -> str:
    """Keyed fingerprint (HMAC-SHA256) that identifies a secret value without revealing it."""
    key = settings.AUDIT_FINGERPRINT_KEY.encode()
    return "hmac-sha256:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def _lock_chain() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_ID])


def request_origin(request: HttpRequest | None) -> dict[str, Any]:
    """Source IP, user agent and request id of an HTTP request, for an event."""
    if request is None:
        return {}
    return {
        "source_ip": request.META.get("REMOTE_ADDR") or None,
        "user_agent": request.META.get("HTTP_USER_AGENT", "")[:512],
        "request_id": request.META.get("HTTP_X_REQUEST_ID", "")[:64],
    }


def audit_record(
    *,
    action: str,
    outcome: str = "success",
    actor: Any = None,
    actor_type: str | None = None,
    request: HttpRequest | None = None,
    installation: Any = None,
    resource: Any = None,
    rotation: Any = None,
    batch: Any = None,
    reason: str = "",
    ticket: str = "",
    details: dict[str, Any] | None = None,
    source_ip: str | None = None,
    user_agent: str = "",
) -> AuditEvent:
    """Append one event. Must run inside the transaction of the change it records."""
    from rotation.models import AuditEvent

    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    if actor_type is None:
        actor_type = AuditEvent.ActorType.USER if actor else AuditEvent.ActorType.SYSTEM
    if resource is not None and installation is None:
        installation = resource.installation
    if rotation is not None and batch is None:
        batch = rotation.batch_id
    origin = request_origin(request)
    event = AuditEvent(
        created_at=timezone.now(),
        actor_type=actor_type,
        actor_user_id=actor.pk if actor else None,
        actor_username=actor.get_username() if actor else "",
        action=action,
        outcome=outcome,
        installation_ref=getattr(installation, "vercel_id", installation or ""),
        resource_ref=getattr(resource, "vercel_id", resource or ""),
        rotation_ref=getattr(rotation, "pk", rotation),
        batch_ref=getattr(batch, "pk", batch),
        reason=reason,
        ticket=ticket,
        source_ip=origin.get("source_ip", source_ip),
        user_agent=origin.get("user_agent", user_agent),
        request_id=origin.get("request_id", ""),
        details=details or {},
    )
    with transaction.atomic():
        _lock_chain()
        last = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
        event.prev_hash = last or GENESIS_HASH
        event.hash = event_hash(event)
        event.save(force_insert=True)
    return event
