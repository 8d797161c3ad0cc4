"""Secret values are masked in messages, in part too, before they are stored or shown."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from django.urls import reverse
from django.utils.html import escape

from rotation import services
from rotation.models import Rotation
from rotation.redaction import MASK, redact
from tests.conftest import raw_database_bytes
from tests.services.batch_runs import run_batch

PASSWORD = "Zx9_aBcDeFgHiJkLmNoPqRsTuVwXyZ01"
URL = f"postgres://app_1:{PASSWORD}@db.internal:5432/app"


class EchoingVercel(BaseHTTPRequestHandler):
    """Answers every push with a 400 that quotes parts of the DATABASE_URL it was sent, the
    way a careless validation message does."""

    echoed: list[str] = []

    def do_PUT(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        url = next(s["value"] for s in body["secrets"] if s["name"] == "DATABASE_URL")
        password = urlsplit(url).password or ""
        self.echoed.append(password)
        message = (
            f"invalid connection string {url!r}: unexpected character near "
            f"'{password[2:14]}' (password ends ...{password[-9:]})"
        )
        payload = json.dumps({"error": {"code": "bad_request", "message": message}}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echoing_vercel(settings):
    EchoingVercel.echoed = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingVercel)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.VERCEL_API_URL = f"http://127.0.0.1:{server.server_address[1]}"
    yield EchoingVercel
    server.shutdown()
    server.server_close()


def runs_of(secret: str, length: int = 8) -> list[str]:
    return [secret[start : start + length] for start in range(len(secret) - length + 1)]


def test_it_masks_an_echoed_database_url_password_everywhere(
    client, alice, root, resource, echoing_vercel, caplog
):
    """Finding 7: redaction was exact-match only, so a partial echo was stored and shown."""
    caplog.set_level(logging.DEBUG)
    batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="leak")
    run_batch(batch)
    rotation = Rotation.objects.get(batch=batch)
    assert rotation.state == Rotation.State.FAILED
    (password,) = echoing_vercel.echoed
    assert len(password) >= 16
    assert "unexpected character near '[redacted]'" in rotation.last_error
    client.force_login(root)
    page = client.get(reverse("admin:rotation_rotationbatch_change", args=[batch.pk]))
    assert escape(rotation.last_error) in page.content.decode()  # the failure is listed
    places = {
        "last_error": rotation.last_error,
        "database": raw_database_bytes().decode(errors="replace"),
        "logs": caplog.text,
        "batch page": page.content.decode(),
    }
    for where, text in places.items():
        for run in runs_of(password):
            assert run not in text, (where, run)


def test_it_masks_values_runs_of_them_and_url_passwords_before_cutting():
    text = f"bad {URL} near '{PASSWORD[3:20]}' tail {PASSWORD[-9:]} short {PASSWORD[:7]}"
    assert redact(text, [URL, PASSWORD]) == (
        f"bad {MASK} near '{MASK}' tail {MASK} short {PASSWORD[:7]}"
    )
    # Any URL's password, known or not.
    assert redact("mysql://root:hunter2@x/y and redis://:p@ss@h:1") == (
        f"mysql://root:{MASK}@x/y and redis://:{MASK}@h:1"
    )
    # Cut after masking: a secret straddling the limit is masked, not half kept.
    assert redact("x" * 10 + PASSWORD, [PASSWORD], limit=15) == "x" * 10 + MASK[:5]
