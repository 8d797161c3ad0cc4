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
import operator
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
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
    if not text.isascii() or "\x00" in text:  # ASCII without NUL is already clean
        text = text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return text[:limit] if limit else text


def clean_details(value: Any) -> Any:
    """JSON that survives jsonb (PostgreSQL) and JSON text (SQLite) unchanged."""
    kind = type(value)  # the exact types a database round trip gives, first
    if kind is str:
        return clean_text(value)
    if value is None or kind is bool or kind is int:
        return value
    if kind is float and math.isfinite(value) and not value.is_integer():
        return value
    if isinstance(value, bool):
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


def clean_ip(value: Any) -> str | None:
    """A valid IP address (without IPv6 zone) or None; anything else is not stored."""
    if not value:
        return None
    if type(value) is str and _is_plain_ipv4(value):
        return value
    return _clean_ip_parsed(value)


_IPV4_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_PLAIN_IPV4 = re.compile(rf"{_IPV4_OCTET}(?:\.{_IPV4_OCTET}){{3}}")


def _is_plain_ipv4(text: str) -> bool:
    """Dotted-quad IPv4 in its normal form (no spaces, no leading zeros), which parses to itself."""
    return _PLAIN_IPV4.fullmatch(text) is not None


@functools.lru_cache(maxsize=4096)
def _clean_ip_parsed(value: Any) -> str | None:
    try:
        address = ipaddress.ip_address(str(value).strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        address = ipaddress.IPv6Address(str(address).split("%")[0])
    return str(address)


_CANONICAL_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)
_canonical_dumps = _CANONICAL_ENCODER.encode
_encode_json_string = json.encoder.encode_basestring_ascii  # json.dumps's own (C) string encoder


def _canonical_time(value: dt.datetime) -> str:
    if value.tzinfo is not dt.UTC:
        if timezone.is_naive(value):
            value = timezone.make_aware(value, dt.UTC)
        value = value.astimezone(dt.UTC)
    if value.year < 1000:  # strftime does not pad the year; isoformat does
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _json_text(value: Any) -> str:
    return _encode_json_string("" if value is None else str(value))


def _json_number(value: Any) -> str:
    return "null" if value is None else int.__repr__(int(value))


def _json_time(value: dt.datetime) -> str:
    return f'"{_canonical_time(value)}"'


def _json_ip(value: Any) -> str:
    address = clean_ip(value)
    return "null" if address is None else _encode_json_string(address)


def _json_details(value: Any) -> str:
    # The value itself: a string is a JSON string, never JSON text to parse again (readers of
    # the raw column parse it first), or the string "{}" would hash as the object {}.
    return _canonical_dumps(clean_details(value if value is not None else {}))


def _json_form(name: str) -> Callable[[Any], str]:
    """How the field enters the canonical JSON: a function from its value to JSON text."""
    special = {"created_at": _json_time, "details": _json_details, "source_ip": _json_ip}
    return special.get(name, _json_number if name in INT_FIELDS else _json_text)


# The canonical object is what json.dumps(sort_keys=True) writes for {field: value, "v": scheme};
# its keys' order is worked out once here ("v" sorts after every field name).
SORTED_FIELDS = tuple(sorted(HASHED_FIELDS))
_in_sorted_order = operator.itemgetter(*(HASHED_FIELDS.index(name) for name in SORTED_FIELDS))
_SORTED_FORMS = tuple(_json_form(name) for name in SORTED_FIELDS)
_CANONICAL_TEMPLATE = (
    "{" + "".join(_encode_json_string(name) + ":%s," for name in SORTED_FIELDS) + '"v":%d}'
)
assert max(SORTED_FIELDS) < "v"


def canonical_values(values: Mapping[str, Any], *, version: int = 1) -> bytes:
    """The bytes hashed for one event, given its HASHED_FIELDS (from the model or the DB).

    `version` is the event's hash scheme, written as "v" so the scheme is hashed too. A JSON
    object with sorted keys, no spaces, ASCII only (non-ASCII as \\u escapes); the
    time as UTC with microseconds and a Z; empty text as ""; missing numbers as null;
    the IP address as Python's normal form (PostgreSQL's inet may print it differently);
    details re-read through JSON so a value and its database round trip hash the same.
    """
    return canonical_fields([values[name] for name in HASHED_FIELDS], version=version)


def canonical_fields(fields: Sequence[Any], *, version: int = 1) -> bytes:
    """`canonical_values` for the HASHED_FIELDS given as a row, in their order (the verifier's
    bulk path: one function for writer and verifier, so the two cannot drift)."""
    if len(fields) != len(HASHED_FIELDS):
        raise ValueError(
            f"an audit event has {len(HASHED_FIELDS)} hashed fields, not {len(fields)}"
        )
    encoded = tuple(
        form(value) for form, value in zip(_SORTED_FORMS, _in_sorted_order(fields), strict=True)
    )
    return (_CANONICAL_TEMPLATE % (*encoded, version)).encode("ascii")


# `text_fields_hash`: where the numbers, the address and the details sit among SORTED_FIELDS,
# and what in details JSON text sends an event to the typed path.
_TEXT_NUMBERS = tuple(SORTED_FIELDS.index(name) for name in INT_FIELDS)
_TEXT_IP = SORTED_FIELDS.index("source_ip")
_TEXT_DETAILS = SORTED_FIELDS.index("details")
_SECRET_KEY_IN_JSON = re.compile(
    '"(?:' + "|".join(map(re.escape, sorted(SECRET_KEYS))) + ')"', re.IGNORECASE | re.ASCII
)
_DETAILS_DECODER = json.JSONDecoder(
    parse_float=lambda text: clean_details(float(text)),
    parse_constant=lambda name: clean_details(float(name)),
)
# The C scanner and encoder behind the decoder's decode() and _CANONICAL_ENCODER.encode(),
# called directly: the same bytes, without ~2 µs of Python set-up per event.
_scan_details = _DETAILS_DECODER.scan_once  # type: ignore[attr-defined]  # (not in typeshed)


