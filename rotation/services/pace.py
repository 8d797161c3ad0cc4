"""The pace of pushes per installation: how many PUTs in flight, how fast, and pauses after a
429; and, the same way but apart, of dashboard-notification PATCHes.

Vercel rate-limits per token and endpoint. The pause, the concurrency and the rate bucket live
in the database (`PushPace`; `NotificationPace` for notifications, `NOTIFICATION_PACER`),
whichever broker runs the tasks, so every worker on every node shares them: one primary-key
read per PUT, and writes only when Vercel paces the installation.

- The bucket: once Vercel's answers carry rate-limit headers (`rotation.vercel.ratelimit`),
  each PUT takes a token from a bucket refilled at the limit per window and re-primed from
  the freshest answer (what Vercel says remains, less the PUTs sent since). A PUT waits for
  its token, so pushes slow down before Vercel answers 429. A few tokens stay in reserve
  against the jitter between sending a PUT and Vercel counting it.
- The safety net: a 429 still pauses every worker until `Retry-After` and halves the
  concurrency (AIMD), which grows back while answers are 2xx.

Within one process, `Pacer` counts the PUTs in flight per installation, reads the shared pace
at most every `PACE_READ_SECONDS` (a pause another node records is seen within that interval;
the worker that meets the 429 sees it at once), and sizes the threads of a chunk by Little's
law: PUTs worth having in flight = the time a PUT waits on Vercel / the CPU time it costs here.
At a local stand-in's 0 ms that is one (more threads only contend for the GIL); at Vercel's
~100 ms it is the cap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from rotation.models import NotificationPace, PushPace
from rotation.models.pace import Pace
from rotation.vercel import RateLimit

logger = logging.getLogger(__name__)

# A thread waiting for a slot re-reads the shared pace this often (a pause set by another node).
SLOT_POLL_SECONDS = 0.25
# A process reads an installation's shared pace at most this often (one read per PUT cost
# more than the PUT at a local stand-in's pace).
PACE_READ_SECONDS = 0.2
# The process sizes threads by its last this many PUTs (a chunk's worth).
TIMED_PUTS = 50
# This many PUTs in a row, each alone in flight in the process, measure Vercel's latency
# without queueing behind threads of ours: enough to take on threads when Vercel slows down.
SOLO_PUTS = 4
# ... when they make at least this many threads worth having: below, a busy machine's delays
# (a local stand-in waiting for a core) pass for latency that more threads would not hide.
SOLO_THREADS = 6
# Share of the limit kept in reserve (at least one request).
RESERVE_SHARE = 0.05
# A PUT books its token at most this far ahead; beyond, it waits like a pause, token-less.
BOOK_AHEAD_SECONDS = 1.0


@dataclass(frozen=True)
class Observed:
    """An answer's rate-limit headers (None: it had none) and the number of the PUT it answered
    (None: sent while the installation was not paced)."""

    rate_limit: RateLimit | None
    seq: int | None


def threads_may_query() -> bool:
    """Whether threads of this process may use the database (a pacer reads the shared pace
    there): their own connections cannot see rows of a transaction the caller left open, nor
    share an in-memory SQLite database safely."""
    if connection.in_atomic_block:
        return False
    return not (connection.vendor == "sqlite" and connection.is_in_memory_db())  # type: ignore[attr-defined]


def pace_cap() -> int:
    """PUTs in flight per installation and worker when Vercel has not rate limited it."""
    return max(1, settings.ROTATION_PUSH_PER_INSTALLATION)


def pace_read(*, installation_id: int) -> tuple[datetime | None, int]:
    """The installation's push pause (None: none recorded) and its concurrency."""
    return _pace_row(installation_id, PushPace)[:2]


def _pace_row(installation_id: int, model: type[Pace]) -> tuple[datetime | None, int, bool]:
    """`pace_read`, and whether Vercel paces the installation (its calls take tokens)."""
    row = (
        model._default_manager.filter(pk=installation_id)
        .values_list("paused_until", "concurrency", "rate_limit")
        .first()
    )
    if row is None:
        return None, pace_cap(), False
    return row[0], max(1, min(row[1], pace_cap())), row[2] is not None


def pace_take(
    *, installation_id: int, observed: Observed | None = None, model: type[Pace] = PushPace
) -> tuple[float, int | None]:
    """Book one PUT in the installation's bucket after recording `observed`: the seconds to wait
    before sending it, and its number (None: not booked, because Vercel sends no rate limit,
    or because the wait exceeds `BOOK_AHEAD_SECONDS`, to be waited out like a pause)."""
    now = timezone.now()
    with transaction.atomic():
        if observed is not None and observed.rate_limit is not None:
            pace, _ = model._default_manager.select_for_update().get_or_create(
                pk=installation_id, defaults={"concurrency": pace_cap()}
            )
        else:
            found = model._default_manager.select_for_update().filter(pk=installation_id).first()
            if found is None:
                return 0.0, None
            pace = found
        if observed is not None:
            _observe(pace, observed, now)
        if pace.rate_limit is None:
            if observed is not None:
                pace.save()
            return 0.0, None
        rate = pace.rate_limit / pace.rate_window
        if pace.tokens_at is not None:
            elapsed = (now - pace.tokens_at).total_seconds()
            pace.tokens = min(float(pace.rate_limit), pace.tokens + max(0.0, elapsed) * rate)
        pace.tokens_at = now
        reserve = max(1.0, pace.rate_limit * RESERVE_SHARE)
        wait = max(0.0, reserve + 1.0 - pace.tokens) / rate
        booked = wait <= BOOK_AHEAD_SECONDS
        if booked:
            pace.tokens -= 1.0
            pace.sent += 1
        pace.save()
    return wait, pace.sent if booked else None


