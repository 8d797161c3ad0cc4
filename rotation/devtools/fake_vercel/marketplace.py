"""The stand-in's Marketplace calls beyond pushing secrets: list resources, update a resource
(its notification), and rotate or revoke installation credentials, checked as strictly as the
secrets endpoints (bearer, schema, faults come first in the responder).

Credentials: an installation may hold several live tokens at once (a rotated token stays
valid until revoked). `CredentialLedger` remembers the extra live tokens, the revoked ones and
when each was issued; a revoked token is refused everywhere, the secrets endpoints included.
"""

from __future__ import annotations

import hmac
import html
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from django.conf import settings

from rotation.devtools.fake_vercel.recording import RecordedRequest
from rotation.devtools.fake_vercel.schema import request_schemas, schema_problems
from rotation.devtools.fake_vercel.wire import Answer, Handler, error, parse_json

if TYPE_CHECKING:
    from rotation.devtools.fake_vercel.installations import InstallationStore

ID = r"(?P<installation>[^/]+)"
ROUTES = (
    (re.compile(rf"^/v1/installations/{ID}/resources$"), "GET", "get-integration-resources"),
    (
        re.compile(rf"^/v1/installations/{ID}/resources/(?P<resource>[^/]+)$"),
        "PATCH",
        "update-resource",
    ),
    (
        re.compile(rf"^/v1/installations/{ID}/credentials/rotate$"),
        "POST",
        "rotate-installation-credential",
    ),
    (
        re.compile(rf"^/v1/installations/{ID}/credentials/revoke$"),
        "POST",
        "revoke-installation-credential",
    ),
)
TOKEN_EXPIRES_IN = 365 * 24 * 3600


def _same(known: str, given: str) -> bool:
    return hmac.compare_digest(known.encode(), given.encode())


@dataclass
class ResourceOnVercel:
    """What Vercel itself holds of a resource besides its secrets."""

    name: str | None = None
    status: str = "ready"
    notification: dict[str, Any] | str | None = None
    internal_id: str = field(default_factory=lambda: "iri_" + secrets.token_hex(8))


class CredentialLedger:
    """Live and revoked tokens per installation, beyond the one the store holds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[str, list[str]] = {}
        self._revoked: dict[str, list[str]] = {}
        self._issued: dict[str, float] = {}
        self._resources: dict[tuple[str, str], ResourceOnVercel] = {}

    def issued(self, token: str) -> None:
        with self._lock:
            self._issued.setdefault(token, time.time())

    def issued_at(self, token: str | None) -> float | None:
        with self._lock:
            return None if token is None else self._issued.get(token)

    def add_live(self, installation_id: str, token: str) -> None:
        with self._lock:
            self._live.setdefault(installation_id, []).append(token)
            self._issued.setdefault(token, time.time())

    def live(self, installation_id: str, current: str | None) -> list[str]:
        """Live tokens: the store's current one and rotated ones, minus revoked ones."""
        with self._lock:
            tokens = list(self._live.get(installation_id, []))
            revoked = list(self._revoked.get(installation_id, []))
        if current is not None and not any(_same(current, token) for token in tokens):
            tokens.insert(0, current)
        return [token for token in tokens if not any(_same(token, gone) for gone in revoked)]

    def is_revoked(self, installation_id: str, token: str) -> bool:
        with self._lock:
            return any(_same(token, gone) for gone in self._revoked.get(installation_id, []))

    def revoke(self, installation_id: str, token: str) -> None:
        with self._lock:
            self._revoked.setdefault(installation_id, []).append(token)

    def resource(self, installation_id: str, resource_id: str) -> ResourceOnVercel:
        with self._lock:
            return self._resources.setdefault((installation_id, resource_id), ResourceOnVercel())

    def learn_names(self, installation_id: str, names: dict[str, str]) -> None:
        """Names of resources, for resources whose name Vercel does not hold yet."""
        with self._lock:
            for resource_id, name in names.items():
                held = self._resources.setdefault(
                    (installation_id, resource_id), ResourceOnVercel()
                )
                if held.name is None:
                    held.name = name


def live_token_check(
    handler: Handler, store: InstallationStore, reload: Callable[[], bool], installation_id: str
) -> str:
    """The bearer token when it is live for the installation; else Vercel's 401/403/404."""
    header = handler.headers.get("Authorization") or ""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise error(401, "unauthorized", "The request is missing an authentication token")
    ledger = store.credentials

    def accepted() -> bool | None:
        current = store.token_of(installation_id)
        if current is None:
            return None
        return any(_same(live, token) for live in ledger.live(installation_id, current))

    ok = accepted()
    if not ok and not ledger.is_revoked(installation_id, token) and reload():
        ok = accepted()
    if ok is None:
        raise error(404, "not_found", "Installation not found")
    if ledger.is_revoked(installation_id, token):
        raise error(401, "unauthorized", "The token has been revoked")
    if not ok:
        raise error(403, "forbidden", "Not authorized")
    return token


