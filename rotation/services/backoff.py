"""When to try a Vercel call again after a transient error, and the retried PUT of a secret
set that push and rollback share.

Transient errors (429, 5xx, timeouts, resets) are retried with backoff honouring
`Retry-After`, at most `ROTATION_PUSH_MAX_ATTEMPTS` times. Short waits happen in the worker;
longer ones (or ones that would overrun the task's deadline) are left to the sweeper.

A 410 or 404 from the deprecated endpoint is followed by one try of the same secret set on
the current endpoint (`rotation.vercel.endpoints`); when Vercel takes it there, the
installation is switched to the current endpoint for every later push.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Protocol

from django.conf import settings

from rotation import vercel
from rotation.retry_policy import attempts_exhausted, backoff_wait
from rotation.services.endpoints import installation_endpoint_fall_back, push_endpoint
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


def resource_secrets_put(
    put: PutAttempts,
    *,
    resource: Resource,
    token: str,
    secrets: list[dict],
    session: requests.Session | None,
    deadline: float | None,
) -> str | None:
    """PUT the secret set, retrying transient errors; None when Vercel took it, else the state."""
    installation = resource.installation
    endpoint = push_endpoint(installation)
    gone: vercel.VercelError | None = None  # the deprecated endpoint's 410/404, once seen
    while True:
        try:
            # Reference: https://vercel.com/docs/rest-api/reference/endpoints/marketplace/update-resource-secrets
            vercel.update_resource_secrets(
                installation_id=installation.vercel_id,
                resource_id=resource.vercel_id,
                token=token,
                secrets=secrets,
                endpoint=endpoint,
                product=resource.product,
                session=session,
            )
        except vercel.VercelError as exc:
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
            if attempts_exhausted(attempts):
                message = f"Gave up after {attempts} attempts; last error: {message}"
                return put.fail(status=exc.status, code=exc.code, message=message)
            wait = backoff_wait(attempts, exc.retry_after)
            inline = wait_in_worker(wait, deadline)
            if not put.note_transient(exc, wait=wait, defer=not inline) or not inline:
                return put.state()
            time.sleep(wait)
            if not put.attempt_again():
                return put.state()
            if gone is None:
                endpoint = push_endpoint(installation)  # another push may have switched it
        else:
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