def _observe(pace: Pace, observed: Observed, now: datetime) -> None:
    """Prime the bucket from an answer's headers; none (Vercel lifted the limit) stops pacing."""
    limit = observed.rate_limit
    if limit is None:
        pace.rate_limit = None
        return
    # The reset is in whole seconds, rounded up: one second less bounds the window from below.
    window = max(1.0, limit.reset_in - 1.0)
    first = pace.rate_limit is None
    if first or pace.rate_limit != limit.limit:
        pace.rate_limit, pace.rate_window = limit.limit, window
    else:
        pace.rate_window = max(pace.rate_window, window)
    if observed.seq is None:
        if first:
            # PUTs of other workers may be in flight, unknown to this answer: half is safe.
            pace.tokens, pace.tokens_at = limit.remaining / 2, now
    elif observed.seq > pace.observed_seq:
        # What Vercel had left after this PUT, less the PUTs booked since.
        pace.tokens = limit.remaining - (pace.sent - observed.seq)
        pace.tokens_at = now
        pace.observed_seq = observed.seq


def pace_rate_limited(
    *, installation_id: int, wait: float, model: type[Pace] = PushPace
) -> datetime:
    """Pause every worker's calls of this kind for the installation `wait` seconds; halve its
    concurrency once per pause (the 429s of calls already in flight belong to the same one)."""
    now = timezone.now()
    until = now + timedelta(seconds=max(0.0, wait))
    with transaction.atomic():
        pace, _ = model._default_manager.select_for_update().get_or_create(
            pk=installation_id, defaults={"concurrency": pace_cap()}
        )
        if pace.paused_until is None or pace.paused_until <= now:
            pace.concurrency = max(1, min(pace.concurrency, pace_cap()) // 2)
        pace.paused_until = max(pace.paused_until or until, until)
        if pace.rate_limit is not None and pace.tokens_at is not None:
            pace.tokens, pace.tokens_at = min(pace.tokens, 0.0), now  # Vercel's bucket is empty
        pace.rate_limited_count += 1
        pace.save()
    logger.info(
        "installation %s rate limited (%s): paused until %s, %s in flight per worker",
        installation_id,
        model._meta.verbose_name,
        pace.paused_until.isoformat(),
        pace.concurrency,
    )
    return pace.paused_until


def pace_grow(*, installation_id: int, model: type[Pace] = PushPace) -> None:
    """One more call in flight after a run of successes, up to the cap."""
    model._default_manager.filter(pk=installation_id, concurrency__lt=pace_cap()).update(
        concurrency=F("concurrency") + 1
    )


class Pacer:
    """One process's calls of one kind (`model`'s) in flight per installation, within the
    shared pace."""

    def __init__(self, model: type[Pace] = PushPace) -> None:
        self.model = model
        self._changed = threading.Condition()
        self._in_flight: dict[int, int] = defaultdict(int)
        self._successes: dict[int, int] = defaultdict(int)
        self._limit: dict[int, int] = {}
        self._paced: dict[int, bool] = {}
        # The freshest answer's headers per installation, recorded with the next booking.
        self._observed: dict[int, Observed] = {}
        # The number of the PUT this thread holds a slot for (see `release`).
        self._local = threading.local()
        # The shared pace as read (monotonic time of the read, the row), per installation.
        self._rows: dict[int, tuple[float, tuple[datetime | None, int, bool]]] = {}
        # The last PUTs' seconds waiting on Vercel, and their CPU seconds here.
        self._waits: deque[float] = deque(maxlen=TIMED_PUTS)
        self._cpus: deque[float] = deque(maxlen=TIMED_PUTS)
        # Whether each of those PUTs was the only one in flight in this process.
        self._alone: deque[bool] = deque(maxlen=TIMED_PUTS)

    def forget(self, installation_id: int | None = None) -> None:
        """Read the installation's shared pace afresh next time (None: every installation's,
        and start the latency estimate over)."""
        with self._changed:
            if installation_id is not None:
                self._rows.pop(installation_id, None)
                return
            self._rows.clear()
            self._waits.clear()
            self._cpus.clear()
            self._alone.clear()

    def _row(self, installation_id: int) -> tuple[datetime | None, int, bool]:
        """The shared pace, read at most every `PACE_READ_SECONDS`; a pause in effect is
        always read again, so one lifted early is never waited out."""
        read_at = time.monotonic()
        with self._changed:
            kept = self._rows.get(installation_id)
        if kept is not None and read_at - kept[0] < PACE_READ_SECONDS:
            paused_until = kept[1][0]
            if paused_until is None or paused_until <= timezone.now():
                return kept[1]
        row = _pace_row(installation_id, self.model)
        with self._changed:
            self._rows[installation_id] = (read_at, row)
        return row

    def threads(self, cap: int) -> int:
        """PUTs worth having in flight in this process, from 1 to `cap` (the cap until a PUT
        was timed): by Little's law, Vercel's latency over a PUT's CPU time here. The latency
        is the least wait of the last `TIMED_PUTS`: waits beyond it are queueing (for the GIL,
        or at a busy server), which more PUTs in flight would only lengthen; but the last
        `SOLO_PUTS`, each sent alone, queued behind nothing of ours, so their least wait counts
        when it is worth `SOLO_THREADS` or more (Vercel slowed down since the faster waits)."""
        with self._changed:
            if not self._waits:
                return cap
            latency, cpu = min(self._waits), sum(self._cpus) / len(self._cpus)
            recent = list(zip(self._waits, self._alone, strict=True))[-SOLO_PUTS:]
            if len(recent) == SOLO_PUTS and all(alone for _, alone in recent):
                solo = min(wait for wait, _ in recent)
                if solo / max(cpu, 1e-4) >= SOLO_THREADS:
                    latency = max(latency, solo)
        return max(1, min(cap, round(latency / max(cpu, 1e-4))))

    def timed(self, *, wall: float, cpu: float) -> None:
        """Learn from one PUT: `wall` seconds from sending to the answer, `cpu` of them this
        thread's CPU time."""
        with self._changed:
            self._waits.append(max(0.0, wall - cpu))
            self._cpus.append(cpu)
            alone = getattr(self._local, "alone", False) and sum(self._in_flight.values()) == 1
            self._alone.append(alone)

    def acquire(self, installation_id: int) -> float:
        """Take a slot for one PUT and return 0 once it may be sent, or return the seconds the
        installation's pushes stay paused (no slot taken)."""
        while True:
            paused_until, concurrency, paced = self._row(installation_id)
            now = timezone.now()
            if paused_until is not None and paused_until > now:
                return max((paused_until - now).total_seconds(), 0.001)
            with self._changed:
                self._limit[installation_id] = concurrency
                self._paced[installation_id] = paced
                if self._in_flight[installation_id] < concurrency:
                    self._in_flight[installation_id] += 1
                    self._local.alone = sum(self._in_flight.values()) == 1
                    observed = self._observed.pop(installation_id, None)
                    break
                self._changed.wait(timeout=SLOT_POLL_SECONDS)
        self._local.seq = None
        if not paced and observed is None:
            return 0.0
        wait, self._local.seq = pace_take(
            installation_id=installation_id, observed=observed, model=self.model
        )
        if paced != (self._local.seq is not None or wait > 0):
            self.forget(installation_id)  # Vercel started (or stopped) pacing it: read again
        if self._local.seq is None and wait > 0:
            self._give_back(installation_id)
            return wait
        if wait > 0:
            time.sleep(wait)
            paused_until = _pace_row(installation_id, self.model)[0]
            now = timezone.now()
            if paused_until is not None and paused_until > now:  # a 429 came meanwhile
                self._give_back(installation_id)
                return max((paused_until - now).total_seconds(), 0.001)
        return 0.0

    def release(
        self, installation_id: int, *, accepted: bool, rate_limit: RateLimit | None = None
    ) -> None:
        """Give the slot back with its answer's rate-limit headers; a run of `concurrency`
        accepted PUTs grows the concurrency by one."""
        grow = False
        seq = getattr(self._local, "seq", None)
        with self._changed:
            self._in_flight[installation_id] -= 1
            self._changed.notify_all()
            if accepted and (rate_limit is not None or self._paced.get(installation_id)):
                kept = self._observed.get(installation_id)
                if kept is None or (seq or 0) >= (kept.seq or 0):
                    self._observed[installation_id] = Observed(rate_limit=rate_limit, seq=seq)
            limit = self._limit.get(installation_id, pace_cap())
            if not accepted:
                self._successes[installation_id] = 0
            elif limit < pace_cap():
                self._successes[installation_id] += 1
                if self._successes[installation_id] >= limit:
                    self._successes[installation_id] = 0
                    grow = True
        if grow:
            pace_grow(installation_id=installation_id, model=self.model)

    def rate_limited(self, installation_id: int, *, wait: float) -> None:
        """Vercel answered 429: pause every worker's calls of this kind for the installation,
        this process's at once."""
        pace_rate_limited(installation_id=installation_id, wait=wait, model=self.model)
        self.forget(installation_id)

    def _give_back(self, installation_id: int) -> None:
        """A slot taken but not used for a PUT."""
        with self._changed:
            self._in_flight[installation_id] -= 1
            self._changed.notify_all()


# The process's pacers: one worker process runs one task at a time.
PACER = Pacer()
NOTIFICATION_PACER = Pacer(NotificationPace)
