"""A partner's control plane over real HTTP on 127.0.0.1, for the HTTP provider's tests.

It checks each request's HMAC signature, keeps what it received, answers from a script
(`"500"`, `"429"`, `"hang"` past the client's read timeout, or `"ok"`), and — like a real
control plane honouring Idempotency-Key — makes one credential per key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict
    signature_valid: bool


@dataclass
class ControlPlane:
    secret: str
    script: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    made: dict[str, list[dict]] = field(default_factory=dict)  # Idempotency-Key -> answer
    expired: list[str] = field(default_factory=list)
    hang_seconds: float = 1.0
    url: str = ""

    def answer(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict | None]:
        timestamp = headers.get("X-Partnerportal-Timestamp", "")
        expected = hmac.new(self.secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256)
        valid = hmac.compare_digest(
            headers.get("X-Partnerportal-Signature", ""), f"sha256={expected.hexdigest()}"
        )
        body = json.loads(raw)
        self.received.append(Received(path, headers, body, valid))
        step = self.script.pop(0) if self.script else "ok"
        if not valid:
            return 401, {"error": {"code": "bad_signature", "message": "signature mismatch"}}
        if step == "hang":
            time.sleep(self.hang_seconds)
        if step in ("500", "429", "400"):
            return int(step), {"error": {"code": f"e{step}", "message": f"scripted {step}"}}
        key = headers["Idempotency-Key"]
        if path == "/credentials":
            if key not in self.made:
                password = secrets.token_urlsafe(24)
                self.made[key] = [
                    {"name": name, "value": f"{name.lower()}-{password}"}
                    for name in body["secrets"]
                ]
            return 201, {"secrets": self.made[key]}
        self.expired.append(key)
        return 204, None


def start_control_plane(secret: str) -> tuple[ControlPlane, ThreadingHTTPServer]:
    plane = ControlPlane(secret=secret)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, answer = plane.answer(self.path, dict(self.headers), raw)
            payload = json.dumps(answer).encode() if answer is not None else b""
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the "hang" step)

        def log_message(self, format, *args):  # quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    plane.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return plane, server
