"""The audit trail: one function writes every event, inside the caller's transaction.

Events form a hash chain: each stores its predecessor's hash and its own SHA-256 over a
canonical JSON of its fields (see `event_canonical`). Appends are serialized so the chain
never forks: on PostgreSQL by a transaction-scoped advisory lock taken before the head of
the chain is read and held until the caller's transaction ends; on SQLite by its single
writer (our connections open transactions with BEGIN IMMEDIATE). A unique `prev_hash`
makes a fork impossible even for a writer that bypasses the lock.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import hashlib
import hmac
import ipaddress
import json
import math
import uuid
from collections.abc import Iterable, Mapping
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
FINGERPRINT_PREFIX = "hmac-sha256:"
# Keys of `details` that must never carry a plain string: only a fingerprint is accepted.
SECRET_KEYS = frozenset(
    {"password", "token", "access_token", "secret", "secret_value", "api_key", "credential"}
)


class AuditAction(models.TextChoices):
    INSTALLATION_IMPORTED = "installation.imported", "Installation imported"
    INSTALLATION_TOKEN_REPLACED = "installation.token_replaced", "Installation token replaced"
    INSTALLATION_CHANGED = "installation.changed", "Installation changed"
    RESOURCE_CHANGED = "resource.changed", "Resource changed"
    SECRETS_REENCRYPTED = "secrets.reencrypted", "Secrets re-encrypted"
    # Sign-in and the audit trail itself (rotation/signals.py, rotation/admin/audit.py).
    AUTH_LOGIN = "auth.login", "Signed in"
    AUTH_LOGOUT = "auth.logout", "Signed out"
    AUTH_LOGIN_FAILED = "auth.login_failed", "Sign-in failed"
    AUDIT_VIEWED = "audit.viewed", "Audit trail viewed"
    AUDIT_EXPORTED = "audit.exported", "Audit trail exported"
    AUDIT_CHANGE_REFUSED = "audit.change_refused", "Change of an audit event refused"
    AUDIT_FINGERPRINTED = "audit.fingerprinted", "Fingerprint computed for an investigation"
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
INT_FIELDS = ("actor_user_id", "rotation_ref", "batch_ref")


def clean_text(value: Any, limit: int | None = None) -> str:
    """A string both databases store and return unchanged (no NUL, no lone surrogate)."""
    text = "" if value is None else str(value)
    text = text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return text[:limit] if limit else text


def clean_details(value: Any) -> Any:
    """JSON that survives jsonb (PostgreSQL) and JSON text (SQLite) unchanged."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        # jsonb turns 1e20 into 100000000000000000000, which reads back as an int.
        return int(value) if value.is_integer() else value
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raise TypeError("bytes in audit details: store a fingerprint() of the value instead")
    if isinstance(value, Mapping):
        cleaned = {}
        for key, item in value.items():
            name = clean_text(key)
            secret_looking = name.lower() in SECRET_KEYS and isinstance(item, str) and item
            if secret_looking and not item.startswith(FINGERPRINT_PREFIX):
                raise ValueError(f"audit details[{name!r}]: store a fingerprint, not a value")
            cleaned[name] = clean_details(item)
        return cleaned
    if isinstance(value, list | tuple):
        return [clean_details(item) for item in value]
    if isinstance(value, set | frozenset):
        return sorted((clean_details(item) for item in value), key=_canonical_dumps)
    if isinstance(value, dt.datetime):
        if timezone.is_aware(value):
            value = value.astimezone(dt.UTC)
        return value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, models.Choices):
        return value.value
    return clean_text(value)


