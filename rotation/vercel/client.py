"""The one place that talks to Vercel's REST API: plain functions over one reused session.

Every call sets explicit (connect, read) timeouts, sends no redirects, and turns every
failure into `VercelError` with `permanent` telling the caller whether a retry can help.
The client does not retry; callers bound their attempts (see `VercelError`). Nothing here
imports models: callers pass ids, the decrypted token and the secret set.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
import time
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter

from rotation.redaction import secret_values
from rotation.vercel.contract import ENVIRONMENTS, is_valid_env_name
from rotation.vercel.errors import error_from_response, error_from_transport, refusal
from rotation.vercel.ratelimit import RateLimit, rate_limit_from_headers

logger = logging.getLogger(__name__)

# Kept equal to pyproject.toml's version (a test checks it).
VERSION = "0.1.0"
USER_AGENT = f"partnerportal/{VERSION}"
ENDPOINTS = ("current", "deprecated")
SECRET_KEYS = frozenset({"name", "value", "prefix", "environmentOverrides"})

_session: requests.Session | None = None
_session_pid = 0
_session_lock = threading.Lock()


def default_session() -> requests.Session:
    """The process's shared session, so pushes reuse connections."""
    global _session, _session_pid
    with _session_lock:
        # A forked worker must not share its parent's sockets.
        if _session is None or _session_pid != os.getpid():
            session = requests.Session()
            # No transparent retries: a PUT that may have landed is the caller's decision.
            # One kept-alive connection per push thread (ROTATION_PUSH_CONCURRENCY).
            adapter = HTTPAdapter(
                pool_connections=8,
                pool_maxsize=max(32, settings.ROTATION_PUSH_CONCURRENCY),
                max_retries=0,
            )
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
            # No proxies or ~/.netrc from the environment: netrc would replace our bearer.
            session.trust_env = False
            _session = session
            _session_pid = os.getpid()
        return _session


def validate_secrets(secrets: list[dict[str, Any]]) -> None:
    """Refuse a secret set Vercel would reject, or that would wipe a resource, before sending."""
    if not isinstance(secrets, list) or not secrets:
        raise refusal("secrets must be a non-empty list")
    seen: set[str] = set()
    for index, secret in enumerate(secrets):
        where = f"secrets[{index}]"
        if not isinstance(secret, dict):
            raise refusal(f"{where} must be an object")
        unknown = sorted(str(key) for key in set(secret) - SECRET_KEYS)
        if unknown:
            raise refusal(f"{where} has unknown field(s) {', '.join(map(repr, unknown))}")
        name = secret.get("name")
        if not is_valid_env_name(name):
            raise refusal(
                f"{where}.name must be an environment variable name "
                "(letters, digits and underscore, not starting with a digit)"
            )
        prefix = secret.get("prefix") or ""
        if not isinstance(prefix, str) or (prefix and not is_valid_env_name(prefix)):
            raise refusal(f"{where}.prefix must be empty or a valid name prefix")
        value = secret.get("value")
        if not isinstance(value, str) or not value:
            raise refusal(f"{where}.value must be a non-empty string")
        overrides = secret.get("environmentOverrides")
        overrides = {} if overrides is None else overrides
        if not isinstance(overrides, dict):
            raise refusal(f"{where}.environmentOverrides must be an object")
        for env_name, env_value in overrides.items():
            if env_name not in ENVIRONMENTS:
                raise refusal(
                    f"{where}.environmentOverrides keys must be {', '.join(ENVIRONMENTS)}"
                )
            if not isinstance(env_value, str) or not env_value:
                raise refusal(f"{where}.environmentOverrides.{env_name} must be a non-empty string")
        full_name = f"{prefix}{name}"
        if full_name in seen:
            raise refusal(f"{where}.name: duplicate name {full_name!r}")
        seen.add(full_name)


