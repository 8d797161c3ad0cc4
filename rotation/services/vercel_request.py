"""Vercel asks us to rotate one resource (Request Secrets Rotation, CONTRACT §5).

The request becomes a batch of one (source `vercel`) and runs through the normal pipeline.
Vercel redeploys the linked projects itself once it has the new secrets, so the rotation
expires the old credentials `delayOldSecretsExpirationHours` after the push instead of
waiting for deployment webhooks (`Rotation.expire_old_after_push`, see rotation.redeploy).

Idempotency: a request carrying an Idempotency-Key is recorded with its answer in the
transaction that creates the rotation. The same key and request get the same answer and no
second rotation; the same key with another request gets 409. The one-open-rotation
constraint and the key's unique constraint settle two identical requests arriving at once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from rotation.audit import (
    AuditAction,
    Origin,
    RotationRefused,
    VercelActor,
    audit_record,
    refusal_record,
)
from rotation.models import (
    AuditEvent,
    Installation,
    PartnerApiIdempotencyKey,
    Resource,
    Rotation,
    RotationBatch,
)
from rotation.services.enqueue import rotations_enqueue_after_commit

MAX_DELAY_HOURS = 720
MAX_REASON_CHARS = 500
# Keys are kept at least 24 hours (Vercel retries within that); the redeploy tick prunes them.
IDEMPOTENCY_KEY_RETENTION = timedelta(hours=48)
NO_REASON = "Requested through Vercel (no reason given)."
ACCEPTED: dict[str, Any] = {"sync": False}


@dataclass(frozen=True)
class PartnerAnswer:
    """What the partner API answers: an HTTP status and a JSON body."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)


