"""The stand-in itself: installations, secrets held, fault injection, request handling."""

from __future__ import annotations

import collections
import contextlib
import hmac
import json
import logging
import math
import random
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from rotation.devtools.fake_vercel.page import render_page
from rotation.devtools.fake_vercel.schema import name_problems, request_schemas, schema_problems
from rotation.devtools.fake_vercel.wire import (
    Answer,
    Handler,
    Server,
    drop,
    error,
    parse_json,
    read_body,
    send,
)

logger = logging.getLogger(__name__)

RECORD_LIMIT = 10_000
DEPRECATED_PATH = re.compile(
    r"^/v1/installations/(?P<installation>[^/]+)/products/(?P<product>[^/]+)"
    r"/resources/(?P<resource>[^/]+)/secrets$"
)
CURRENT_PATH = re.compile(
    r"^/v1/installations/(?P<installation>[^/]+)/resources/(?P<resource>[^/]+)/secrets$"
)
EVENTS_PATH = re.compile(r"^/v1/installations/(?P<installation>[^/]+)/events$")
OPERATIONS = {
    "deprecated": "update-resource-secrets",
    "current": "update-resource-secrets-by-id",
    "event": "create-event",
}
FAIL_ANSWERS = (
    (500, "internal_server_error", "An unexpected internal error occurred"),
    (502, "bad_gateway", "Bad gateway"),
    (503, "service_unavailable", "The service is temporarily unavailable"),
    (504, "gateway_timeout", "The upstream timed out"),
)


@dataclass
class RecordedRequest:
    """What the stand-in received (kept in memory only, for tests)."""

    method: str
    path: str
    operation: str | None
    headers: dict[str, str]
    body: Any
    status: int = 0
    # The client's (host, port): equal ports mean one reused connection.
    client: tuple[str, int] = ("", 0)


@dataclass
class _Installation:
    token: str
    resources: dict[str, str] = field(default_factory=dict)


