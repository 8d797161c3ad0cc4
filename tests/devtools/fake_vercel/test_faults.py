"""Fault injection: rate limit, 5xx answers, drops, hangs, latency and scripted answers."""

import time

import pytest
import requests

from rotation.devtools.fake_vercel import FakeVercel
from tests.devtools.fake_vercel.api_calls import (
    BODY,
    INSTALLATION,
    PRODUCT,
    RESOURCE,
    SECRETS_PATH,
    TOKEN,
    call,
    error_of,
)


def test_it_rate_limits_with_retry_after_and_the_limit_body(fake, http):
    fake.rate = 0.01

    first = call(http, fake)
    second = call(http, fake)

    assert first.status_code == 201
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) >= 1
    error = error_of(second)
    assert error["code"] == "rate_limited"
    assert set(error["limit"]) == {"total", "remaining", "reset", "resetMs"}
    assert error["limit"]["remaining"] == 0
    assert error["limit"]["resetMs"] // 1000 <= error["limit"]["reset"]
    assert fake.stats["rate_limited"] == 1


def test_it_sends_vercels_rate_limit_headers_while_a_rate_is_set(fake, http):
    assert "X-RateLimit-Limit" not in call(http, fake).headers  # no rate, no headers
    fake.rate = 2

    first, second, third = (call(http, fake) for _ in range(3))

    assert [r.status_code for r in (first, second, third)] == [201, 201, 429]
    assert [r.headers["X-RateLimit-Limit"] for r in (first, third)] == ["2", "2"]
    assert [r.headers["X-RateLimit-Remaining"] for r in (first, second, third)] == ["1", "0", "0"]
    # When the window is whole again, in epoch seconds: within the second it takes to refill.
    reset = int(third.headers["X-RateLimit-Reset"])
    assert time.time() < reset <= time.time() + 2


def test_it_limits_each_token_and_method_on_its_own(fake, http):
    fake.rate = 0.01
    assert call(http, fake).status_code == 201
    assert call(http, fake).status_code == 429

    assert call(http, fake, token="vci_another_token").status_code == 403  # not 429
    assert call(http, fake, method="PATCH").status_code != 429


def test_it_lifts_the_rate_limit_when_the_knob_is_cleared(fake, http):
    fake.rate = 0.01
    call(http, fake)
    assert call(http, fake).status_code == 429

    fake.rate = None

    assert call(http, fake).status_code == 201


def test_it_fails_with_5xx_error_bodies_at_the_fail_rate(fake, http):
    fake.fail_rate = 1.0

    response = call(http, fake)

    assert 500 <= response.status_code < 600
    assert set(error_of(response)) == {"code", "message"}
    fake.fail_rate = 0.0
    assert call(http, fake).status_code == 201


def test_it_draws_the_same_faults_for_the_same_seed(http):
    def statuses(seed):
        with FakeVercel(seed=seed, fail_rate=0.5) as fake:
            fake.add_installation(INSTALLATION, TOKEN, {RESOURCE: PRODUCT})
            return [call(http, fake).status_code for _ in range(20)]

    first = statuses(7)

    assert first == statuses(7)
    assert {201} < set(first)


def test_it_drops_the_connection_at_the_drop_rate(fake, http):
    fake.drop_rate = 1.0

    with pytest.raises(requests.ConnectionError):
        call(http, fake)

    assert fake.stats["dropped"] == 1
    assert fake.secrets_of(INSTALLATION, RESOURCE) == []


def test_it_hangs_longer_than_the_client_waits(fake, http):
    fake.hang_rate = 1.0
    fake.hang_seconds = 10

    with pytest.raises(requests.ReadTimeout):
        http.put(
            fake.url + SECRETS_PATH,
            json=BODY,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=(1, 0.3),
        )

    assert fake.stats["hung"] == 1


def test_it_answers_after_the_configured_latency(fake, http):
    fake.latency_ms = 50
    started = time.monotonic()

    response = call(http, fake)

    assert time.monotonic() - started >= 0.05
    assert response.status_code == 201


def test_it_plays_scripted_answers_first(fake, http):
    fake.respond_next(409, {"error": {"code": "conflict", "message": "busy"}}, times=2)

    assert [call(http, fake).status_code for _ in range(3)] == [409, 409, 201]