class MarketplaceEndpoints:
    """List resources, update a resource, rotate and revoke installation credentials."""

    def __init__(self, store: InstallationStore, reload: Callable[[], bool]) -> None:
        self.store = store
        self.reload = reload
        self.client_secret: str | None = None  # None: settings.VERCEL_CLIENT_SECRET
        # Vercel publishes no pagination for the list; set to page it as other lists do.
        self.page_size: int | None = None

    def answer(
        self, handler: Handler, method: str, path: str, raw: bytes, recorded: RecordedRequest
    ) -> Answer:
        found = [
            (match, verb, op) for pattern, verb, op in ROUTES if (match := pattern.match(path))
        ]
        if not found:
            raise error(404, "not_found", "The requested path was not found")
        match, verb, operation = found[0]
        if method != verb:
            raise error(405, "method_not_allowed", "Not allowed")
        recorded.operation = operation
        ids = {key: unquote(value) for key, value in match.groupdict().items()}
        installation_id = ids["installation"]
        bearer = live_token_check(handler, self.store, self.reload, installation_id)
        if operation == "get-integration-resources":
            return self._list(installation_id, handler)
        body = recorded.body = parse_json(handler, raw)
        problems = schema_problems(request_schemas()[operation], body)
        if problems:
            raise error(400, "bad_request", f"Invalid request: {problems[0]}.")
        if operation == "update-resource":
            return self._update(installation_id, ids["resource"], body)
        self._check_client_secret(body)
        if operation == "rotate-installation-credential":
            return self._rotate(installation_id)
        return self._revoke(installation_id, bearer, body["token"])

    def _list(self, installation_id: str, handler: Handler) -> Answer:
        query = parse_qs(urlsplit(handler.path).query)
        if set(query) - {"until"} or not all(v.isdigit() for v in query.get("until", ["0"])):
            raise error(400, "bad_request", "Invalid request: unknown query parameter.")
        start = int(query.get("until", ["0"])[0])
        held = sorted(self.store.resources_of(installation_id).items())
        size = self.page_size or max(len(held), 1)
        items = []
        for resource_id, product in held[start : start + size]:
            on_vercel = self.store.credentials.resource(installation_id, resource_id)
            item: dict[str, Any] = {
                "partnerId": resource_id,
                "internalId": on_vercel.internal_id,
                "productId": product,
                "name": on_vercel.name if on_vercel.name is not None else resource_id,
                "status": on_vercel.status,
            }
            if isinstance(on_vercel.notification, dict):
                item["notification"] = dict(on_vercel.notification)
            items.append(item)
        answer: dict[str, Any] = {"resources": items}
        if self.page_size:
            following = start + size if start + size < len(held) else None
            answer["pagination"] = {"count": len(items), "next": following, "prev": None}
        return Answer(200, answer)

    def _update(self, installation_id: str, resource_id: str, body: dict[str, Any]) -> Answer:
        if self.store.product_of(installation_id, resource_id) is None:
            raise error(404, "not_found", "Resource not found")
        held = self.store.credentials.resource(installation_id, resource_id)
        if "name" in body:
            held.name = body["name"]
        if "status" in body:
            held.status = body["status"]
        if "notification" in body:
            held.notification = body["notification"]
        return Answer(200, {"name": held.name if held.name is not None else resource_id})

    def _check_client_secret(self, body: dict[str, Any]) -> None:
        expected = self.client_secret
        if expected is None:
            expected = settings.VERCEL_CLIENT_SECRET
        if not expected or not _same(expected, body["client_secret"]):
            raise error(403, "forbidden", "Invalid client credentials")

    def _rotate(self, installation_id: str) -> Answer:
        new = "vci_" + secrets.token_urlsafe(24)
        self.store.credentials.add_live(installation_id, new)
        return Answer(
            200,
            {
                "access_token": new,
                "token_type": "oauth2-token",
                "expires_in": TOKEN_EXPIRES_IN,
                "scope": "integration-configuration",
            },
        )

    def _revoke(self, installation_id: str, bearer: str, token: str) -> Answer:
        ledger = self.store.credentials
        if ledger.is_revoked(installation_id, token):
            return Answer(200, {"revoked": True, "alreadyRevoked": True})
        live = ledger.live(installation_id, self.store.token_of(installation_id))
        if not any(_same(token, held) for held in live):
            raise error(
                400, "bad_request", "Invalid request: the token is not this installation's."
            )
        if len(live) <= 1:
            raise error(409, "conflict", "Refusing to revoke the installation's last credential")
        ledger.revoke(installation_id, token)
        return Answer(200, {"revoked": True, "alreadyRevoked": False})