class FakeVercel:
    """The stand-in: `start()`, point VERCEL_API_URL at `url`, then `stop()`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate: float | None = None,
        fail_rate: float = 0.0,
        latency_ms: float = 0,
        hang_rate: float = 0.0,
        drop_rate: float = 0.0,
        hang_seconds: float = 30.0,
        seed: int | None = None,
        reload_from_database: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._random = random.Random(seed)  # fault injection, not security
        self._installations: dict[str, _Installation] = {}
        self._secrets: dict[tuple[str, str], dict[str, dict]] = {}
        self._events: list[dict] = []
        self._scripted: collections.deque[Answer] = collections.deque()
        self._recorded: collections.deque[RecordedRequest] = collections.deque(maxlen=RECORD_LIMIT)
        self._rate: float | None = None
        self._tokens = 0.0
        self._bucket_at = time.monotonic()
        self.rate = rate
        self.fail_rate = fail_rate
        self.latency_ms = latency_ms
        self.hang_rate = hang_rate
        self.drop_rate = drop_rate
        self.hang_seconds = hang_seconds
        # Without a config file the command learns installations from the database, and
        # looks again (at most every `reload_interval` s) when it meets an unknown one.
        self.reload_from_database = reload_from_database
        self.reload_interval = 1.0
        self._reloaded_at = -math.inf
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self.reset_stats()

    # -- configuration -------------------------------------------------------------------

    @property
    def rate(self) -> float | None:
        """Requests per second allowed (token bucket holding one second's worth), or None."""
        return self._rate

    @rate.setter
    def rate(self, value: float | None) -> None:
        with self._lock:
            self._rate = float(value) if value else None
            self._tokens = max(self._rate or 0.0, 1.0)
            self._bucket_at = time.monotonic()

    def add_installation(self, installation_id: str, token: str, resources: dict[str, str]) -> None:
        """Know an installation, its bearer token, and its resources (id -> product)."""
        if not installation_id or not token:
            raise ValueError("an installation needs an id and a token")
        with self._lock:
            known = self._installations.get(installation_id)
            if known is None:
                self._installations[installation_id] = _Installation(token, dict(resources))
            else:
                known.token = token
                known.resources.update(resources)

    def load_config(self, data: dict) -> None:
        """Learn installations from the `import_installations` JSON format."""
        if not isinstance(data, dict) or not isinstance(data.get("installations"), list):
            raise ValueError("expected {'installations': [...]}")
        for index, entry in enumerate(data["installations"]):
            try:
                resources = {
                    resource["id"]: resource["product"] for resource in entry.get("resources", [])
                }
                self.add_installation(entry["id"], entry["access_token"], resources)
            except (KeyError, TypeError, AttributeError):
                raise ValueError(
                    f"installations[{index}]: needs id, access_token and resources[].id/product"
                ) from None

    def remove_installation(self, installation_id: str) -> None:
        """Forget an installation (as if uninstalled): its calls then answer 404."""
        with self._lock:
            self._installations.pop(installation_id, None)

    def load_from_database(self) -> int:
        """Learn installations, tokens and resources from the project's database.

        The database is the truth for the installations it holds: removed installations and
        resources are forgotten. Returns how many installations are known from it.
        """
        from rotation.crypto import CryptoError
        from rotation.models import Installation, Resource

        count = 0
        for installation in Installation.objects.prefetch_related("resources"):
            if installation.status == Installation.Status.REMOVED:
                self.remove_installation(installation.vercel_id)
                continue
            if not installation.has_access_token:
                continue
            try:
                token = installation.access_token()
            except CryptoError:
                logger.warning("fake vercel: cannot read the token of %s", installation.vercel_id)
                continue
            resources = {
                resource.vercel_id: resource.product
                for resource in installation.resources.all()
                if resource.status != Resource.Status.REMOVED
            }
            with self._lock:
                self._installations[installation.vercel_id] = _Installation(token, resources)
            count += 1
        return count

    def respond_next(
        self,
        status: int,
        payload: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json; charset=utf-8",
        times: int = 1,
    ) -> None:
        """Answer the next `times` API requests with this, whatever they are (for tests)."""
        for _ in range(times):
            answer = Answer(status, payload, dict(headers or {}))
            answer.raw = raw
            answer.content_type = content_type
            with self._lock:
                self._scripted.append(answer)

    # -- observation ---------------------------------------------------------------------

    def secrets_of(self, installation_id: str, resource_id: str) -> list[dict]:
        """The secrets this resource holds now (copies, in the order they were set)."""
        with self._lock:
            held = self._secrets.get((installation_id, resource_id), {})
            return [json.loads(json.dumps(secret)) for secret in held.values()]

    def set_secrets(self, installation_id: str, resource_id: str, secrets: list[dict]) -> None:
        """Preload a resource's secrets (as if pushed earlier)."""
        with self._lock:
            self._secrets[(installation_id, resource_id)] = {
                f"{s.get('prefix', '')}{s['name']}": dict(s) for s in secrets
            }

    @property
    def events(self) -> list[dict]:
        with self._lock:
            return list(self._events)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests received on API paths, oldest first (the last 10,000)."""
        with self._lock:
            return list(self._recorded)

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: total API requests, answers per status, dropped, hung, rate_limited."""
        with self._lock:
            return {
                "total": self._total,
                "by_status": dict(self._by_status),
                "dropped": self._dropped,
                "hung": self._hung,
                "rate_limited": self._by_status.get(429, 0),
            }

    def reset_stats(self) -> None:
        """Zero the counters and forget recorded requests and events."""
        with self._lock:
            self._total = 0
            self._by_status: collections.Counter[int] = collections.Counter()
            self._dropped = 0
            self._hung = 0
            self._recorded.clear()
            self._events.clear()

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stand-in is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeVercel:
        """Listen and serve in a background thread."""
        self._stopping.clear()
        self._server = Server((self.host, self.port), Handler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="fake-vercel",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; requests still hanging are dropped."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_open_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def serve_until_interrupted(self) -> None:
        """Block the calling thread until Ctrl-C or SIGTERM (for the management command)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self._stopping.set())
        try:
            while not self._stopping.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass

    def __enter__(self) -> FakeVercel:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # -- request handling ----------------------------------------------------------------

    def _chance(self, probability: float) -> bool:
        if probability <= 0:
            return False
        with self._lock:
            return self._random.random() < probability

    def _take_token(self) -> float:
        """0 when the request may pass, else the seconds until the bucket holds a token."""
        with self._lock:
            if not self._rate:
                return 0.0
            now = time.monotonic()
            capacity = max(self._rate, 1.0)
            self._tokens = min(capacity, self._tokens + (now - self._bucket_at) * self._rate)
            self._bucket_at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self._rate

    def handle_request(self, handler: Handler, method: str) -> None:
        """Answer one request (called by the handler thread)."""
        if self._stopping.is_set():
            drop(handler)
            return
        started = time.monotonic()
        path = urlsplit(handler.path).path
        raw = read_body(handler)
        if method == "GET" and path in ("", "/"):
            self._send_page(handler)
            return
        recorded = RecordedRequest(
            method=method,
            path=path,
            operation=None,
            headers=dict(handler.headers),
            body=None,
            client=tuple(handler.client_address[:2]),
        )
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            recorded.body = json.loads(raw) if raw else None
        with self._lock:
            self._total += 1
            self._recorded.append(recorded)
        if raw is None:
            answer = error(413, "payload_too_large", "The request body is too large")
        else:
            answer = self._faults_then_route(handler, method, path, raw, recorded)
        if answer is None:
            logger.info("fake vercel: %s %s -> connection dropped", method, path)
            return
        recorded.status = answer.status
        with self._lock:
            self._by_status[answer.status] += 1
        send(handler, answer)
        logger.info(
            "fake vercel: %s %s -> %s in %.0f ms",
            method,
            path,
            answer.status,
            (time.monotonic() - started) * 1000,
        )

    def _faults_then_route(
        self, handler: Handler, method: str, path: str, raw: bytes, recorded: RecordedRequest
    ) -> Answer | None:
        if self._chance(self.drop_rate):
            with self._lock:
                self._dropped += 1
            drop(handler)
            return None
        if self._chance(self.hang_rate):
            with self._lock:
                self._hung += 1
            if self._stopping.wait(self.hang_seconds):
                drop(handler)
                return None
        if self.latency_ms > 0 and self._stopping.wait(self.latency_ms / 1000):
            drop(handler)
            return None
        with self._lock:
            scripted = self._scripted.popleft() if self._scripted else None
        if scripted is not None:
            return scripted
        wait = self._take_token()
        if wait > 0:
            return self._rate_limited(wait)
        if self._chance(self.fail_rate):
            with self._lock:
                status, code, message = self._random.choice(FAIL_ANSWERS)
            return error(status, code, message)
        try:
            self._route(handler, method, path, raw, recorded)
        except Answer as answer:
            return answer
        return error(500, "internal_server_error", "unreachable")  # pragma: no cover

    def _rate_limited(self, wait: float) -> Answer:
        reset_at = time.time() + wait
        answer = error(
            429,
            "rate_limited",
            "Rate limit exceeded",
            limit={
                "remaining": 0,
                "reset": math.ceil(reset_at),
                "resetMs": math.ceil(reset_at * 1000),
                "total": math.floor(max(self._rate or 1.0, 1.0)),
            },
        )
        answer.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return answer

    def _route(
        self, handler: Handler, method: str, path: str, raw: bytes, recorded: RecordedRequest
    ) -> None:
        routes = (
            ("deprecated", DEPRECATED_PATH.match(path), "PUT"),
            ("current", CURRENT_PATH.match(path), "PUT"),
            ("event", EVENTS_PATH.match(path), "POST"),
        )
        found = [(kind, match, allowed) for kind, match, allowed in routes if match]
        if not found:
            raise error(404, "not_found", "The requested path was not found")
        kind, match, allowed = found[0]
        if method != allowed:
            raise Answer(405, {"error": {"code": "method_not_allowed", "message": "Not allowed"}})
        recorded.operation = OPERATIONS[kind]
        ids = {key: unquote(value) for key, value in match.groupdict().items()}
        installation = self._authorize(handler, ids["installation"])
        body = recorded.body = parse_json(handler, raw)
        problems = schema_problems(request_schemas()[recorded.operation], body)
        if kind != "event":
            problems += name_problems(body) if not problems else []
        if problems:
            raise error(400, "bad_request", f"Invalid request: {problems[0]}.")
        if kind == "event":
            self._create_event(ids["installation"], installation, body)
        else:
            self._update_secrets(installation, ids, body)
        raise Answer(201)

    def _authorize(self, handler: Handler, installation_id: str) -> _Installation:
        header = handler.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise error(401, "unauthorized", "The request is missing an authentication token")
        installation = self._installation(installation_id, token.strip())
        if installation is None:
            raise error(404, "not_found", "Installation not found")
        if not hmac.compare_digest(installation.token.encode(), token.strip().encode()):
            raise error(403, "forbidden", "Not authorized")
        return installation

    def _installation(self, installation_id: str, token: str) -> _Installation | None:
        with self._lock:
            installation = self._installations.get(installation_id)
        stale = installation is None or not hmac.compare_digest(
            installation.token.encode(), token.encode()
        )
        if stale and self._maybe_reload():
            with self._lock:
                installation = self._installations.get(installation_id)
        return installation

    def _maybe_reload(self) -> bool:
        if not self.reload_from_database:
            return False
        with self._lock:
            now = time.monotonic()
            if now - self._reloaded_at < self.reload_interval:
                return False
            self._reloaded_at = now
        from django.db import connection

        try:
            self.load_from_database()
        except Exception:
            logger.exception("fake vercel: reloading installations from the database failed")
            return False
        finally:
            # Handler threads are short-lived: give their connection back.
            connection.close()
        return True

    def _update_secrets(self, installation: _Installation, ids: dict[str, str], body: dict) -> None:
        resource_id = ids["resource"]
        with self._lock:
            product = installation.resources.get(resource_id)
        if product is None and self._maybe_reload():
            with self._lock:
                product = installation.resources.get(resource_id)
        if product is None:
            raise error(404, "not_found", "Resource not found")
        if "product" in ids and ids["product"] != product:
            raise error(404, "not_found", "Product not found")
        incoming = {f"{s.get('prefix', '')}{s['name']}": dict(s) for s in body["secrets"]}
        with self._lock:
            key = (ids["installation"], resource_id)
            if body.get("partial"):
                self._secrets.setdefault(key, {}).update(incoming)
            else:
                self._secrets[key] = incoming

    def _create_event(self, installation_id: str, installation: _Installation, body: dict) -> None:
        event = body["event"]
        if event["type"] == "resource.updated":
            with self._lock:
                known = event["resourceId"] in installation.resources
            if not known:
                raise error(404, "not_found", "Resource not found")
        with self._lock:
            self._events.append({"installation": installation_id, **event})

    def _send_page(self, handler: Handler) -> None:
        with self._lock:
            products = {
                (installation_id, resource_id): product
                for installation_id, installation in self._installations.items()
                for resource_id, product in installation.resources.items()
            }
            resources = [
                (*key, products.get(key, "?"), list(self._secrets.get(key, {}).values()))
                # Resources holding pushed secrets first, so a demo sees its push at the top.
                for key in sorted(
                    set(products) | set(self._secrets),
                    key=lambda key: (not self._secrets.get(key), key),
                )
            ]
            answer = Answer(200)
            answer.raw = render_page(resources=resources, stats=self.stats)
        answer.content_type = "text/html; charset=utf-8"
        send(handler, answer)