class VercelRequestRefused(RotationRefused):
    """A refused Vercel call, already audited; `status` and `code` go into Vercel's error shape."""

    def __init__(self, message: str, *, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def vercel_call_refuse(
    *,
    message: str,
    status: int,
    code: str,
    origin: Origin | None,
    installation_id: str,
    resource_id: str,
    actor: VercelActor | None = None,
    details: dict[str, Any] | None = None,
) -> VercelRequestRefused:
    """Audit a refused Vercel call through the one refusal helper; returns the error to raise.

    Without a verified actor (a bad token) the caller is recorded as anonymous.
    """
    refusal_record(
        action=AuditAction.ROTATION_REQUEST_DENIED,
        message=message,
        actor=None,
        actor_type=AuditEvent.ActorType.VERCEL if actor else AuditEvent.ActorType.ANONYMOUS,
        actor_username=actor.username if actor else "",
        origin=origin,
        outcome=AuditEvent.Outcome.DENIED if status in (401, 403) else AuditEvent.Outcome.FAILURE,
        installation=installation_id,
        resource=resource_id,
        details={
            "source": RotationBatch.Source.VERCEL,
            "status": status,
            **({"vercel_actor": actor.audit_details()} if actor else {}),
            **(details or {}),
        },
    )
    return VercelRequestRefused(message, status=status, code=code)


def old_secrets_delay_default() -> timedelta:
    """How long old credentials live after the push when Vercel names no delay: the redeploy
    grace, within Vercel's 0..720 hours."""
    grace = timedelta(days=settings.ROTATION_REDEPLOY_GRACE_DAYS)
    return max(timedelta(0), min(grace, timedelta(hours=MAX_DELAY_HOURS)))


def _request_hash(*, resource_id: str, reason: str, delay_hours: float | None) -> str:
    canonical = json.dumps(
        {
            "resource": resource_id,
            "reason": reason,
            "delay": None if delay_hours is None else float(delay_hours),
        },
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _resource_of(installation_id: str, resource_id: str) -> Resource | None:
    return (
        Resource.objects.select_related("installation")
        .filter(installation__vercel_id=installation_id, vercel_id=resource_id)
        .first()
    )


def _state_refusal(resource: Resource) -> str:
    """Why the resource cannot be rotated now, or ""."""
    if resource.installation.status == Installation.Status.REMOVED:
        return "The installation was removed."
    if resource.status == Resource.Status.REMOVED:
        return "The resource was removed."
    open_rotation = (
        Rotation.objects.filter(resource=resource, state__in=Rotation.OPEN_STATES)
        .order_by("-pk")
        .first()
    )
    if open_rotation is not None:
        label = Rotation.State(open_rotation.state).label.lower()
        return f"A rotation of this resource is already under way ({label})."
    return ""


@dataclass(frozen=True)
class _Call:
    """One Vercel call, as the service sees it."""

    installation_id: str
    resource_id: str
    actor: VercelActor
    origin: Origin | None
    key: str
    request_hash: str

    def refuse(
        self, message: str, *, status: int, code: str, **details: Any
    ) -> VercelRequestRefused:
        return vercel_call_refuse(
            message=message,
            status=status,
            code=code,
            origin=self.origin,
            installation_id=self.installation_id,
            resource_id=self.resource_id,
            actor=self.actor,
            details={"idempotency_key": self.key, **details} if self.key else details,
        )

    def audit(self, **fields: Any) -> AuditEvent:
        """An event with Vercel as the actor, in the caller's transaction."""
        return audit_record(
            actor_type=AuditEvent.ActorType.VERCEL,
            actor_username=self.actor.username,
            origin=self.origin,
            installation=self.installation_id,
            **fields,
        )


def _replay(call: _Call, recorded: PartnerApiIdempotencyKey) -> PartnerAnswer:
    """The answer recorded for this key, or 409 when the key came with another request."""
    if recorded.request_hash != call.request_hash:
        raise call.refuse(
            "This Idempotency-Key was already used for a different request.",
            status=409,
            code="conflict",
        )
    with transaction.atomic():
        call.audit(
            action=AuditAction.ROTATION_REQUEST_REPLAYED,
            resource=call.resource_id,
            rotation=recorded.rotation_id,
            details={
                "idempotency_key": call.key,
                "status": recorded.response_status,
                "vercel_actor": call.actor.audit_details(),
            },
        )
    return PartnerAnswer(recorded.response_status, dict(recorded.response_body))


def _recorded_key(call: _Call, resource: Resource) -> PartnerApiIdempotencyKey | None:
    if not call.key:
        return None
    return PartnerApiIdempotencyKey.objects.filter(
        installation=resource.installation, key=call.key
    ).first()


def rotation_request_from_vercel(
    *,
    installation_id: str,
    resource_id: str,
    actor: VercelActor,
    reason: str = "",
    delay_hours: float | None = None,
    idempotency_key: str = "",
    origin: Origin | None = None,
) -> PartnerAnswer:
    """Record Vercel's request to rotate one resource and start the pipeline (202).

    Raises VercelRequestRefused (audited): 404 unknown resource, 409 a rotation already
    under way, the resource or installation removed, or the key reused for another request.
    """
    reason = (reason or "").strip()
    call = _Call(
        installation_id=installation_id,
        resource_id=resource_id,
        actor=actor,
        origin=origin,
        key=idempotency_key,
        request_hash=_request_hash(resource_id=resource_id, reason=reason, delay_hours=delay_hours),
    )
    resource = _resource_of(installation_id, resource_id)
    if resource is None:
        raise call.refuse("No such resource in this installation.", status=404, code="not_found")
    delay = old_secrets_delay_default() if delay_hours is None else timedelta(hours=delay_hours)
    refusal = ""
    try:
        with transaction.atomic():
            recorded = _recorded_key(call, resource)
            if recorded is None:
                refusal = _state_refusal(resource)
                if not refusal:
                    return _create(call, resource, reason=reason, delay=delay)
    except IntegrityError:
        # An identical request committed first: the key's or the open rotation's constraint.
        recorded = _recorded_key(call, resource)
        if recorded is None:
            refusal = _state_refusal(resource) or "Another rotation was requested at once."
    # Outside the transaction: a refusal's audit event must not roll back with it.
    if recorded is not None:
        return _replay(call, recorded)
    raise call.refuse(refusal, status=409, code="conflict")


def _create(call: _Call, resource: Resource, *, reason: str, delay: timedelta) -> PartnerAnswer:
    """The batch, its rotation, the key and the audit event, in the caller's transaction."""
    now = timezone.now()
    batch = RotationBatch.objects.create(
        requested_by=None,
        requested_by_username=call.actor.username,
        source=RotationBatch.Source.VERCEL,
        reason=reason or NO_REASON,
    )
    rotation = Rotation.objects.create(
        batch=batch, resource=resource, state_changed_at=now, expire_old_after_push=delay
    )
    answer = PartnerAnswer(202, dict(ACCEPTED))
    if call.key:
        PartnerApiIdempotencyKey.objects.create(
            installation=resource.installation,
            key=call.key,
            resource=resource,
            request_hash=call.request_hash,
            response_status=answer.status,
            response_body=answer.body,
            rotation=rotation,
        )
    call.audit(
        action=AuditAction.ROTATION_REQUESTED,
        resource=resource,
        rotation=rotation,
        batch=batch,
        reason=batch.reason,
        details={
            "source": RotationBatch.Source.VERCEL,
            "emergency": False,
            "requested": 1,
            "rotations": 1,
            "refused": 0,
            "resources": [resource.vercel_id],
            "vercel_actor": call.actor.audit_details(),
            "old_secrets_delay_hours": delay.total_seconds() / 3600,
            "idempotency_key": call.key,
        },
    )
    rotations_enqueue_after_commit([rotation.pk], group=f"batch-{batch.pk}")
    return answer


def idempotency_keys_prune() -> int:
    """Forget Idempotency-Keys older than IDEMPOTENCY_KEY_RETENTION; returns how many."""
    cutoff = timezone.now() - IDEMPOTENCY_KEY_RETENTION
    deleted, _ = PartnerApiIdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted
