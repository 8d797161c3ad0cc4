"""Fault injection of the stand-in: the knobs, seeded draws from them, a token-bucket rate
limit and answers scripted by tests.

The knobs may change while the server runs (tests and benchmarks turn them mid-run). Draws
come from one seeded `random.Random`, so a seed replays the same faults for the same
sequence of requests.
"""

from __future__ import annotations

import collections
import math
import random
import threading
import time

from rotation.devtools.fake_vercel.wire import Answer, error

FAIL_ANSWERS = (
    (500, "internal_server_error", "An unexpected internal error occurred"),
    (502, "bad_gateway", "Bad gateway"),
    (503, "service_unavailable", "The service is temporarily unavailable"),
    (504, "gateway_timeout", "The upstream timed out"),
)


class Faults:
    """What goes wrong, and how often: drops, hangs, latency, 429s, 5xx and scripted answers."""

    def __init__(
        self,
        *,
        rate: float | None,
        fail_rate: float,
        latency_ms: float,
        hang_rate: float,
        drop_rate: float,
        hang_seconds: float,
        seed: int | None,
    ) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)  # fault injection, not security
        self._scripted: collections.deque[Answer] = collections.deque()
        self._rate: float | None = None
        self._tokens = 0.0
        self._bucket_at = time.monotonic()
        self.rate = rate
        self.fail_rate = fail_rate
        self.latency_ms = latency_ms
        self.hang_rate = hang_rate
        self.drop_rate = drop_rate
        self.hang_seconds = hang_seconds

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

    def drops(self) -> bool:
        """Whether this request's connection is cut without an answer."""
        return self._chance(self.drop_rate)

    def hangs(self) -> bool:
        """Whether this request waits `hang_seconds` before it is handled."""
        return self._chance(self.hang_rate)

    def script(self, answer: Answer, *, times: int) -> None:
        """Give `answer` to the next `times` API requests, before any other answer."""
        with self._lock:
            self._scripted.extend([answer] * times)

    def answer_instead(self) -> Answer | None:
        """A scripted answer, else a 429 when the bucket is empty, else a 5xx at `fail_rate`.

        None means the request goes on to the real handling.
        """
        with self._lock:
            if self._scripted:
                return self._scripted.popleft()
        wait = self._take_token()
        if wait > 0:
            return self._rate_limited(wait)
        if self._chance(self.fail_rate):
            with self._lock:
                status, code, message = self._random.choice(FAIL_ANSWERS)
            return error(status, code, message)
        return None

    def _chance(self, probability: float) -> bool:
        # No draw at 0, so turning one knob on does not shift the draws of the others.
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

    def _rate_limited(self, wait: float) -> Answer:
        # Vercel's 429 body carries the limit; `reset` is in seconds, `resetMs` in ms.
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
