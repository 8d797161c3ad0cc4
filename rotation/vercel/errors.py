"""`VercelError` and how every failure becomes one: Vercel's answers by status and error
body, transport failures by exception class, refusals before sending. Also the reading of the
waits Vercel asks for (`Retry-After`, or the `limit` of its error body).

Nothing here holds a token or a secret value: answer texts are redacted before they are kept.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable
from typing import Any

import requests

from rotation.redaction import redact

# Waits Vercel asks for are clamped: tiny or negative values have been seen, and a huge one
# must not park a worker for hours.
RETRY_AFTER_MIN = 0.5
RETRY_AFTER_MAX = 300.0
MESSAGE_LIMIT = 500
TRANSIENT_4XX = frozenset({408, 409, 425, 429})
DEFAULT_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    408: "request_timeout",
    409: "conflict",
    410: "gone",
    422: "unprocessable_entity",
    429: "rate_limited",
}

# Transport failures, most specific first (a ConnectTimeout is both of the first two).
# Their texts may quote headers, so a message names only the exception class.
TRANSPORT_ERRORS: tuple[tuple[type[requests.RequestException], str, str, bool], ...] = (
    # The request may still land on Vercel; PUTting the same set again is harmless.
    (requests.Timeout, "timeout", "no answer in time", False),
    (requests.ConnectionError, "connection_error", "connection failed", False),
    (requests.RequestException, "request_error", "request could not be sent", True),
)


class VercelError(Exception):
    """A call to Vercel failed; `permanent` says whether retrying the same call can help.

    Transient (`permanent=False`): 429, 5xx, 408, timeouts, connection errors, and 409
    (a conflicting concurrent change on Vercel's side): retry with backoff, waiting at least
    `retry_after` seconds when set, and bound the attempts (409 especially: a few at most).
    Permanent: 400, 401, 403, 404, 410, 422, any other unexpected status or redirect, and
    bodies refused by `validate_secrets` before sending (`status=None`,
    `code="invalid_request"`). The text never contains a token or a secret value.
    """

    def __init__(
        self,
        *,
        status: int | None,
        code: str,
        message: str,
        permanent: bool,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after
        super().__init__(str(self))

    def __str__(self) -> str:
        status = self.status if self.status is not None else "no response"
        kind = "permanent" if self.permanent else "transient"
        wait = f", retry after {self.retry_after:g}s" if self.retry_after is not None else ""
        return f"Vercel {status} {self.code} ({kind}{wait}): {self.message}"

    def __repr__(self) -> str:
        return (
            f"VercelError(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, permanent={self.permanent!r}, "
            f"retry_after={self.retry_after!r})"
        )

    def __reduce__(
        self,
    ) -> tuple[Callable[..., VercelError], tuple[int | None, str, str, bool, float | None]]:
        return _rebuild_error, (
            self.status,
            self.code,
            self.message,
            self.permanent,
            self.retry_after,
        )


def _rebuild_error(
    status: int | None, code: str, message: str, permanent: bool, retry_after: float | None
) -> VercelError:
    return VercelError(
        status=status, code=code, message=message, permanent=permanent, retry_after=retry_after
    )


def refusal(message: str) -> VercelError:
    """A refusal before sending: the call as asked can never succeed."""
    return VercelError(status=None, code="invalid_request", message=message, permanent=True)


def _clamp(seconds: float) -> float:
    return min(max(seconds, RETRY_AFTER_MIN), RETRY_AFTER_MAX)


def parse_retry_after(
    header: str | None, limit: Any = None, *, now: float | None = None
) -> float | None:
    """Seconds to wait: `Retry-After` (seconds or HTTP date), else `limit.reset`, clamped."""
    now = time.time() if now is None else now
    if header:
        header = header.strip()
        try:
            seconds = float(header)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(header)
            except (TypeError, ValueError, IndexError):
                when = None
            seconds = when.timestamp() - now if when is not None and when.tzinfo else math.nan
        if math.isfinite(seconds):
            return _clamp(seconds)
    if isinstance(limit, dict):
        for key, scale in (("reset", 1.0), ("resetMs", 1000.0)):
            reset = limit.get(key)
            if isinstance(reset, int | float) and not isinstance(reset, bool):
                try:
                    reset = float(reset) / scale
                except OverflowError:  # an integer beyond float range
                    return RETRY_AFTER_MAX if reset > 0 else RETRY_AFTER_MIN
                # Some answers carry milliseconds in `reset`.
                if reset > 1e11:
                    reset /= 1000.0
                if math.isfinite(reset):
                    return _clamp(reset - now)
    return None


def error_from_response(response: requests.Response, hidden: list[str]) -> VercelError:
    """Vercel's error body (or the status alone) as an error; `hidden` values, runs of them
    and URL passwords are masked (rotation.redaction)."""
    status = response.status_code
    error: Any = None
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        error = payload["error"]
    code = error.get("code") if error else None
    message = error.get("message") if error else None
    if not isinstance(code, str) or not code:
        code = DEFAULT_CODES.get(status) or (
            "internal_server_error" if status >= 500 else f"http_{status}"
        )
    if not isinstance(message, str) or not message:
        reason = response.reason or ""
        kind = "" if error else " (no Vercel error body)"
        message = f"HTTP {status} {reason}".strip() + kind
    # Masked before cut: an echo of a secret, whole or in part, never survives.
    message = redact(message, hidden, limit=MESSAGE_LIMIT)
    code = redact(code, hidden, limit=64)
    transient = status >= 500 or status in TRANSIENT_4XX
    retry_after = None
    if transient:
        retry_after = parse_retry_after(
            response.headers.get("Retry-After"), error.get("limit") if error else None
        )
    return VercelError(
        status=status, code=code, message=message, permanent=not transient, retry_after=retry_after
    )


def error_from_transport(exc: requests.RequestException) -> VercelError:
    """A failure before any answer, named by its class only."""
    code, text, permanent = next(
        (code, text, permanent)
        for kind, code, text, permanent in TRANSPORT_ERRORS
        if isinstance(exc, kind)
    )
    return VercelError(
        status=None, code=code, message=f"{text} ({type(exc).__name__})", permanent=permanent
    )