def secrets_body(secrets: list[dict[str, Any]], *, partial: bool = False) -> dict[str, Any]:
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
        raise refusal(f"{what} must be a non-empty string")
    return quote(value, safe="")


def _check_token(token: str) -> None:
    # requests echoes an invalid header value in its exception text; refuse it ourselves.
    if not isinstance(token, str) or not token:
        raise refusal("the installation has no access token")
    if not all(33 <= ord(char) <= 126 for char in token):
        raise refusal("the access token contains characters a bearer token cannot hold")


def _is_loopback(host: str) -> bool:
    # An address, not a name that merely starts like one: `127.attacker.example` is not local.
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_https_or_loopback(url: str) -> bool:
    """Whether `url` is https, or plain http to this machine (the stand-in)."""
    parts = urlsplit(url)
    return parts.scheme == "https" or (
        parts.scheme == "http" and _is_loopback(parts.hostname or "")
    )


def _base_url() -> str:
    # The bearer token must not cross a network in clear text; the stand-in is local.
    base = settings.VERCEL_API_URL.rstrip("/")
    if is_https_or_loopback(base):
        return base
    raise refusal("VERCEL_API_URL must be https:// (plain http:// only to this machine)")


def _request(method: str, path: str, **call: Any) -> Any:
    """Send one call (`_send`); returns the answer's JSON (None when it has no body)."""
    return _answer_json(_send(method, path, **call))


def _send(
    method: str,
    path: str,
    *,
    token: str,
    body: dict[str, Any] | None,
    hidden: list[str],
    session: requests.Session | None,
    params: dict[str, str] | None = None,
) -> requests.Response:
    """Send one call; returns the 2xx answer, else raises `VercelError`."""
    _check_token(token)
    url = _base_url() + path
    session = session or default_session()
    data = None if body is None else json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    headers = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT}
    if data is not None:
        headers["Content-Type"] = "application/json"
    timeout = (settings.VERCEL_CONNECT_TIMEOUT, settings.VERCEL_READ_TIMEOUT)
    started = time.monotonic()
    try:
        # Prepared here: `session.request` merges the session's settings at a CPU cost per
        # call above the rest of this module's. Its headers, cookies, auth and hooks still
        # apply (proxies and TLS settings come with `send`); ~/.netrc never does (it would
        # replace the bearer, see default_session).
        prepared = requests.Request(
            method,
            url,
            headers={**session.headers, **headers},
            data=None if data is None else data.encode(),
            params=params,
            cookies=session.cookies,
            auth=session.auth,
            hooks=session.hooks,
        ).prepare()
        response = session.send(prepared, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        error = error_from_transport(exc)
    else:
        elapsed_ms = (time.monotonic() - started) * 1000
        if 200 <= response.status_code < 300:
            logger.info(
                "vercel %s %s -> %s in %.0f ms", method, path, response.status_code, elapsed_ms
            )
            return response
        error = error_from_response(response, hidden)
    logger.warning(
        "vercel %s %s failed: %s", method, path, error, extra={"vercel_code": error.code}
    )
    raise error


def _answer_json(response: requests.Response) -> Any:
    # Callers that need an answer check its shape (see rotation.vercel.marketplace).
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def update_resource_secrets(
    *,
    installation_id: str,
    resource_id: str,
    token: str,
    secrets: list[dict[str, Any]],
    endpoint: str = "current",
    product: str | None = None,
    partial: bool = False,
    session: requests.Session | None = None,
) -> RateLimit | None:
    """Push a resource's secret set; without `partial` it replaces every secret it had.
    Returns the answer's rate-limit headers, if any, so the caller can pace its pushes."""
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
        raise refusal(f"endpoint must be one of {', '.join(ENDPOINTS)}")
    hidden = [token, *secret_values(secrets)]
    response = _send(
        "PUT",
        path,
        token=token,
        body=secrets_body(secrets, partial=partial),
        hidden=hidden,
        session=session,
    )
    return rate_limit_from_headers(response.headers)
