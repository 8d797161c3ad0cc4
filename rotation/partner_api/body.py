"""The Request Secrets Rotation body, checked strictly: a JSON object with at most `reason`
(a string of at most 500 characters) and `delayOldSecretsExpirationHours` (a number from 0
to 720, fractions allowed). Anything else, unknown keys included, is refused with a message
naming the problem; Vercel's own API is as strict (`additionalProperties: false`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from rotation.services.vercel_request import MAX_DELAY_HOURS, MAX_REASON_CHARS

MAX_BODY_BYTES = 16_384
MAX_IDEMPOTENCY_KEY_CHARS = 255
KNOWN_KEYS = ("reason", "delayOldSecretsExpirationHours")


class BodyInvalid(Exception):
    """The request is malformed; the message is safe to send back."""


@dataclass(frozen=True)
class RotateBody:
    reason: str = ""
    delay_hours: float | None = None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicated = sorted({key for key in keys if keys.count(key) > 1})
    if duplicated:
        raise BodyInvalid(f"The body repeats the key {duplicated[0]!r}.")
    return dict(pairs)


def _no_constant(name: str) -> None:
    raise BodyInvalid(f"The body holds {name}, which is not JSON.")


def rotate_body_parse(raw: bytes) -> RotateBody:
    """The checked body; an empty body means no reason and the default delay."""
    if len(raw) > MAX_BODY_BYTES:
        raise BodyInvalid(f"The body is larger than {MAX_BODY_BYTES} bytes.")
    if not raw.strip():
        return RotateBody()
    try:
        data = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except (UnicodeDecodeError, ValueError):
        raise BodyInvalid("The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BodyInvalid("The body must be a JSON object.")
    unknown = sorted(set(data) - set(KNOWN_KEYS))
    if unknown:
        raise BodyInvalid(f"Unknown field {unknown[0][:64]!r}; allowed: {', '.join(KNOWN_KEYS)}.")
    reason = data.get("reason", "")
    if not isinstance(reason, str):
        raise BodyInvalid("reason must be a string.")
    if len(reason) > MAX_REASON_CHARS:
        raise BodyInvalid(f"reason may be at most {MAX_REASON_CHARS} characters.")
    if "delayOldSecretsExpirationHours" not in data:
        return RotateBody(reason=reason)
    delay = data["delayOldSecretsExpirationHours"]
    if isinstance(delay, bool) or not isinstance(delay, int | float):
        raise BodyInvalid("delayOldSecretsExpirationHours must be a number.")
    if not math.isfinite(delay) or not 0 <= delay <= MAX_DELAY_HOURS:
        raise BodyInvalid(f"delayOldSecretsExpirationHours must be from 0 to {MAX_DELAY_HOURS}.")
    return RotateBody(reason=reason, delay_hours=float(delay))


def idempotency_key_parse(value: str) -> str:
    """The Idempotency-Key header (printable ASCII, at most 255 characters), or ""."""
    value = value.strip()
    if len(value) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise BodyInvalid(f"Idempotency-Key may be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters.")
    if not all(32 <= ord(char) <= 126 for char in value):
        raise BodyInvalid("Idempotency-Key must be printable ASCII.")
    return value
