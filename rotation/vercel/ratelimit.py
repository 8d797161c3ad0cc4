"""Vercel's rate-limit headers, read from every answer so pushes can slow down before a 429.

Vercel documents, per answer: `X-RateLimit-Limit` (requests allowed per window),
`X-RateLimit-Remaining` (left in the current window) and `X-RateLimit-Reset` (when the window
is whole again, in UTC epoch seconds). It does not say how long a window is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    """One answer's rate-limit headers; `reset_in` is seconds from when it was read."""

    limit: int
    remaining: int
    reset_in: float


def rate_limit_from_headers(
    headers: Mapping[str, str], *, now: float | None = None
) -> RateLimit | None:
    """The answer's rate limit, or None when its headers are missing or malformed."""
    try:
        limit = int(headers["X-RateLimit-Limit"])
        remaining = int(headers["X-RateLimit-Remaining"])
        reset = float(headers["X-RateLimit-Reset"])
    except (KeyError, TypeError, ValueError):
        return None
    if limit < 1 or not math.isfinite(reset):
        return None
    if reset > 1e11:  # some answers carry milliseconds
        reset /= 1000.0
    now = time.time() if now is None else now
    return RateLimit(limit=limit, remaining=max(0, min(remaining, limit)), reset_in=reset - now)
