"""When to try a Vercel call again after a transient error, and the retried PUT of a secret
set that push and rollback share.

Transient errors (429, 5xx, timeouts, resets) are retried with backoff honouring
`Retry-After`, at most `ROTATION_PUSH_MAX_ATTEMPTS` times. Short waits happen in the worker;
longer ones (or ones that would overrun the task's deadline) are left to the sweeper.

A 410 or 404 from the deprecated endpoint is followed by one try of the same secret set on
the current endpoint (`rotation.vercel.endpoints`); when Vercel takes it there, the
installation is switched to the current endpoint for every later push.

Every PUT goes through the installation's pace (`rotation.services.pace`): a slot among the
PUTs in flight and a token of Vercel's rate limit, none while a 429 seen by any worker pauses
the installation.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Protocol

from django.conf import settings

from rotation import vercel
from rotation.retry_policy import attempts_exhausted, backoff_wait
from rotation.services.endpoints import installation_endpoint_fall_back, push_endpoint
from rotation.services.pace import PACER, Pacer
from rotation.vercel import endpoints

if TYPE_CHECKING:
    import requests

    from rotation.models import Resource, Rotation

logger = logging.getLogger(__name__)


def wait_in_worker(wait: float, deadline: float | None) -> bool:
    """Whether to sleep through `wait` here rather than free the worker and defer."""
    return wait <= settings.ROTATION_PUSH_INLINE_WAIT_MAX and (
        deadline is None or time.monotonic() + wait < deadline
    )


class PutAttempts(Protocol):
    """A pipeline's side of `resource_secrets_put`; each method records in its own short
    transaction, so no row lock is held during the PUT or the sleep."""

    rotation: Rotation

    @property
    def attempts(self) -> int:
        """Attempts made so far, the one that just failed included."""
        ...

    def fail(self, *, status: int | None, code: str, message: str) -> str:
        """Record that the PUT failed for good; returns the state afterwards."""
        ...

    def note_transient(self, exc: vercel.VercelError, *, wait: float, defer: bool) -> bool:
        """Record a transient error (left to the sweeper when `defer`); whether still wanted."""
        ...

    def attempt_again(self) -> bool:
        """Claim the next in-worker attempt; False when the row no longer wants it."""
        ...

    def state(self) -> str:
        """The rotation's state now, returned when the PUT is given up."""
        ...

    def still_wanted(self) -> bool:
        """Whether the PUT is still wanted, after waiting out a pause (no attempt counted)."""
        ...


def resource_secrets_put(
    put: PutAttempts,
    *,
    resource: Resource,
    token: str,
    secrets: list[dict],
    session: requests.Session | None,
    deadline: float | None,
    pacer: Pacer = PACER,
) -> str | None:
    """PUT the secret set, retrying transient errors; None when Vercel took it, else the state."""
    installation = resource.installation
    endpoint = push_endpoint(installation)
    gone: vercel.VercelError | None = None  # the deprecated endpoint's 410/404, once seen
    while True:
        paused = pacer.acquire(installation.pk)
        if paused:
            if wait_in_worker(paused, deadline):
                time.sleep(paused)
                if not put.still_wanted():
                    return put.state()
                continue
            # Left to the sweeper, like a long Retry-After: this worker pushes other things.
            put.note_transient(_paused_error(paused), wait=paused, defer=True)
            return put.state()
        exc = _put_in_slot(
            pacer,
            installation_id=installation.pk,
            call={
                "installation_id": installation.vercel_id,
                "resource_id": resource.vercel_id,
                "token": token,
                "secrets": secrets,
                "endpoint": endpoint,
                "product": resource.product,
                "session": session,
            },
        )
        if exc is None:
            if gone is not None:
                installation_endpoint_fall_back(
                    installation=installation,
                    resource=resource,
                    rotation_id=put.rotation.pk,
                    deprecated_answer={"status": gone.status, "code": gone.code},
                    # The client reports success without the exact 2xx status.
                    current_answer={"status": "2xx", "code": "accepted"},
                )
            return None
        if gone is None and endpoints.falls_back(endpoint, exc):
            logger.warning(
                "deprecated secrets endpoint answered %s %s for %s/%s; trying the current one",
                exc.status,
                exc.code,
                installation.vercel_id,
                resource.vercel_id,
            )
            gone, endpoint = exc, endpoints.CURRENT
            continue
        message = exc.message
        if gone is not None:
            message += f" (the deprecated endpoint answered {gone.status} {gone.code} first)"
        if exc.permanent:
            return put.fail(status=exc.status, code=exc.code, message=message)
        attempts = put.attempts
        wait = backoff_wait(attempts, exc.retry_after)
        if exc.status == 429:
            # Every worker waits, not only this one: the limit is the token's.
            pacer.rate_limited(installation.pk, wait=wait)
        if attempts_exhausted(attempts):
            message = f"Gave up after {attempts} attempts; last error: {message}"
            return put.fail(status=exc.status, code=exc.code, message=message)
        inline = wait_in_worker(wait, deadline)
        if not put.note_transient(exc, wait=wait, defer=not inline) or not inline:
            return put.state()
        time.sleep(wait)
        if not put.attempt_again():
            return put.state()
        if gone is None:
            endpoint = push_endpoint(installation)  # another push may have switched it


def _put_in_slot(pacer: Pacer, *, installation_id: int, call: dict) -> vercel.VercelError | None:
    """One PUT in a slot taken from `pacer`; the error, or None when Vercel took it."""
    accepted, rate_limit = False, None
    try:
        sent, cpu = time.monotonic(), time.thread_time()
        # Reference: https://vercel.com/docs/rest-api/reference/endpoints/marketplace/update-resource-secrets
        rate_limit = vercel.update_resource_secrets(**call)
        pacer.timed(wall=time.monotonic() - sent, cpu=time.thread_time() - cpu)
        accepted = True
        return None
    except vercel.VercelError as exc:
        return exc
    finally:
        pacer.release(installation_id, accepted=accepted, rate_limit=rate_limit)


def _paused_error(wait: float) -> vercel.VercelError:
    """What a rotation waiting out its installation's rate-limit pause records."""
    return vercel.VercelError(
        status=429,
        code="rate_limited",
        message=f"Waiting {wait:.0f}s for Vercel's rate limit on this installation's token.",
        permanent=False,
        retry_after=wait,
    )
