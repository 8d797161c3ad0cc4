"""The partner's own control plane makes and revokes credentials; we call it over HTTPS.

The JSON contract (README, "Credential providers"):

- `POST {CREDENTIALS_API_URL}/credentials` with `{"rotation": 42, "resource": {...},
  "secrets": ["DATABASE_URL", ...]}` answers 200 or 201 with `{"secrets": [{"name": ...,
  "value": ...}, ...]}`, one per requested name. Same `Idempotency-Key`, same answer: the
  control plane must not make a second login for a retry.
- `POST {CREDENTIALS_API_URL}/credentials/expire` with `{"rotation": 42, "version": "<uuid>",
  "resource": {...}}` answers 200 or 204, also when the credentials are gone already.

Every request carries `Idempotency-Key: rotation-<id>-<step>`, `X-Partnerportal-Timestamp`
(Unix seconds) and `X-Partnerportal-Signature: sha256=<hex HMAC-SHA256 of
"<timestamp>.<body>" under CREDENTIALS_API_SECRET>`. Timeouts are bounded; 429, 5xx,
timeouts and resets are retried like pushes to Vercel (same error rules, same backoff and
attempt bound), other answers fail at once. Error texts never quote a value.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import requests
from django.conf import settings

from rotation.providers import CredentialProviderError
from rotation.retry_policy import attempts_exhausted, backoff_wait
from rotation.vercel.errors import VercelError, error_from_response, error_from_transport

if TYPE_CHECKING:
    from rotation.models import CredentialVersion, Resource

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Partnerportal-Signature"
TIMESTAMP_HEADER = "X-Partnerportal-Timestamp"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def request_signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` over `<timestamp>.<body>`: what the control plane recomputes."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


class HttpProvider:
    """Credentials from the partner's control plane. Partners subclass it to declare the
    metadata their control plane needs and the secret names it makes (default: none, any)."""

    required_settings: ClassVar[tuple[str, ...]] = ("CREDENTIALS_API_URL", "CREDENTIALS_API_SECRET")
    metadata_fields: ClassVar[tuple[str, ...]] = ()
    secret_names: ClassVar[tuple[str, ...] | None] = None

    def create(self, *, resource: Resource, rotation_id: int) -> list[dict]:
        """New credentials for the rotation, as the control plane made them."""
        template = resource.secret_template or [{"name": "DATABASE_URL", "prefix": ""}]
        names = [entry["name"] for entry in template]
        body = {"rotation": rotation_id, "resource": _resource_body(resource), "secrets": names}
        # Reference: README "Credential providers", the HTTP provider's contract
        answer = _post("credentials", key=f"rotation-{rotation_id}-create", body=body, hidden=[])
        made = answer.get("secrets") if isinstance(answer, dict) else None
        values = _values_by_name(made)
        if values is None or sorted(values) != sorted(names):
            raise CredentialProviderError(
                f"resource {resource.vercel_id}: the control plane's answer does not hold one "
                f"non-empty string value for each of {', '.join(names)}"
            )
        return [
            {"name": entry["name"], "value": values[entry["name"]]}
            | ({"prefix": entry["prefix"]} if entry.get("prefix") else {})
            for entry in template
        ]

    def expire(self, *, resource: Resource, version: CredentialVersion) -> None:
        """Ask the control plane to revoke the version's credentials (idempotent there)."""
        rotation = version.rotation_id
        key = f"rotation-{rotation}-expire" if rotation is not None else f"version-{version.pk}"
        body = {
            "rotation": rotation,
            "version": str(version.pk),
            "resource": _resource_body(resource),
        }
        hidden = [str(secret.get("value", "")) for secret in version.secrets()]
        # Reference: README "Credential providers", the HTTP provider's contract
        _post("credentials/expire", key=key, body=body, hidden=hidden)


def _resource_body(resource: Resource) -> dict[str, Any]:
    return {
        "id": resource.vercel_id,
        "installation": resource.installation.vercel_id,
        "product": resource.product,
        "metadata": resource.metadata,
    }


def _values_by_name(made: Any) -> dict[str, str] | None:
    if not isinstance(made, list):
        return None
    values: dict[str, str] = {}
    for secret in made:
        if not isinstance(secret, dict):
            return None
        name, value = secret.get("name"), secret.get("value")
        if not isinstance(name, str) or not isinstance(value, str) or not value or name in values:
            return None
        values[name] = value
    return values


def _url(path: str) -> str:
    base = settings.CREDENTIALS_API_URL.rstrip("/")
    parts = urlsplit(base)
    if not base or not settings.CREDENTIALS_API_SECRET:
        raise CredentialProviderError("CREDENTIALS_API_URL and CREDENTIALS_API_SECRET must be set")
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in LOOPBACK):
        raise CredentialProviderError("CREDENTIALS_API_URL must be https (http only to this host)")
    return f"{base}/{path}"


def _post(path: str, *, key: str, body: dict[str, Any], hidden: list[str]) -> Any:
    """POST, signed, retrying transient failures with the same Idempotency-Key."""
    url = _url(path)
    data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    timeout = (settings.CREDENTIALS_API_CONNECT_TIMEOUT, settings.CREDENTIALS_API_READ_TIMEOUT)
    attempt = 0
    with requests.Session() as session:
        while True:
            attempt += 1
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "Idempotency-Key": key,
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: request_signature(
                    settings.CREDENTIALS_API_SECRET, timestamp, data
                ),
            }
            error: VercelError
            try:
                response = session.post(
                    url, data=data, headers=headers, timeout=timeout, allow_redirects=False
                )
            except requests.RequestException as exc:
                error = error_from_transport(exc)
            else:
                if response.status_code in (200, 201, 204):
                    return _answer(response, path)
                error = error_from_response(response, hidden)
            if error.permanent or attempts_exhausted(attempt):
                raise CredentialProviderError(
                    f"control plane {path}: {error.message} (attempt {attempt}, not retried)"
                )
            wait = backoff_wait(attempt, error.retry_after)
            logger.warning("control plane %s: %s; retrying in %.1fs", path, error.code, wait)
            time.sleep(wait)


def _answer(response: requests.Response, path: str) -> Any:
    if response.status_code == 204 or not response.content:
        return {}
    try:
        return response.json()
    except ValueError:
        raise CredentialProviderError(f"control plane {path}: the answer is not JSON") from None
