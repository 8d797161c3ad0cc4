"""A local stand-in for Vercel's marketplace secrets API: a real HTTP server on 127.0.0.1.

It serves both Update Resource Secrets endpoints and Create Event as Vercel documents them
(`vercel_openapi.json`, a copy of Vercel's published schema), checks the bearer token per
installation, and injects faults for tests and benchmarks: a token-bucket rate limit (429),
5xx answers, latency, hangs and dropped connections. Bodies are checked by a small strict
interpreter of that schema (stdlib only, so the demo needs no test packages): an object
that lists its properties accepts no other key, at any level.

Faults are decided in this order: drop, hang (then answered normally, as a request that
landed after the client gave up), latency, scripted answer, rate limit, 5xx, then the real
handling. Knobs (`rate`, `fail_rate`, `latency_ms`, `hang_rate`, `drop_rate`,
`hang_seconds`) may be changed while the server runs. Logs never contain tokens or values.
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import html
import json
import logging
import math
import random
import re
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from rotation.contract import is_valid_env_name

logger = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).with_name("vercel_openapi.json")
MAX_BODY_BYTES = 1 << 20
RECORD_LIMIT = 10_000
PAGE_RESOURCES = 300
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


@lru_cache
def request_schemas() -> dict[str, dict]:
    """Request body schemas of the copied OpenAPI subset, by operationId."""
    document = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    schemas = {}
    for operations in document["paths"].values():
        for operation in operations.values():
            body = operation.get("requestBody")
            if body:
                schemas[operation["operationId"]] = body["content"]["application/json"]["schema"]
    return schemas


_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


def schema_problems(schema: dict, value: Any, where: str = "body") -> list[str]:
    """Problems of `value` against an OpenAPI schema, strictly; never quotes a value."""
    if "oneOf" in schema:
        results = [schema_problems(option, value, where) for option in schema["oneOf"]]
        matches = sum(1 for problems in results if not problems)
        if matches == 1:
            return []
        if matches > 1:
            return [f"`{where}` matches more than one allowed shape"]
        return min(results, key=len)
    expected = schema.get("type")
    if expected and not _TYPES[expected](value):
        return [f"`{where}` should be {expected}"]
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(map(str, schema["enum"]))
        return [f"`{where}` should be equal to one of the allowed values: {allowed}"]
    problems: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                problems.append(f"`{where}` should have required property `{key}`")
        closed = schema.get("additionalProperties") is False or bool(properties)
        for key, item in value.items():
            if key in properties:
                problems += schema_problems(properties[key], item, f"{where}.{key}")
            elif closed:
                problems.append(f"`{where}` should NOT have additional property `{key}`")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problems += schema_problems(schema["items"], item, f"{where}[{index}]")
    return problems


def mask(value: str) -> str:
    """All but the last 4 characters hidden; short values hidden whole."""
    if not isinstance(value, str) or len(value) < 12:
        return "••••••••"
    return "••••••••" + value[-4:]


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


class _Answer(Exception):
    """Raised inside the handler to answer at once."""

    def __init__(self, status: int, payload: Any = None, headers: dict | None = None):
        self.status = status
        self.payload = payload
        self.headers = headers or {}
        self.raw: bytes | None = None
        self.content_type = "application/json; charset=utf-8"


def _error(status: int, code: str, message: str, **extra: Any) -> _Answer:
    return _Answer(status, {"error": {"code": code, "message": message, **extra}})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    fake: FakeVercel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def close_open_connections(self) -> None:
        """Cut keep-alive connections, so no client reuses one after a stop."""
        with self.connections_lock:
            connections = list(self.open_connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeVercel/1.0"
    sys_version = ""
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 30
    # Headers and body go out in two writes; without this, delayed ACKs add ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.open_connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self.server.fake._handle(self, "GET")

    def do_PUT(self) -> None:
        self.server.fake._handle(self, "PUT")

    def do_POST(self) -> None:
        self.server.fake._handle(self, "POST")

    def do_PATCH(self) -> None:
        self.server.fake._handle(self, "PATCH")

    def do_DELETE(self) -> None:
        self.server.fake._handle(self, "DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("fake vercel: " + format, *args)


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
        self._scripted: collections.deque[_Answer] = collections.deque()
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
        self._server: _Server | None = None
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
            answer = _Answer(status, payload, dict(headers or {}))
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
        self._server = _Server((self.host, self.port), _Handler)
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

    def _handle(self, handler: _Handler, method: str) -> None:
        if self._stopping.is_set():
            self._drop(handler)
            return
        started = time.monotonic()
        path = urlsplit(handler.path).path
        raw = self._read_body(handler)
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
            answer = _error(413, "payload_too_large", "The request body is too large")
        else:
            answer = self._faults_then_route(handler, method, path, raw, recorded)
        if answer is None:
            logger.info("fake vercel: %s %s -> connection dropped", method, path)
            return
        recorded.status = answer.status
        with self._lock:
            self._by_status[answer.status] += 1
        self._send(handler, answer)
        logger.info(
            "fake vercel: %s %s -> %s in %.0f ms",
            method,
            path,
            answer.status,
            (time.monotonic() - started) * 1000,
        )

    def _read_body(self, handler: _Handler) -> bytes | None:
        """The request body, or None when it exceeds MAX_BODY_BYTES."""
        if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked(handler)
        try:
            length = int(handler.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY_BYTES:
            handler.close_connection = True
            return None
        return handler.rfile.read(length) if length > 0 else b""

    def _read_chunked(self, handler: _Handler) -> bytes | None:
        body = b""
        while True:
            line = handler.rfile.readline(1024).split(b";")[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                handler.close_connection = True
                return b""
            if size == 0:
                # Trailers end with an empty line.
                while handler.rfile.readline(1024).strip():
                    pass
                return body
            if len(body) + size > MAX_BODY_BYTES:
                handler.close_connection = True
                return None
            body += handler.rfile.read(size)
            handler.rfile.readline(1024)

    def _faults_then_route(
        self, handler: _Handler, method: str, path: str, raw: bytes, recorded: RecordedRequest
    ) -> _Answer | None:
        if self._chance(self.drop_rate):
            with self._lock:
                self._dropped += 1
            self._drop(handler)
            return None
        if self._chance(self.hang_rate):
            with self._lock:
                self._hung += 1
            if self._stopping.wait(self.hang_seconds):
                self._drop(handler)
                return None
        if self.latency_ms > 0 and self._stopping.wait(self.latency_ms / 1000):
            self._drop(handler)
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
            return _error(status, code, message)
        try:
            self._route(handler, method, path, raw, recorded)
        except _Answer as answer:
            return answer
        return _error(500, "internal_server_error", "unreachable")  # pragma: no cover

    def _rate_limited(self, wait: float) -> _Answer:
        reset_at = time.time() + wait
        answer = _error(
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

    def _drop(self, handler: _Handler) -> None:
        handler.close_connection = True
        with contextlib.suppress(OSError):
            handler.connection.shutdown(socket.SHUT_RDWR)

    def _route(
        self, handler: _Handler, method: str, path: str, raw: bytes, recorded: RecordedRequest
    ) -> None:
        routes = (
            ("deprecated", DEPRECATED_PATH.match(path), "PUT"),
            ("current", CURRENT_PATH.match(path), "PUT"),
            ("event", EVENTS_PATH.match(path), "POST"),
        )
        found = [(kind, match, allowed) for kind, match, allowed in routes if match]
        if not found:
            raise _error(404, "not_found", "The requested path was not found")
        kind, match, allowed = found[0]
        if method != allowed:
            raise _Answer(405, {"error": {"code": "method_not_allowed", "message": "Not allowed"}})
        recorded.operation = OPERATIONS[kind]
        ids = {key: unquote(value) for key, value in match.groupdict().items()}
        installation = self._authorize(handler, ids["installation"])
        body = self._parse(handler, raw, recorded)
        problems = schema_problems(request_schemas()[recorded.operation], body)
        if kind != "event":
            problems += self._name_problems(body) if not problems else []
        if problems:
            raise _error(400, "bad_request", f"Invalid request: {problems[0]}.")
        if kind == "event":
            self._create_event(ids["installation"], installation, body)
        else:
            self._update_secrets(installation, ids, body)
        raise _Answer(201)

    def _authorize(self, handler: _Handler, installation_id: str) -> _Installation:
        header = handler.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _error(401, "unauthorized", "The request is missing an authentication token")
        installation = self._installation(installation_id, token.strip())
        if installation is None:
            raise _error(404, "not_found", "Installation not found")
        if not hmac.compare_digest(installation.token.encode(), token.strip().encode()):
            raise _error(403, "forbidden", "Not authorized")
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

    def _parse(self, handler: _Handler, raw: bytes, recorded: RecordedRequest) -> Any:
        content_type = (handler.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type != "application/json":
            raise _error(400, "bad_request", "Invalid request: expected a JSON body.")
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _error(400, "bad_request", "Invalid request: the body is not JSON.") from None
        recorded.body = body
        return body

    def _name_problems(self, body: dict) -> list[str]:
        problems = []
        seen: set[str] = set()
        for index, secret in enumerate(body["secrets"]):
            full_name = f"{secret.get('prefix', '')}{secret['name']}"
            if not is_valid_env_name(full_name):
                problems.append(f"`secrets[{index}].name` is not a valid environment variable name")
            elif full_name in seen:
                problems.append(f"`secrets[{index}].name` is a duplicate")
            seen.add(full_name)
        return problems

    def _update_secrets(self, installation: _Installation, ids: dict[str, str], body: dict) -> None:
        resource_id = ids["resource"]
        with self._lock:
            product = installation.resources.get(resource_id)
        if product is None and self._maybe_reload():
            with self._lock:
                product = installation.resources.get(resource_id)
        if product is None:
            raise _error(404, "not_found", "Resource not found")
        if "product" in ids and ids["product"] != product:
            raise _error(404, "not_found", "Product not found")
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
                raise _error(404, "not_found", "Resource not found")
        with self._lock:
            self._events.append({"installation": installation_id, **event})

    def _send(self, handler: _Handler, answer: _Answer) -> None:
        if answer.raw is not None:
            payload = answer.raw
        elif answer.payload is None:
            payload = b""
        else:
            payload = json.dumps(answer.payload).encode()
        try:
            handler.send_response(answer.status)
            for name, value in answer.headers.items():
                handler.send_header(name, value)
            if payload:
                handler.send_header("Content-Type", answer.content_type)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:
            # The client gave up (timeout) before the answer came.
            handler.close_connection = True

    def _send_page(self, handler: _Handler) -> None:
        def row(*cells: str) -> str:
            return "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>"

        with self._lock:
            products = {
                (installation_id, resource_id): product
                for installation_id, installation in self._installations.items()
                for resource_id, product in installation.resources.items()
            }
            keys = sorted(set(products) | set(self._secrets))
            rows = []
            for key in keys[:PAGE_RESOURCES]:
                held = self._secrets.get(key, {})
                product = products.get(key, "?")
                if not held:
                    rows.append(row(*key, product, "", "(no secrets pushed yet)", ""))
                for full_name, secret in held.items():
                    overrides = ", ".join(
                        f"{env}: {mask(value)}"
                        for env, value in sorted((secret.get("environmentOverrides") or {}).items())
                    )
                    rows.append(row(*key, product, full_name, mask(secret.get("value")), overrides))
            stats = self.stats
        hidden = len(keys) - PAGE_RESOURCES
        more = f"<p>{hidden} more resources not shown.</p>" if hidden > 0 else ""
        page = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            "<meta http-equiv='refresh' content='5'><title>Fake Vercel</title></head><body>"
            "<h1>Fake Vercel: resource secrets now</h1>"
            f"<p>{stats['total']} API requests; answers {html.escape(str(stats['by_status']))}; "
            f"{stats['dropped']} dropped, {stats['hung']} hung. Values are masked but for "
            "their last 4 characters.</p>"
            "<table border='1' cellpadding='4'><thead><tr><th>installation</th><th>resource</th>"
            "<th>product</th><th>secret</th><th>value</th><th>overrides</th></tr></thead><tbody>"
            + ("".join(rows) or "<tr><td colspan='6'>no resources known yet</td></tr>")
            + f"</tbody></table>{more}</body></html>"
        )
        answer = _Answer(200)
        answer.raw = page.encode()
        answer.content_type = "text/html; charset=utf-8"
        self._send(handler, answer)
