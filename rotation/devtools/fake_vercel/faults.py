"""Fault injection of the stand-in: the knobs, seeded draws from them, a token-bucket rate
limit and answers scripted by tests.

Like Vercel's, the rate limit is per token and per endpoint (here: per HTTP method), and every
answer carries Vercel's `X-RateLimit-*` headers while a rate is set.

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
        # (tokens, when counted) per (bearer, method): each starts full.
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self.rate = rate
        self.fail_rate = fail_rate
        self.latency_ms = latency_ms
        self.hang_rate = hang_rate
        self.drop_rate = drop_rate
        self.hang_seconds = hang_seconds

    @property
    def rate(self) -> float | None:
        """Requests per second allowed per token and method (a bucket holding one second's
        worth), or None."""
        return self._rate

    @rate.setter
    def rate(self, value: float | None) -> None:
        with self._lock:
            self._rate = float(value) if value else None
            self._buckets.clear()

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

    def answer_instead(self, bucket: tuple[str, str]) -> tuple[Answer | None, dict[str, str]]:
        """A scripted answer, else a 429 when the bucket is empty, else a 5xx at `fail_rate`;
        with the rate-limit headers every answer carries while a rate is set.

        None means the request goes on to the real handling (which adds the headers).
        """
        with self._lock:
            if self._scripted:
                return self._scripted.popleft(), {}
        wait, headers = self._take_token(bucket)
        if wait > 0:
            answer = self._rate_limited(wait)
            answer.headers.update(headers)
            return answer, headers
        if self._chance(self.fail_rate):
            with self._lock:
                status, code, message = self._random.choice(FAIL_ANSWERS)
            answer = error(status, code, message)
            answer.headers.update(headers)
            return answer, headers
        return None, headers

    def _chance(self, probability: float) -> bool:
        # No draw at 0, so turning one knob on does not shift the draws of the others.
        if probability <= 0:
            return False
        with self._lock:
            return self._random.random() < probability

    def _take_token(self, bucket: tuple[str, str]) -> tuple[float, dict[str, str]]:
        """0 when the request may pass, else the seconds until its bucket holds a token; and
        the bucket as Vercel's rate-limit headers."""
        with self._lock:
            if not self._rate:
                return 0.0, {}
            now = time.monotonic()
            capacity = max(self._rate, 1.0)
            tokens, counted_at = self._buckets.get(bucket, (capacity, now))
            tokens = min(capacity, tokens + (now - counted_at) * self._rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self._rate
            self._buckets[bucket] = (tokens, now)
            # Vercel's headers: the limit per window (here one second's worth), the requests
            # left in it, and when it is whole again, in epoch seconds.
            full_in = (capacity - tokens) / self._rate
            headers = {
                "X-RateLimit-Limit": str(math.floor(capacity)),
                "X-RateLimit-Remaining": str(math.floor(tokens)),
                "X-RateLimit-Reset": str(math.ceil(time.time() + full_in)),
            }
            return wait, headers

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
