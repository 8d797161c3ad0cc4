"""When to try a Vercel call again after a transient error: shared by push and rollback.

Transient errors (429, 5xx, timeouts, resets) are retried with backoff honouring
`Retry-After`, at most `ROTATION_PUSH_MAX_ATTEMPTS` times. Short waits happen in the worker;
longer ones (or ones that would overrun the task's deadline) are left to the sweeper.
"""

from __future__ import annotations

import random
import time

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


def wait_in_worker(wait: float, deadline: float | None) -> bool:
    """Whether to sleep through `wait` here rather than free the worker and defer."""
    return wait <= settings.ROTATION_PUSH_INLINE_WAIT_MAX and (
        deadline is None or time.monotonic() + wait < deadline
    )
