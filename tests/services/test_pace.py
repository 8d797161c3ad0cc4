"""The rate bucket each installation's PUTs share, primed from Vercel's rate-limit headers."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from rotation.models import PushPace
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