def token_age_rows(store: InstallationStore) -> list[tuple[str, int, float | None]]:
    """(installation, live tokens, age in seconds of the newest) for the page."""
    rows = []
    now = time.time()
    for installation_id in store.installation_ids():
        live = store.credentials.live(installation_id, store.token_of(installation_id))
        issued = [at for token in live if (at := store.credentials.issued_at(token)) is not None]
        rows.append((installation_id, len(live), now - max(issued) if issued else None))
    return rows


def render_marketplace(store: InstallationStore) -> str:
    """The page's section on tokens and dashboard notifications."""
    tokens = "".join(
        f"<tr><td>{html.escape(installation_id)}</td><td>{count}</td>"
        f"<td>{'unknown' if age is None else f'{age:.0f} s'}</td></tr>"
        for installation_id, count, age in token_age_rows(store)
    )
    notes = []
    for installation_id, resource_id, _product, _secrets in store.page_rows():
        note = store.credentials.resource(installation_id, resource_id).notification
        if note:
            if isinstance(note, dict):
                text = " — ".join(
                    str(note.get(key))
                    for key in ("level", "title", "message", "href")
                    if note.get(key)
                )
            else:
                text = str(note)
            notes.append(
                f"<tr><td>{html.escape(installation_id)}</td><td>{html.escape(resource_id)}</td>"
                f"<td class='notification'>{html.escape(text)}</td></tr>"
            )
    return (
        "<h2>Installation tokens</h2><table border='1' cellpadding='4'><thead><tr>"
        "<th>installation</th><th>live tokens</th><th>newest token's age</th></tr></thead>"
        f"<tbody>{tokens or '<tr><td colspan=3>none</td></tr>'}</tbody></table>"
        "<h2>Dashboard notifications</h2><table border='1' cellpadding='4'><thead><tr>"
        "<th>installation</th><th>resource</th><th>notification</th></tr></thead>"
        f"<tbody>{''.join(notes) or '<tr><td colspan=3>none</td></tr>'}</tbody></table>"
    )


class MarketplaceControls:
    """`FakeVercel`'s methods for the state behind the Marketplace calls (tests, demo)."""

    _store: InstallationStore
    _marketplace: MarketplaceEndpoints

    def set_resource_on_vercel(
        self,
        installation_id: str,
        resource_id: str,
        *,
        product: str,
        name: str | None = None,
        status: str = "ready",
    ) -> None:
        """Make Vercel hold a resource with this name and status (the installation is known)."""
        token = self._store.token_of(installation_id)
        if token is None:
            raise ValueError(f"unknown installation {installation_id}")
        self._store.add(installation_id, token, {resource_id: product})
        held = self._store.credentials.resource(installation_id, resource_id)
        held.name, held.status = name, status

    def remove_resource_on_vercel(self, installation_id: str, resource_id: str) -> None:
        """Vercel no longer lists the resource (its calls answer 404)."""
        self._store.forget_resource(installation_id, resource_id)

    def resource_on_vercel(self, installation_id: str, resource_id: str) -> ResourceOnVercel:
        """Vercel's name, status and notification of a resource."""
        return self._store.credentials.resource(installation_id, resource_id)

    def live_tokens(self, installation_id: str) -> list[str]:
        """The tokens that work for the installation now."""
        return self._store.credentials.live(installation_id, self._store.token_of(installation_id))

    def is_revoked(self, installation_id: str, token: str) -> bool:
        return self._store.credentials.is_revoked(installation_id, token)

    @property
    def resources_page_size(self) -> int | None:
        """Resources per page of the list (None: one page), `pagination.next` an offset."""
        return self._marketplace.page_size

    @resources_page_size.setter
    def resources_page_size(self, value: int | None) -> None:
        self._marketplace.page_size = value

    @property
    def client_secret(self) -> str | None:
        """The integration's client secret it expects (None: settings.VERCEL_CLIENT_SECRET)."""
        return self._marketplace.client_secret

    @client_secret.setter
    def client_secret(self, value: str | None) -> None:
        self._marketplace.client_secret = value
