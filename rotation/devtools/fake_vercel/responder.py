"""Answering one request: the page at `/`, or an API call after the faults have had their say.

Faults are decided in this order: drop, hang (then answered normally, as a request that
landed after the client gave up), latency, scripted answer, rate limit, 5xx, then the real
handling. Logs name the method, path and status only: never a token or a value.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from urllib.parse import urlsplit

from rotation.devtools.fake_vercel.endpoints import SecretsEndpoints
from rotation.devtools.fake_vercel.faults import Faults
from rotation.devtools.fake_vercel.installations import InstallationStore
from rotation.devtools.fake_vercel.marketplace import render_marketplace
from rotation.devtools.fake_vercel.page import render_page
from rotation.devtools.fake_vercel.partner_calls import PartnerCaller
from rotation.devtools.fake_vercel.recording import RecordedRequest, Recorder
from rotation.devtools.fake_vercel.wire import Answer, Handler, drop, error, read_body, send

logger = logging.getLogger(__name__)


class Responder:
    """The `Respond` callable the wire server is given; `stopping` cuts waits short."""

    def __init__(
        self,
        *,
        store: InstallationStore,
        faults: Faults,
        recorder: Recorder,
        endpoints: SecretsEndpoints,
        stopping: threading.Event,
        caller: PartnerCaller | None = None,
    ) -> None:
        self.caller = caller
        self.store = store
        self.faults = faults
        self.recorder = recorder
        self.endpoints = endpoints
        self.stopping = stopping

    def __call__(self, handler: Handler, method: str) -> None:
        """Answer one request (called on the handler's thread)."""
        if self.stopping.is_set():
            drop(handler)
            return
        started = time.monotonic()
        path = urlsplit(handler.path).path
        raw = read_body(handler)
        if method == "GET" and path in ("", "/"):
            self._send_page(handler)
            return
        # Playing Vercel towards the partner: its JWKS and the rotate trigger, fault-free.
        own = self.caller.answer(handler, method, path, raw or b"") if self.caller else None
        if own is not None:
            send(handler, own)
            return
        host, port = handler.client_address[:2]
        recorded = RecordedRequest(
            method=method,
            path=path,
            operation=None,
            headers=dict(handler.headers),
            body=None,
            client=(str(host), int(port)),
        )
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            recorded.body = json.loads(raw) if raw else None
        self.recorder.record(recorded)
        if raw is None:
            answer: Answer | None = error(413, "payload_too_large", "The request body is too large")
        else:
            answer = self._api_answer(handler, method, path, raw, recorded)
        if answer is None:
            logger.info("fake vercel: %s %s -> connection dropped", method, path)
            return
        recorded.status = answer.status
        recorded.answered_at = time.time()
        self.recorder.count_answer(answer.status)
        send(handler, answer)
        logger.info(
            "fake vercel: %s %s -> %s in %.0f ms",
            method,
            path,
            answer.status,
            (time.monotonic() - started) * 1000,
        )

    def _api_answer(
        self, handler: Handler, method: str, path: str, raw: bytes, recorded: RecordedRequest
    ) -> Answer | None:
        """The answer, or None when the connection was dropped instead."""
        if self.faults.drops():
            self.recorder.count_dropped()
            drop(handler)
            return None
        if self.faults.hangs():
            self.recorder.count_hung()
            if self.stopping.wait(self.faults.hang_seconds):
                drop(handler)
                return None
        latency = self.faults.latency_ms / 1000
        if latency > 0 and self.stopping.wait(latency):
            drop(handler)
            return None
        bucket = (handler.headers.get("Authorization", ""), method)
        answer, limit_headers = self.faults.answer_instead(bucket)
        if answer is not None:
            return answer
        answer = self.endpoints.answer(handler, method, path, raw, recorded)
        answer.headers.update(limit_headers)
        return answer

    def _send_page(self, handler: Handler) -> None:
        answer = Answer(200)
        answer.raw = render_page(
            resources=self.store.page_rows(),
            stats=self.recorder.stats,
            extra=render_marketplace(self.store)
            + (self.caller.page_section() if self.caller else ""),
        )
        answer.content_type = "text/html; charset=utf-8"
        send(handler, answer)
