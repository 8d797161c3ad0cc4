"""HTTP plumbing of the stand-in: the threaded server, its handler, reading and answering.

It knows nothing of Vercel: the server is given one `Respond` callable and hands it every
request, so what is answered lives with the caller.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20


class Answer(Exception):
    """Raised while handling a request to answer at once."""

    def __init__(
        self, status: int, payload: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status)
        self.status = status
        self.payload = payload
        self.headers = headers or {}
        self.raw: bytes | None = None
        self.content_type = "application/json; charset=utf-8"


def error(status: int, code: str, message: str, **extra: Any) -> Answer:
    """An answer with Vercel's error body."""
    return Answer(status, {"error": {"code": code, "message": message, **extra}})


# Called on a handler thread with the request's handler and its method ("GET", "PUT", ...);
# it reads the request and answers it (or drops the connection) through the handler.
Respond = Callable[["Handler", str], None]


class Server(ThreadingHTTPServer):
    """A threaded HTTP server that passes every request to `respond`."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], respond: Respond) -> None:
        super().__init__(address, Handler)
        self.respond = respond
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    @property
    def url(self) -> str:
        """The base URL this server listens on (with the port the system chose for port 0)."""
        host, port = self.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def close_open_connections(self) -> None:
        """Cut keep-alive connections, so no client reuses one after a stop."""
        with self.connections_lock:
            connections = list(self.open_connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeVercel/1.0"
    sys_version = ""
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 30
    # Headers and body go out in two writes; without this, delayed ACKs add ~40 ms.
    disable_nagle_algorithm = True
    server: Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.open_connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self.server.respond(self, "GET")

    def do_PUT(self) -> None:
        self.server.respond(self, "PUT")

    def do_POST(self) -> None:
        self.server.respond(self, "POST")

    def do_PATCH(self) -> None:
        self.server.respond(self, "PATCH")

    def do_DELETE(self) -> None:
        self.server.respond(self, "DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("fake vercel: " + format, *args)


def read_body(handler: Handler) -> bytes | None:
    """The request body, or None when it exceeds MAX_BODY_BYTES."""
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        return _read_chunked(handler)
    try:
        length = int(handler.headers.get("Content-Length") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY_BYTES:
        handler.close_connection = True
        return None
    return handler.rfile.read(length) if length > 0 else b""


def _read_chunked(handler: Handler) -> bytes | None:
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


def parse_json(handler: Handler, raw: bytes) -> Any:
    """The JSON body; a 400 answer with Vercel's error body when there is none."""
    content_type = (handler.headers.get("Content-Type") or "").split(";")[0].strip()
    if content_type != "application/json":
        raise error(400, "bad_request", "Invalid request: expected a JSON body.")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise error(400, "bad_request", "Invalid request: the body is not JSON.") from None


def drop(handler: Handler) -> None:
    """Close the connection without answering."""
    handler.close_connection = True
    with contextlib.suppress(OSError):
        handler.connection.shutdown(socket.SHUT_RDWR)


def send(handler: Handler, answer: Answer) -> None:
    """Write the answer; a client that already gave up is not an error."""
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
        handler.close_connection = True
