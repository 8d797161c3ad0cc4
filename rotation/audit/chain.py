"""The audit chain's hashing: canonical bytes of an event, its hash, keyed fingerprints.

Each event stores its predecessor's hash and its own hash over a canonical JSON of its
fields (see `canonical_values`): an HMAC-SHA256 under `AUDIT_CHAIN_KEY`, which lives outside
the database, so someone who can write the database cannot rewrite an event and recompute
the chain. Chains begun before the key existed keep their unkeyed SHA-256 events; a marker
event (`audit.chain_keyed`, see `rotation.audit.trail`) starts the keyed segment and, being
keyed itself, seals the unkeyed events before it. Knows no database: the trail and the
verifier use it.
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
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.utils import timezone

from rotation.models.audit import AuditEvent

GENESIS_HASH = "0" * 64
HashScheme = AuditEvent.HashScheme
FINGERPRINT_PREFIX = "hmac-sha256:"
# Keys of `details` that must never carry a plain string: only a fingerprint is accepted.
SECRET_KEYS = frozenset(
    {"password", "token", "access_token", "secret", "secret_value", "api_key", "credential"}
)

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


def canonical_values(values: Mapping[str, Any], *, version: int = 1) -> bytes:
    """The bytes hashed for one event, given its HASHED_FIELDS (from the model or the DB).

    `version` is the event's hash scheme, written as "v" so the scheme is hashed too. A JSON
    object with sorted keys, no spaces, ASCII only (non-ASCII as \\u escapes); the
    time as UTC with microseconds and a Z; empty text as ""; missing numbers as null;
    the IP address as Python's normal form (PostgreSQL's inet may print it differently);
    details re-read through JSON so a value and its database round trip hash the same.
    """
    canonical: dict[str, Any] = {"v": version}
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


def audit_chain_key() -> bytes:
    """The chain's HMAC key (`AUDIT_CHAIN_KEY`, UTF-8), read at call time."""
    key = settings.AUDIT_CHAIN_KEY
    if not key:
        raise ImproperlyConfigured("AUDIT_CHAIN_KEY is not set: the audit chain cannot be keyed")
    return key.encode() if isinstance(key, str) else bytes(key)


def canonical_hash(values: Mapping[str, Any], *, key: bytes | None = None) -> str:
    """The hash (hex) of `canonical_values` under the scheme `values["hash_scheme"]` names.

    HMAC-SHA256 under `key` (default `audit_chain_key()`) for keyed events, plain SHA-256
    for the unkeyed events of a chain begun before the key; ValueError for any other scheme.
    """
    try:
        scheme = HashScheme(int(values["hash_scheme"]))
    except (TypeError, ValueError):
        raise ValueError(f"unknown audit hash scheme {values['hash_scheme']!r}") from None
    data = canonical_values(values, version=scheme.value)
    if scheme == HashScheme.SHA256:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(audit_chain_key() if key is None else key, data, hashlib.sha256).hexdigest()


def event_hash(event: AuditEvent, *, key: bytes | None = None) -> str:
    """The hash over the canonical JSON of the event's fields and its predecessor's hash."""
    values = {name: getattr(event, name) for name in HASHED_FIELDS}
    return canonical_hash({**values, "hash_scheme": event.hash_scheme}, key=key)


def fingerprint(value: str) -> str:
    """Keyed fingerprint (HMAC-SHA256) that identifies a secret value without revealing it."""
    key = settings.AUDIT_FINGERPRINT_KEY.encode()
    return FINGERPRINT_PREFIX + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()
