"""What the stand-in saw, for tests and the page: the last requests on API paths and counters
per outcome. Kept in memory only; bounded so a long benchmark cannot grow it without end.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any

RECORD_LIMIT = 10_000


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
    # Wall-clock seconds when it arrived and when it was answered (0: not answered): which
    # requests were in flight together, and whether any came during a rate-limit pause.
    received_at: float = field(default_factory=time.time)
    answered_at: float = 0.0


class Recorder:
    """Recorded requests and counters, safe to share between handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recorded: collections.deque[RecordedRequest] = collections.deque(maxlen=RECORD_LIMIT)
        self._total = 0
        self._by_status: collections.Counter[int] = collections.Counter()
        self._dropped = 0
        self._hung = 0

    def record(self, request: RecordedRequest) -> None:
        """Count an API request and keep it; its status is filled in once answered."""
        with self._lock:
            self._total += 1
            self._recorded.append(request)

    def count_answer(self, status: int) -> None:
        with self._lock:
            self._by_status[status] += 1

    def count_dropped(self) -> None:
        with self._lock:
            self._dropped += 1

    def count_hung(self) -> None:
        with self._lock:
            self._hung += 1

    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests received on API paths, oldest first (the last RECORD_LIMIT)."""
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

    def reset(self) -> None:
        """Zero the counters and forget recorded requests."""
        with self._lock:
            self._total = 0
            self._by_status.clear()
            self._dropped = 0
            self._hung = 0
            self._recorded.clear()
