"""The Marketplace calls beyond pushing secrets: list an installation's resources, update a
resource (its dashboard notification), and rotate or revoke the installation's access token.

Same rules as `client`: one request helper, explicit timeouts, no retries here, every
failure a `VercelError`, tokens and the client secret never in an error text. Answers are
checked for the fields we read; an answer without them is a permanent `bad_answer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

from rotation.vercel.client import _request, _segment, _send
from rotation.vercel.errors import VercelError, refusal
from rotation.vercel.ratelimit import RateLimit, rate_limit_from_headers

NOTIFICATION_LEVELS = ("info", "warn", "error")
# Vercel publishes no pagination for this list; a `pagination.next` is followed if one
# appears, at most this many pages.
MAX_RESOURCE_PAGES = 100


@dataclass(frozen=True)
class VercelResource:
    """One resource as Vercel lists it; `partner_id` is our resource id."""

    partner_id: str
    internal_id: str
    product_id: str
    name: str
    status: str | None
    notification: dict[str, Any] | None


@dataclass(frozen=True)
class NewToken:
    """A rotated access token; its repr hides the token."""

    access_token: str
    expires_in: float | None
    scope: str

    def __repr__(self) -> str:
        return f"NewToken(expires_in={self.expires_in!r}, scope={self.scope!r})"


def _bad_answer(what: str) -> VercelError:
    return VercelError(
        status=200, code="bad_answer", message=f"unexpected answer: {what}", permanent=True
    )


def _installation_path(installation_id: str) -> str:
    return f"/v1/installations/{_segment(installation_id, 'installation_id')}"


def _parse_resource(item: Any, index: int) -> VercelResource:
    if not isinstance(item, dict):
        raise _bad_answer(f"resources[{index}] is not an object")
    values = {}
    for key in ("partnerId", "internalId", "productId", "name"):
        value = item.get(key)
        if not isinstance(value, str):
            raise _bad_answer(f"resources[{index}].{key} is missing")
        values[key] = value
    status = item.get("status")
    notification = item.get("notification")
    return VercelResource(
        partner_id=values["partnerId"],
        internal_id=values["internalId"],
        product_id=values["productId"],
        name=values["name"],
        status=status if isinstance(status, str) else None,
        notification=notification if isinstance(notification, dict) else None,
    )


def list_resources(
    *, installation_id: str, token: str, session: requests.Session | None = None
) -> list[VercelResource]:
    """Every resource Vercel holds for the installation (following pages if it sends any)."""
    # Reference: https://vercel.com/docs/rest-api/marketplace/get-integration-resources
    path = f"{_installation_path(installation_id)}/resources"
    resources: list[VercelResource] = []
    params: dict[str, str] | None = None
    for _page in range(MAX_RESOURCE_PAGES):
        answer = _request(
            "GET", path, token=token, body=None, hidden=[token], session=session, params=params
        )
        if not isinstance(answer, dict) or not isinstance(answer.get("resources"), list):
            raise _bad_answer("no resources list")
        start = len(resources)
        resources += [
            _parse_resource(item, start + index) for index, item in enumerate(answer["resources"])
        ]
        pagination = answer.get("pagination")
        following = pagination.get("next") if isinstance(pagination, dict) else None
        if following in (None, ""):
            return resources
        params = {"until": str(following)}
    raise _bad_answer(f"more than {MAX_RESOURCE_PAGES} pages of resources")


def notification_body(
    *, level: str, title: str, message: str = "", href: str = ""
) -> dict[str, str]:
    """A notification exactly per schema: empty optional fields left out."""
    if level not in NOTIFICATION_LEVELS:
        raise refusal(f"notification level must be one of {', '.join(NOTIFICATION_LEVELS)}")
    if not isinstance(title, str) or not title.strip():
        raise refusal("a notification needs a title")
    body = {"level": level, "title": title}
    if message:
        body["message"] = message
    if href:
        body["href"] = href
    return body


def update_resource(
    *,
    installation_id: str,
    resource_id: str,
    token: str,
    fields: dict[str, Any],
    session: requests.Session | None = None,
) -> RateLimit | None:
    """PATCH only the given fields of a resource (`notification: None` clears it). Returns the
    answer's rate-limit headers, if any, so the caller can pace its calls."""
    if not fields:
        raise refusal("nothing to update")
    # Reference: https://vercel.com/docs/rest-api/marketplace/update-resource
    path = f"{_installation_path(installation_id)}/resources/{_segment(resource_id, 'resource_id')}"
    response = _send("PATCH", path, token=token, body=dict(fields), hidden=[token], session=session)
    return rate_limit_from_headers(response.headers)


def _client_body(client_secret: str, client_id: str) -> dict[str, str]:
    if not client_secret:
        raise refusal("VERCEL_CLIENT_SECRET is not set: installation tokens cannot be rotated")
    body = {"client_secret": client_secret}
    if client_id:
        body["client_id"] = client_id
    return body


def rotate_installation_credential(
    *,
    installation_id: str,
    token: str,
    client_secret: str,
    client_id: str = "",
    session: requests.Session | None = None,
) -> NewToken:
    """A new access token; the current one (`token`) stays valid until revoked."""
    body = _client_body(client_secret, client_id)
    # Reference: https://vercel.com/docs/rest-api/marketplace/rotate-installation-credential
    path = f"{_installation_path(installation_id)}/credentials/rotate"
    answer = _request(
        "POST", path, token=token, body=body, hidden=[token, client_secret], session=session
    )
    new = answer.get("access_token") if isinstance(answer, dict) else None
    if not isinstance(new, str) or not new:
        raise _bad_answer("no access_token")
    expires_in = answer.get("expires_in")
    scope = answer.get("scope")
    return NewToken(
        access_token=new,
        expires_in=float(expires_in) if isinstance(expires_in, int | float) else None,
        scope=scope if isinstance(scope, str) else "",
    )


def revoke_installation_credential(
    *,
    installation_id: str,
    token: str,
    revoke: str,
    client_secret: str,
    client_id: str = "",
    session: requests.Session | None = None,
) -> bool:
    """Retire `revoke`, authenticated by the live `token`; True when it was already revoked."""
    body = {"token": revoke, **_client_body(client_secret, client_id)}
    # Reference: https://vercel.com/docs/rest-api/marketplace/revoke-installation-credential
    path = f"{_installation_path(installation_id)}/credentials/revoke"
    answer = _request(
        "POST", path, token=token, body=body, hidden=[token, revoke, client_secret], session=session
    )
    if not isinstance(answer, dict) or not isinstance(answer.get("revoked"), bool):
        raise _bad_answer("no revoked flag")
    return bool(answer.get("alreadyRevoked"))
