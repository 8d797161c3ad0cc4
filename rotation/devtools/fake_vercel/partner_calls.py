"""The stand-in playing Vercel towards the partner: Request Secrets Rotation (CONTRACT §5).

It signs an OIDC token with its own key (`signing`), serves that key at `/.well-known/jwks`,
and POSTs `/v1/installations/{id}/resources/{id}/secrets/rotate` to the portal. Requests
start from the form on the stand-in's page or from `POST /_fake/request-rotation` (JSON, what
`manage.py fake_vercel_request_rotation` sends); the last answers are listed on the page.
"""

from __future__ import annotations

import hashlib
import html
import json
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote

import requests

from rotation.devtools.fake_vercel.installations import InstallationStore
from rotation.devtools.fake_vercel.signing import SigningKey
from rotation.devtools.fake_vercel.wire import Answer, Handler, error

JWKS_PATH = "/.well-known/jwks"
TRIGGER_PATH = "/_fake/request-rotation"
ROLES = ("ADMIN", "USER", "system")
SENT_SHOWN = 20


@dataclass
class SentRequest:
    """One rotate request sent to the portal, and what the portal answered."""

    installation_id: str
    resource_id: str
    role: str
    idempotency_key: str
    status: int | None = None
    answer: Any = None
    error: str = ""
    at: str = field(default_factory=lambda: datetime.now(UTC).strftime("%H:%M:%S"))

    def as_json(self) -> dict[str, Any]:
        return {
            "installation": self.installation_id,
            "resource": self.resource_id,
            "role": self.role,
            "idempotency_key": self.idempotency_key,
            "status": self.status,
            "answer": self.answer,
            "error": self.error,
        }


