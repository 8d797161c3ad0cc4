"""The one place that talks to Vercel's REST API: plain functions over one reused session.

Every call sets explicit (connect, read) timeouts, sends no redirects, and turns every
failure into `VercelError` with `permanent` telling the caller whether a retry can help.
The client does not retry; callers bound their attempts (see `VercelError`). Nothing here
imports models: callers pass ids, the decrypted token and the secret set.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import threading
import time
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter

from rotation.vercel.contract import ENVIRONMENTS, is_valid_env_name

logger = logging.getLogger(__name__)

# Kept equal to pyproject.toml's version (a test checks it).
VERSION = "0.1.0"
USER_AGENT = f"partnerportal/{VERSION}"
ENDPOINTS = ("current", "deprecated")
SECRET_KEYS = frozenset({"name", "value", "prefix", "environmentOverrides"})
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

LOOPBACK_HOSTS = frozenset({"localhost", "::1"})

_session: requests.Session | None = None
_session_pid = 0
_session_lock = threading.Lock()


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

    def __reduce__(self):
        return _rebuild_error, (
            self.status,
            self.code,
            self.message,
            self.permanent,
            self.retry_after,
        )


def _rebuild_error(status, code, message, permanent, retry_after) -> VercelError:
    return VercelError(
        status=status, code=code, message=message, permanent=permanent, retry_after=retry_after
    )


def default_session() -> requests.Session:
    """The process's shared session, so pushes reuse connections."""
    global _session, _session_pid
    with _session_lock:
        # A forked worker must not share its parent's sockets.
        if _session is None or _session_pid != os.getpid():
            session = requests.Session()
            # No transparent retries: a PUT that may have landed is the caller's decision.
            adapter = HTTPAdapter(pool_connections=8, pool_maxsize=32, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
            # No proxies or ~/.netrc from the environment: netrc would replace our bearer.
            session.trust_env = False
            _session = session
            _session_pid = os.getpid()
        return _session


def _refuse(message: str) -> VercelError:
    return VercelError(status=None, code="invalid_request", message=message, permanent=True)


def validate_secrets(secrets: list[dict]) -> None:
    """Refuse a secret set Vercel would reject, or that would wipe a resource, before sending."""
    if not isinstance(secrets, list) or not secrets:
        raise _refuse("secrets must be a non-empty list")
    seen: set[str] = set()
    for index, secret in enumerate(secrets):
        where = f"secrets[{index}]"
        if not isinstance(secret, dict):
            raise _refuse(f"{where} must be an object")
        unknown = sorted(str(key) for key in set(secret) - SECRET_KEYS)
        if unknown:
            raise _refuse(f"{where} has unknown field(s) {', '.join(map(repr, unknown))}")
        name = secret.get("name")
        if not is_valid_env_name(name):
            raise _refuse(
                f"{where}.name must be an environment variable name "
                "(letters, digits and underscore, not starting with a digit)"
            )
        prefix = secret.get("prefix") or ""
        if not isinstance(prefix, str) or (prefix and not is_valid_env_name(prefix)):
            raise _refuse(f"{where}.prefix must be empty or a valid name prefix")
        value = secret.get("value")
        if not isinstance(value, str) or not value:
            raise _refuse(f"{where}.value must be a non-empty string")
        overrides = secret.get("environmentOverrides")
        overrides = {} if overrides is None else overrides
        if not isinstance(overrides, dict):
            raise _refuse(f"{where}.environmentOverrides must be an object")
        for env_name, env_value in overrides.items():
            if env_name not in ENVIRONMENTS:
                raise _refuse(
                    f"{where}.environmentOverrides keys must be {', '.join(ENVIRONMENTS)}"
                )
            if not isinstance(env_value, str) or not env_value:
                raise _refuse(f"{where}.environmentOverrides.{env_name} must be a non-empty string")
        full_name = f"{prefix}{name}"
        if full_name in seen:
            raise _refuse(f"{where}.name: duplicate name {full_name!r}")
        seen.add(full_name)


def secrets_body(secrets: list[dict], *, partial: bool = False) -> dict[str, Any]:
    """The request body exactly per schema: empty optional fields and `partial` left out."""
    items = []
    for secret in secrets:
        item = {"name": secret["name"], "value": secret["value"]}
        if secret.get("prefix"):
            item["prefix"] = secret["prefix"]
        if secret.get("environmentOverrides"):
            item["environmentOverrides"] = dict(secret["environmentOverrides"])
        items.append(item)
    body: dict[str, Any] = {"secrets": items}
    if partial:
        body["partial"] = True
    return body


def _segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise _refuse(f"{what} must be a non-empty string")
    return quote(value, safe="")


def _check_token(token: str) -> None:
    # requests echoes an invalid header value in its exception text; refuse it ourselves.
    if not isinstance(token, str) or not token:
        raise _refuse("the installation has no access token")
    if not all(33 <= ord(char) <= 126 for char in token):
        raise _refuse("the access token contains characters a bearer token cannot hold")


def _base_url() -> str:
    # The bearer token must not cross a network in clear text; the stand-in is local.
    base = settings.VERCEL_API_URL.rstrip("/")
    parts = urlsplit(base)
    host = parts.hostname or ""
    local = host in LOOPBACK_HOSTS or host.startswith("127.")
    if parts.scheme == "https" or (parts.scheme == "http" and local):
        return base
    raise _refuse("VERCEL_API_URL must be https:// (plain http:// only to this machine)")


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


def _scrub(text: str, hidden: list[str]) -> str:
    for value in hidden:
        if value and len(value) >= 4:
            text = text.replace(value, "[redacted]")
    return text


def _error_from_response(response: requests.Response, hidden: list[str]) -> VercelError:
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
    message = _scrub(message, hidden)[:MESSAGE_LIMIT]
    code = _scrub(code, hidden)[:64]
    transient = status >= 500 or status in TRANSIENT_4XX
    retry_after = None
    if transient:
        retry_after = parse_retry_after(
            response.headers.get("Retry-After"), error.get("limit") if error else None
        )
    return VercelError(
        status=status, code=code, message=message, permanent=not transient, retry_after=retry_after
    )


def _request(
    method: str,
    path: str,
    *,
    token: str,
    body: dict[str, Any],
    hidden: list[str],
    session: requests.Session | None,
) -> None:
    _check_token(token)
    url = _base_url() + path
    session = session or default_session()
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    timeout = (settings.VERCEL_CONNECT_TIMEOUT, settings.VERCEL_READ_TIMEOUT)
    started = time.monotonic()
    try:
        response = session.request(
            method, url, data=data, headers=headers, timeout=timeout, allow_redirects=False
        )
    except requests.Timeout as exc:
        # The request may still land on Vercel; PUTting the same set again is harmless.
        error = VercelError(
            status=None,
            code="timeout",
            message=f"no answer in time ({type(exc).__name__})",
            permanent=False,
        )
    except requests.ConnectionError as exc:
        error = VercelError(
            status=None,
            code="connection_error",
            message=f"connection failed ({type(exc).__name__})",
            permanent=False,
        )
    except requests.RequestException as exc:
        # Texts of other request errors may quote headers: keep only the class name.
        error = VercelError(
            status=None,
            code="request_error",
            message=f"request could not be sent ({type(exc).__name__})",
            permanent=True,
        )
    else:
        elapsed_ms = (time.monotonic() - started) * 1000
        if 200 <= response.status_code < 300:
            logger.info(
                "vercel %s %s -> %s in %.0f ms", method, path, response.status_code, elapsed_ms
            )
            return
        error = _error_from_response(response, hidden)
    logger.warning(
        "vercel %s %s failed: %s", method, path, error, extra={"vercel_code": error.code}
    )
    raise error


def update_resource_secrets(
    *,
    installation_id: str,
    resource_id: str,
    token: str,
    secrets: list[dict],
    endpoint: str = "current",
    product: str | None = None,
    partial: bool = False,
    session: requests.Session | None = None,
) -> None:
    """Push a resource's secret set; without `partial` it replaces every secret it had."""
    validate_secrets(secrets)
    if endpoint == "current":
        # Reference: https://vercel.com/docs/rest-api/reference/endpoints/marketplace/update-resource-secrets
        path = (
            f"/v1/installations/{_segment(installation_id, 'installation_id')}"
            f"/resources/{_segment(resource_id, 'resource_id')}/secrets"
        )
    elif endpoint == "deprecated":
        # Reference: https://vercel.com/docs/rest-api/reference/endpoints/marketplace/update-resource-secrets-deprecated
        path = (
            f"/v1/installations/{_segment(installation_id, 'installation_id')}"
            f"/products/{_segment(product or '', 'product')}"
            f"/resources/{_segment(resource_id, 'resource_id')}/secrets"
        )
    else:
        raise _refuse(f"endpoint must be one of {', '.join(ENDPOINTS)}")
    hidden = [token]
    for secret in secrets:
        hidden.append(secret["value"])
        hidden.extend((secret.get("environmentOverrides") or {}).values())
    _request(
        "PUT",
        path,
        token=token,
        body=secrets_body(secrets, partial=partial),
        hidden=hidden,
        session=session,
    )


def create_event(
    *,
    installation_id: str,
    token: str,
    resource_id: str,
    product_id: str | None = None,
    session: requests.Session | None = None,
) -> None:
    """Tell Vercel a resource changed (`resource.updated`) so it re-reads its state."""
    event: dict[str, Any] = {"type": "resource.updated", "resourceId": resource_id}
    if not isinstance(resource_id, str) or not resource_id:
        raise _refuse("resource_id must be a non-empty string")
    if product_id:
        event["productId"] = product_id
    # Reference: https://vercel.com/docs/rest-api/reference/endpoints/marketplace/create-event
    path = f"/v1/installations/{_segment(installation_id, 'installation_id')}/events"
    _request("POST", path, token=token, body={"event": event}, hidden=[token], session=session)