@functools.lru_cache(maxsize=4096)
def clean_ip(value: Any) -> str | None:
    """A valid IP address (without IPv6 zone) or None; anything else is not stored."""
    if not value:
        return None
    try:
        address = ipaddress.ip_address(str(value).strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        address = ipaddress.IPv6Address(str(address).split("%")[0])
    return str(address)


def _canonical_dumps(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def _canonical_time(value: dt.datetime) -> str:
    if timezone.is_naive(value):
        value = timezone.make_aware(value, dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_values(values: Mapping[str, Any]) -> bytes:
    """The bytes hashed for one event, given its HASHED_FIELDS (from the model or the DB).

    A JSON object with sorted keys, no spaces, ASCII only (non-ASCII as \\u escapes); the
    time as UTC with microseconds and a Z; empty text as ""; missing numbers as null;
    the IP address as Python's normal form (PostgreSQL's inet may print it differently);
    details re-read through JSON so a value and its database round trip hash the same.
    """
    canonical: dict[str, Any] = {"v": 1}
    for name in HASHED_FIELDS:
        value = values[name]
        if name == "created_at":
            value = _canonical_time(value)
        elif name == "details":
            if isinstance(value, str):  # a raw JSON column read without the model
                value = json.loads(value)
            value = clean_details(value if value is not None else {})
        elif name == "source_ip":
            value = clean_ip(value)
        elif name in INT_FIELDS:
            value = None if value is None else int(value)
        else:
            value = "" if value is None else str(value)
        canonical[name] = value
    return _canonical_dumps(canonical).encode("ascii")


def canonical_hash(values: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of `canonical_values`."""
    return hashlib.sha256(canonical_values(values)).hexdigest()


def event_hash(event: AuditEvent) -> str:
    """SHA-256 over the canonical JSON of the event's fields and its predecessor's hash."""
    return canonical_hash({name: getattr(event, name) for name in HASHED_FIELDS})


def fingerprint(value: str) -> str:
    """Keyed fingerprint (HMAC-SHA256) that identifies a secret value without revealing it."""
    key = settings.AUDIT_FINGERPRINT_KEY.encode()
    return FINGERPRINT_PREFIX + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def _lock_chain() -> None:
    # Held until the outer transaction commits or rolls back, so the next writer reads a
    # committed head. SQLite needs nothing: a write transaction excludes all other writers.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_ID])


def request_origin(request: HttpRequest | None) -> dict[str, Any]:
    """Source IP, user agent and request id of an HTTP request, for an event."""
    if request is None:
        return {}
    meta = getattr(request, "META", {})
    return {
        "source_ip": clean_ip(meta.get("REMOTE_ADDR")),
        "user_agent": meta.get("HTTP_USER_AGENT", ""),
        "request_id": meta.get("HTTP_X_REQUEST_ID", ""),
    }


def _ref(value: Any, attribute: str) -> Any:
    return getattr(value, attribute, value)


def _int_ref(value: Any) -> int | None:
    value = _ref(value, "pk")
    return None if value in (None, "") else int(value)


@functools.cache
def _known_actions() -> frozenset[str]:
    # TextChoices.values builds a new list on every access; events are written in bulk.
    return frozenset(AuditAction.values)


@functools.cache
def _known_outcomes() -> frozenset[str]:
    from rotation.models import AuditEvent

    return frozenset(AuditEvent.Outcome.values)


def _build_event(
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
    request_id: str = "",
    actor_username: str = "",
) -> AuditEvent:
    """An unsaved, unchained event; refuses unknown actions and outcomes."""
    from rotation.models import AuditEvent

    if action not in _known_actions():
        raise ValueError(f"unknown audit action {action!r}: add it to rotation.audit.AuditAction")
    if outcome not in _known_outcomes():
        raise ValueError(f"unknown audit outcome {outcome!r}")
    if actor is None and request is not None:
        actor = getattr(request, "user", None)
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    if actor_type is None:
        actor_type = AuditEvent.ActorType.USER if actor else AuditEvent.ActorType.SYSTEM
    if resource is not None and installation is None and hasattr(resource, "installation"):
        installation = resource.installation
    if rotation is not None and batch is None and hasattr(rotation, "batch_id"):
        batch = rotation.batch_id
    origin = request_origin(request)
    return AuditEvent(
        created_at=timezone.now(),
        actor_type=str(actor_type),
        actor_user_id=actor.pk if actor else None,
        actor_username=clean_text(actor.get_username() if actor else actor_username, 150),
        action=str(action),
        outcome=str(outcome),
        installation_ref=clean_text(_ref(installation, "vercel_id"), 64),
        resource_ref=clean_text(_ref(resource, "vercel_id"), 128),
        rotation_ref=_int_ref(rotation),
        batch_ref=_int_ref(batch),
        reason=clean_text(reason),
        ticket=clean_text(ticket, 100),
        source_ip=clean_ip(source_ip) or origin.get("source_ip"),
        user_agent=clean_text(user_agent or origin.get("user_agent", ""), 512),
        request_id=clean_text(request_id or origin.get("request_id", ""), 64),
        details=clean_details(details or {}),
    )


def _reserve_ids(count: int) -> list[int] | None:
    # Explicit ids drawn under the chain lock keep id order equal to chain order.
    if connection.vendor != "postgresql":
        return None  # SQLite's single writer assigns rowids in insert order
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence('rotation_auditevent', 'id')) "
            "FROM generate_series(1, %s)",
            [count],
        )
        return sorted(row[0] for row in cursor.fetchall())


def _append(events: list[AuditEvent]) -> list[AuditEvent]:
    """Chain and insert events, in order, under the chain lock."""
    from rotation.models import AuditEvent

    with transaction.atomic():
        _lock_chain()
        last = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
        previous = last or GENESIS_HASH
        for event in events:
            event.prev_hash = previous
            event.hash = previous = event_hash(event)
        if len(events) == 1:
            events[0].save(force_insert=True)
            return events
        ids = _reserve_ids(len(events))
        if ids is not None:
            for event, pk in zip(events, ids, strict=True):
                event.pk = pk
        # The manager refuses bulk_create for everybody else; this is the one sanctioned path.
        models.QuerySet.bulk_create(AuditEvent.objects.all(), events)
    return events


def audit_record(**fields: Any) -> AuditEvent:
    """Append one event. Must run inside the transaction of the change it records.

    Takes the keyword arguments of `_build_event` (action, outcome, actor, actor_type,
    request, installation, resource, rotation, batch, reason, ticket, details, source_ip,
    user_agent, request_id, actor_username). Fails closed: any error (unknown action, a
    secret-looking detail, a database error) propagates, so the caller's transaction and
    the change it holds roll back.
    """
    return _append([_build_event(**fields)])[0]


def audit_record_many(entries: Iterable[Mapping[str, Any]]) -> list[AuditEvent]:
    """Append many events at once (one lock, one insert); each entry is audit_record's kwargs."""
    events = [_build_event(**entry) for entry in entries]
    return _append(events) if events else []


def audit_denied(
    request: HttpRequest | None,
    *,
    action: str,
    reason: str = "",
    details: dict[str, Any] | None = None,
    **refs: Any,
) -> AuditEvent:
    """Record a refused protected action (outcome "denied"); call it before raising 403.

    Call it outside any transaction that the refusal rolls back, or the event is lost too.
    `refs` are audit_record's installation/resource/rotation/batch/ticket/actor arguments.
    """
    return audit_record(
        action=action,
        outcome="denied",
        request=request,
        reason=reason or "permission denied",
        details=details,
        **refs,
    )
