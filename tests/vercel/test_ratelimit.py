"""Vercel's rate-limit headers, read from each answer."""

import pytest

from rotation.vercel import RateLimit, rate_limit_from_headers
from tests.vercel.stand_in import push

NOW = 1_800_000_000.0


def headers(limit="60", remaining="59", reset=str(int(NOW) + 30)) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": limit,
        "X-RateLimit-Remaining": remaining,
        "X-RateLimit-Reset": reset,
    }


def test_it_reads_the_limit_what_remains_and_the_seconds_until_the_reset():
    assert rate_limit_from_headers(headers(), now=NOW) == RateLimit(
        limit=60, remaining=59, reset_in=30.0
    )


def test_it_reads_a_reset_given_in_milliseconds():
    limit = rate_limit_from_headers(headers(reset=str(int(NOW * 1000) + 2500)), now=NOW)
    assert limit is not None and limit.reset_in == pytest.approx(2.5)


def test_it_keeps_what_remains_within_the_limit():
    assert rate_limit_from_headers(headers(remaining="-3"), now=NOW).remaining == 0
    assert rate_limit_from_headers(headers(remaining="99"), now=NOW).remaining == 60


@pytest.mark.parametrize(
    "answer",
    [
        {},
        {"X-RateLimit-Limit": "60"},
        headers(limit="many"),
        headers(limit="0"),
        headers(remaining="1.5"),
        headers(reset="nan"),
        headers(reset="tomorrow"),
    ],
)
def test_it_ignores_missing_or_malformed_headers(answer):
    assert rate_limit_from_headers(answer, now=NOW) is None


def test_a_push_returns_the_stand_ins_rate_limit(fake):
    assert push() is None  # the stand-in sends none without a rate

    fake.rate = 50
    limit = push()

    assert limit is not None
    assert (limit.limit, limit.remaining) == (50, 49)
    # The bucket is whole again 1/50 s after the PUT, sent as epoch seconds rounded up.
    assert 0 < limit.reset_in <= 1 + 1 / 50
