"""The rate bucket each installation's PUTs share, primed from Vercel's rate-limit headers."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from rotation.models import PushPace
from rotation.services import pace
from rotation.services.pace import (
    BOOK_AHEAD_SECONDS,
    Observed,
    Pacer,
    pace_rate_limited,
    pace_take,
)
from rotation.vercel import RateLimit

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def seen(*, limit=10, remaining=6, reset_in=0.5, seq=None) -> Observed:
    return Observed(RateLimit(limit=limit, remaining=remaining, reset_in=reset_in), seq)


@pytest.mark.django_db
def test_it_leaves_puts_unpaced_until_vercel_sends_a_rate_limit(installation):
    assert pace_take(installation_id=installation.pk) == (0.0, None)
    assert pace_take(installation_id=installation.pk, observed=Observed(None, None)) == (0, None)
    assert not PushPace.objects.exists()


@pytest.mark.django_db
def test_it_books_each_put_one_interval_after_the_last_once_the_bucket_is_low(installation):
    """10 per second with 6 left: half is trusted (other workers' PUTs may be in flight), one
    token stays in reserve, then every PUT, whichever worker books it, waits 0.1 s more."""
    with time_machine.travel(NOW, tick=False):
        booked = [pace_take(installation_id=installation.pk, observed=seen())]
        booked += [pace_take(installation_id=installation.pk) for _ in range(12)]

    waits = [round(wait, 3) for wait, _ in booked]
    assert waits == [0, 0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1]
    assert [seq for _, seq in booked] == [*range(1, 13), None]  # beyond a second: not booked
    assert BOOK_AHEAD_SECONDS == 1.0
    pace = PushPace.objects.get()
    assert (pace.rate_limit, pace.rate_window, pace.sent) == (10, 1.0, 12)

    with time_machine.travel(NOW + timedelta(seconds=1), tick=False):
        assert round(pace_take(installation_id=installation.pk)[0], 3) == 0.1  # refilled


@pytest.mark.django_db
def test_the_freshest_answer_primes_the_bucket_less_the_puts_booked_since(installation):
    with time_machine.travel(NOW, tick=False):
        pace_take(installation_id=installation.pk, observed=seen(remaining=10))
        for _ in range(3):
            pace_take(installation_id=installation.pk)
        # The answer to PUT 2 said 9 left: PUTs 3 and 4 are not counted in it yet.
        pace_take(installation_id=installation.pk, observed=seen(remaining=9, seq=2))
        assert PushPace.objects.get().tokens == 9 - 2 - 1
        # An older answer, arriving late, changes nothing.
        pace_take(installation_id=installation.pk, observed=seen(remaining=0, seq=1))
        assert PushPace.objects.get().tokens == 9 - 2 - 2


@pytest.mark.django_db
def test_the_window_is_learned_from_the_reset_and_a_lifted_limit_stops_pacing(installation):
    with time_machine.travel(NOW, tick=False):
        pace_take(installation_id=installation.pk, observed=seen(limit=60, reset_in=31))
        pace_take(installation_id=installation.pk, observed=seen(limit=60, reset_in=12, seq=1))
        assert PushPace.objects.get().rate_window == 30  # the longest seen, whole seconds
        assert pace_take(installation_id=installation.pk, observed=Observed(None, 2)) == (0, None)
        assert PushPace.objects.get().rate_limit is None
        assert pace_take(installation_id=installation.pk) == (0.0, None)


@pytest.mark.django_db
def test_a_429_empties_the_bucket_and_pauses_every_pacer(installation):
    with time_machine.travel(NOW, tick=False):
        pace_take(installation_id=installation.pk, observed=seen(remaining=10))
        pace_rate_limited(installation_id=installation.pk, wait=2)
        assert PushPace.objects.get().tokens == 0
        for pacer in (Pacer(), Pacer()):  # two worker processes
            assert pacer.acquire(installation.pk) == 2


@pytest.mark.django_db
def test_a_pacer_reads_the_shared_pace_once_per_interval_and_a_429_here_at_once(
    installation, monkeypatch
):
    monkeypatch.setattr(pace, "PACE_READ_SECONDS", 3600)
    pacer = Pacer()
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            assert pacer.acquire(installation.pk) == 0
            pacer.release(installation.pk, accepted=True)
    assert len(queries) == 1  # one read for three PUTs
    # This process met the 429 (rotation.services.backoff forgets what it read): paused at once.
    pace_rate_limited(installation_id=installation.pk, wait=2)
    pacer.forget(installation.pk)
    assert 1.5 < pacer.acquire(installation.pk) <= 2
    # A pause in effect is read again each time, so one lifted early is not waited out.
    PushPace.objects.update(paused_until=None)
    assert pacer.acquire(installation.pk) == 0


@pytest.mark.django_db
def test_another_node_s_pause_is_seen_once_the_interval_passes(installation, monkeypatch):
    pacer = Pacer()
    assert pacer.acquire(installation.pk) == 0
    pacer.release(installation.pk, accepted=True)
    pace_rate_limited(installation_id=installation.pk, wait=2)  # in another process
    monkeypatch.setattr(pace, "PACE_READ_SECONDS", 0)  # the interval has passed
    assert 1.5 < pacer.acquire(installation.pk) <= 2


def test_a_pacer_sizes_threads_by_vercels_latency_over_a_puts_cpu_time():
    pacer = Pacer()
    assert pacer.threads(8) == 8  # nothing timed yet: the cap
    for _ in range(10):  # a stand-in on this machine: a PUT waits less than it costs here
        pacer.timed(wall=0.0015, cpu=0.001)
    assert pacer.threads(8) == 1
    for _ in range(pace.TIMED_PUTS):  # Vercel over the internet
        pacer.timed(wall=0.101, cpu=0.001)
    assert pacer.threads(8) == 8
    assert pacer.threads(4) == 4
    # Waits beyond the least are queueing (GIL, a busy server), which more threads lengthen.
    for _ in range(pace.TIMED_PUTS - 1):
        pacer.timed(wall=0.021, cpu=0.001)
    pacer.timed(wall=0.004, cpu=0.001)
    assert pacer.threads(8) == 3
    pacer.forget()
    assert pacer.threads(8) == 8


@pytest.mark.django_db
def test_puts_sent_alone_raise_the_thread_estimate_when_vercel_slows_down(installation):
    pacer = Pacer()
    for _ in range(pace.TIMED_PUTS):  # a stand-in's pace, learned with PUTs in flight together
        pacer.timed(wall=0.0015, cpu=0.001)
    for _ in range(pace.SOLO_PUTS):  # then Vercel answers in 100 ms
        assert pacer.threads(8) == 1
        assert pacer.acquire(installation.pk) == 0
        pacer.timed(wall=0.101, cpu=0.001)
        pacer.release(installation.pk, accepted=True)
    assert pacer.threads(8) == 8  # the least wait of the window alone would say 1 for 47 more
    # PUTs in flight together may have queued behind each other: the least wait counts again.
    for _ in range(2):
        assert pacer.acquire(installation.pk) == 0
    pacer.timed(wall=0.101, cpu=0.001)
    assert pacer.threads(8) == 1
