"""When to try a call to another system again after a transient error: the backoff and the
bound on attempts that the Vercel push and the HTTP credential provider share."""

from __future__ import annotations

import random

from django.conf import settings


def backoff_wait(attempt: int, retry_after: float | None) -> float:
    """Seconds to wait before the next attempt: Vercel's wait when given, else exponential
    backoff with jitter (so workers that failed together do not retry together)."""
    if retry_after is not None:
        return max(0.0, retry_after) * random.uniform(1.0, 1.1)
    return min(settings.ROTATION_PUSH_BACKOFF_BASE * 2 ** (attempt - 1), 60.0) * random.uniform(
        0.5, 1.0
    )


def attempts_exhausted(attempts: int) -> bool:
    """Whether a call that failed `attempts` times should give up."""
    return attempts >= settings.ROTATION_PUSH_MAX_ATTEMPTS
