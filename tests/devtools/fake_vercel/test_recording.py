"""What the stand-in saw: the requests and counters per outcome."""

from tests.devtools.fake_vercel.api_calls import call


def test_it_counts_requests_per_status_and_resets(fake, http):
    call(http, fake)
    call(http, fake, token="vci_wrong_token_x")
    call(http, fake, token=None)

    assert fake.stats == {
        "total": 3,
        "by_status": {201: 1, 403: 1, 401: 1},
        "dropped": 0,
        "hung": 0,
        "rate_limited": 0,
    }
    fake.reset_stats()
    assert fake.stats["total"] == 0
    assert fake.requests == []
