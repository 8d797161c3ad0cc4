"""The pace of pushes per installation: how many PUTs in flight, and pauses after a 429.

Vercel rate-limits per token. The pause and the concurrency live in the database
(`PushPace`), whichever broker runs the tasks, so every worker on every node sees a 429 at its
next PUT: one primary-key read per PUT, and writes only when rate limited or recovering.
Within one process, `Pacer` counts the PUTs in flight per installation.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from rotation.models import PushPace

logger = logging.getLogger(__name__)

# A thread waiting for a slot re-reads the shared pace this often (a pause set by another node).
SLOT_POLL_SECONDS = 0.25


def pace_cap() -> int:
    """PUTs in flight per installation and worker when Vercel has not rate limited it."""
    return max(1, settings.ROTATION_PUSH_PER_INSTALLATION)


def pace_read(*, installation_id: int) -> tuple[datetime | None, int]:
    """The installation's pause (None: none recorded) and its concurrency."""
    row = (
        PushPace.objects.filter(pk=installation_id)
        .values_list("paused_until", "concurrency")
        .first()
    )
    if row is None:
        return None, pace_cap()
    return row[0], max(1, min(row[1], pace_cap()))


def pace_rate_limited(*, installation_id: int, wait: float) -> datetime:
    """Pause every worker's pushes for the installation `wait` seconds; halve its concurrency
    once per pause (the 429s of PUTs already in flight belong to the same one)."""
    now = timezone.now()
    until = now + timedelta(seconds=max(0.0, wait))
    with transaction.atomic():
        pace, _ = PushPace.objects.select_for_update().get_or_create(
            pk=installation_id, defaults={"concurrency": pace_cap()}
        )
        if pace.paused_until is None or pace.paused_until <= now:
            pace.concurrency = max(1, min(pace.concurrency, pace_cap()) // 2)
        pace.paused_until = max(pace.paused_until or until, until)
        pace.rate_limited_count += 1
        pace.save()
    logger.info(
        "installation %s rate limited: pushes paused until %s, %s in flight per worker",
        installation_id,
        pace.paused_until.isoformat(),
        pace.concurrency,
    )
    return pace.paused_until


def pace_grow(*, installation_id: int) -> None:
    """One more PUT in flight after a run of successes, up to the cap."""
    PushPace.objects.filter(pk=installation_id, concurrency__lt=pace_cap()).update(
        concurrency=F("concurrency") + 1
    )


class Pacer:
    """One process's PUTs in flight per installation, within the shared pace."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._in_flight: dict[int, int] = defaultdict(int)
        self._successes: dict[int, int] = defaultdict(int)
        self._limit: dict[int, int] = {}

    def acquire(self, installation_id: int) -> float:
        """Take a slot for one PUT and return 0, or return the seconds the installation's
        pushes stay paused (no slot taken)."""
        while True:
            paused_until, concurrency = pace_read(installation_id=installation_id)
            now = timezone.now()
            if paused_until is not None and paused_until > now:
                return max((paused_until - now).total_seconds(), 0.001)
            with self._changed:
                self._limit[installation_id] = concurrency
                if self._in_flight[installation_id] < concurrency:
                    self._in_flight[installation_id] += 1
                    return 0.0
                self._changed.wait(timeout=SLOT_POLL_SECONDS)

    def release(self, installation_id: int, *, accepted: bool) -> None:
        """Give the slot back; a run of `concurrency` accepted PUTs grows it by one."""
        grow = False
        with self._changed:
            self._in_flight[installation_id] -= 1
            self._changed.notify_all()
            limit = self._limit.get(installation_id, pace_cap())
            if not accepted:
                self._successes[installation_id] = 0
            elif limit < pace_cap():
                self._successes[installation_id] += 1
                if self._successes[installation_id] >= limit:
                    self._successes[installation_id] = 0
                    grow = True
        if grow:
            pace_grow(installation_id=installation_id)


# The process's pacer: one worker process runs one task at a time.
PACER = Pacer()