def _c_canonical_encoder() -> Callable[[Any, int], Sequence[str]] | None:
    """JSONEncoder.encode's C encoder with _CANONICAL_ENCODER's settings (None without one)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    encoder = _CANONICAL_ENCODER
    try:  # the arguments encode() passes it
        return make and make(
            None,  # no cycle check: decoded JSON has no cycles
            encoder.default,
            _encode_json_string,
            encoder.indent,
            encoder.key_separator,
            encoder.item_separator,
            encoder.sort_keys,
            encoder.skipkeys,
            encoder.allow_nan,
        )
    except TypeError:  # another signature: encode() itself, slower
        return None


_c_canonical = _c_canonical_encoder()


def _details_reencoded(details: str) -> str | None:
    """The canonical JSON of vetted details JSON text; None if it is not one JSON value."""
    if details == "{}":
        return details
    try:
        value, end = _scan_details(details, 0)
    except (StopIteration, ValueError):
        return None
    if end != len(details):
        return None
    return "".join(_c_canonical(value, 0)) if _c_canonical else _canonical_dumps(value)


def details_canonical(details: str) -> str | None:
    """The canonical JSON of details given as jsonb text, or None when the text path cannot
    vouch for it: anything but ASCII without escapes, or a key named like a secret (the typed
    path then hashes what `clean_details` makes of it, or refuses)."""
    if not details.isascii() or "\\u" in details or _SECRET_KEY_IN_JSON.search(details):
        return None
    return _details_reencoded(details)


def details_canonical_all(texts: Sequence[str]) -> list[str | None]:
    """`details_canonical` of each, screening them all at once when none needs a closer look."""
    together = "\x00".join(texts)  # no JSON text holds a NUL, so no match spans two
    if together.isascii() and "\\u" not in together and not _SECRET_KEY_IN_JSON.search(together):
        return list(map(_details_reencoded, texts))
    return list(map(details_canonical, texts))


def text_fields_hash(texts: Sequence[str], scheme: int, key: bytes) -> str | None:
    """`fields_hash` of a keyed or unkeyed event whose fields come as text, for the verifier's
    bulk path (PostgreSQL renders them so; parsing typed values costs more than hashing them).

    `texts` are the HASHED_FIELDS in SORTED_FIELDS order: text as stored ("" for none);
    numbers as JSON ("null" or digits); the time already in its canonical form; the IP address
    as text ("" for none); details as JSON text. None when `details_canonical` cannot vouch for
    the details: the caller then hashes the typed values with `fields_hash`, whose bytes this
    reproduces (tests compare the two).
    """
    details = details_canonical(texts[_TEXT_DETAILS])
    if details is None:
        return None
    encoded = list(map(_encode_json_string, texts))
    for index in _TEXT_NUMBERS:
        encoded[index] = texts[index]
    address = texts[_TEXT_IP]
    encoded[_TEXT_IP] = _json_ip(address) if address else "null"
    encoded[_TEXT_DETAILS] = details
    return _digest((_CANONICAL_TEMPLATE % (*encoded, scheme)).encode("ascii"), scheme, key)


def spliced_hashes(
    before: Sequence[str],
    details: Sequence[str],
    after: Sequence[str],
    schemes: Sequence[int],
    key: bytes,
) -> list[str]:
    """The hashes of events given as their canonical JSON before and after the details, the
    details' canonical JSON (`details_canonical_all`) and valid schemes, all vetted by the
    caller (the verifier's bulk path on PostgreSQL)."""
    keyed = hmac.new(key, digestmod=hashlib.sha256)  # its key set up once, copied per event

    def keyed_hash(data: bytes) -> str:
        event = keyed.copy()
        event.update(data)
        return event.hexdigest()

    texts = map(str.encode, map("".join, zip(before, details, after, strict=True)))
    if schemes.count(HashScheme.HMAC_SHA256) == len(schemes):
        return list(map(keyed_hash, texts))
    return [
        keyed_hash(data) if scheme == HashScheme.HMAC_SHA256 else _digest(data, scheme, key)
        for data, scheme in zip(texts, schemes, strict=True)
    ]


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
    if key is None:
        key = audit_chain_key() if scheme == HashScheme.HMAC_SHA256 else b""
    return fields_hash([values[name] for name in HASHED_FIELDS], scheme, key)


def fields_hash(fields: Sequence[Any], scheme: int, key: bytes) -> str:
    """The hash (hex) of one event given as a HASHED_FIELDS row and a valid `HashScheme` value;
    `key` is used for keyed events only."""
    return _digest(canonical_fields(fields, version=scheme), scheme, key)


def _digest(data: bytes, scheme: int, key: bytes) -> str:
    """The hex hash of canonical bytes under the scheme: SHA-256, or HMAC-SHA256 under `key`."""
    if scheme == HashScheme.SHA256:
        return hashlib.sha256(data).hexdigest()
    return hmac.digest(key, data, "sha256").hex()


def event_hash(event: AuditEvent, *, key: bytes | None = None) -> str:
    """The hash over the canonical JSON of the event's fields and its predecessor's hash."""
    values = {name: getattr(event, name) for name in HASHED_FIELDS}
    return canonical_hash({**values, "hash_scheme": event.hash_scheme}, key=key)


def fingerprint(value: str) -> str:
    """Keyed fingerprint (HMAC-SHA256) that identifies a secret value without revealing it."""
    key = settings.AUDIT_FINGERPRINT_KEY.encode()
    return FINGERPRINT_PREFIX + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()