def _hex_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class PartnerCaller:
    """Signs tokens and sends rotate requests; `base_url` gives the stand-in's own URL."""

    def __init__(
        self,
        store: InstallationStore,
        *,
        base_url: Callable[[], str],
        portal_url: str,
        client_id: str,
        issuer: str | None = None,
    ) -> None:
        self.store = store
        self.base_url = base_url
        self.portal_url = portal_url.rstrip("/")
        self.client_id = client_id
        self._issuer = issuer
        self.key = SigningKey()
        self._sent: deque[SentRequest] = deque(maxlen=SENT_SHOWN)
        self._lock = threading.Lock()
        self.jwks_served = 0  # how often the partner fetched the keys (tests bound refetches)

    @property
    def issuer(self) -> str:
        """The `iss` of its tokens: the stand-in's own URL unless set."""
        return self._issuer or self.base_url()

    def claims(self, installation_id: str, *, role: str = "ADMIN") -> dict[str, Any]:
        """What Vercel puts in the token of a user (ADMIN or USER) or of the system."""
        account = _hex_of(f"account:{installation_id}")
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.client_id,
            "account_id": account,
            "installation_id": installation_id,
            "sub": f"account:{account}",
        }
        if role != "system":
            user = _hex_of(f"user:{installation_id}")
            claims.update(
                sub=f"account:{account}:user:{user}",
                user_id=user,
                user_role=role,
                user_email="customer@example.com",
                user_name="Demo Customer",
            )
        return claims

    def request_rotation(
        self,
        installation_id: str,
        resource_id: str,
        *,
        reason: str = "",
        delay_hours: float | None = None,
        role: str = "ADMIN",
        idempotency_key: str | None = None,
        portal_url: str | None = None,
    ) -> SentRequest:
        """POST Request Secrets Rotation to the portal, signed as Vercel; returns the answer."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        sent = SentRequest(installation_id, resource_id, role, idempotency_key or str(uuid.uuid4()))
        body: dict[str, Any] = {}
        if reason:
            body["reason"] = reason
        if delay_hours is not None:
            body["delayOldSecretsExpirationHours"] = delay_hours
        base = (portal_url or self.portal_url).rstrip("/")
        url = (
            f"{base}/v1/installations/{quote(installation_id, safe='')}"
            f"/resources/{quote(resource_id, safe='')}/secrets/rotate"
        )
        token = self.key.sign(self.claims(installation_id, role=role))
        try:
            response = requests.post(
                url,
                json=body,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Idempotency-Key": sent.idempotency_key,
                    "X-Vercel-Auth": "system" if role == "system" else "user",
                },
                timeout=(3.05, 30),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            sent.error = f"the portal at {base} did not answer ({type(exc).__name__})"
        else:
            sent.status = response.status_code
            try:
                sent.answer = response.json()
            except ValueError:
                sent.answer = response.text[:300]
        with self._lock:
            self._sent.appendleft(sent)
        return sent

    @property
    def sent(self) -> list[SentRequest]:
        """Requests sent, newest first (the last SENT_SHOWN)."""
        with self._lock:
            return list(self._sent)

    def answer(self, handler: Handler, method: str, path: str, raw: bytes) -> Answer | None:
        """The answer for the stand-in's Vercel-side paths; None for any other path."""
        if path == JWKS_PATH and method == "GET":
            with self._lock:
                self.jwks_served += 1
            return Answer(200, self.key.jwks(), {"Cache-Control": "max-age=300"})
        if path != TRIGGER_PATH:
            return None
        if method != "POST":
            return error(405, "method_not_allowed", "Not allowed")
        origin = handler.headers.get("Origin")
        if origin and origin.rstrip("/") != self.base_url():
            return error(403, "forbidden", "Cross-site request refused")
        content_type = (handler.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type == "application/json":
            return self._trigger_json(raw)
        return self._trigger_form(raw)

    def _trigger_json(self, raw: bytes) -> Answer:
        try:
            data = json.loads(raw or b"{}")
            sent = self.request_rotation(
                str(data["installation"]),
                str(data["resource"]),
                reason=str(data.get("reason") or ""),
                delay_hours=data.get("delay_hours"),
                role=str(data.get("role") or "ADMIN"),
                idempotency_key=data.get("idempotency_key") or None,
                portal_url=data.get("portal_url") or None,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return error(400, "bad_request", f"Invalid trigger: {type(exc).__name__} {exc}")
        return Answer(502 if sent.error else 200, sent.as_json())

    def _trigger_form(self, raw: bytes) -> Answer:
        form = {key: values[0] for key, values in parse_qs(raw.decode("utf-8", "replace")).items()}
        installation_id, _, resource_id = (form.get("resource") or "").partition(" ")
        try:
            delay = form.get("delay_hours", "").strip()
            self.request_rotation(
                installation_id,
                resource_id,
                reason=form.get("reason", "").strip(),
                delay_hours=float(delay) if delay else None,
                role=form.get("role") or "ADMIN",
            )
        except ValueError as exc:
            return error(400, "bad_request", f"Invalid form: {exc}")
        return Answer(303, None, {"Location": "/"})

    def page_section(self) -> str:
        """The form that asks the portal to rotate, and the answers so far (HTML)."""
        options = "".join(
            f"<option value='{html.escape(f'{installation} {resource}')}'>"
            f"{html.escape(installation)} / {html.escape(resource)}</option>"
            for installation, resource, _, _ in self.store.page_rows()
            if installation and resource
        )
        roles = "".join(f"<option>{role}</option>" for role in ROLES)
        rows = "".join(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(cell))}</td>"
                for cell in (
                    sent.at,
                    f"{sent.installation_id} / {sent.resource_id}",
                    sent.role,
                    sent.status if sent.status is not None else "-",
                    sent.error or json.dumps(sent.answer),
                )
            )
            + "</tr>"
            for sent in self.sent
        )
        return (
            "<h2>Play Vercel: ask the partner to rotate</h2>"
            f"<form method='post' action='{TRIGGER_PATH}' id='request-rotation-form'>"
            f"<label>Resource <select name='resource' id='rotation-resource'>{options}</select>"
            "</label> <label>Reason <input name='reason' maxlength='500' "
            "value='Customer clicked rotate in the Vercel dashboard'></label> "
            "<label>Delay hours <input name='delay_hours' size='4' placeholder='default'>"
            f"</label> <label>Role <select name='role'>{roles}</select></label> "
            "<button type='submit' id='request-rotation'>Request secrets rotation</button>"
            f"</form><p>Sent as Vercel to {html.escape(self.portal_url)} "
            f"(iss {html.escape(self.issuer)}, aud {html.escape(self.client_id)}).</p>"
            "<table border='1' cellpadding='4' id='rotation-requests'><thead><tr><th>at</th>"
            "<th>resource</th><th>role</th><th>status</th><th>answer</th></tr></thead><tbody>"
            + (rows or "<tr><td colspan='5'>no requests sent yet</td></tr>")
            + "</tbody></table>"
        )
