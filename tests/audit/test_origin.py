"""The client address that gets audited: REMOTE_ADDR, or X-Forwarded-For only through the
configured number of trusted proxies (a client can write anything into that header)."""

import pytest

from rotation.audit import AuditAction, Origin
from rotation.models import AuditEvent
from tests.conftest import PASSWORD

PROXY = "10.0.0.2"


def origin_ip(rf, forwarded: str | None, remote: str = PROXY) -> str | None:
    headers = {} if forwarded is None else {"HTTP_X_FORWARDED_FOR": forwarded}
    origin = Origin.of(rf.get("/", REMOTE_ADDR=remote, **headers))
    assert origin is not None
    return origin.ip


def test_it_ignores_a_spoofed_forwarded_for_without_trusted_proxies(rf, settings):
    settings.TRUSTED_PROXY_COUNT = 0

    assert origin_ip(rf, "203.0.113.9", remote="198.51.100.20") == "198.51.100.20"


@pytest.mark.parametrize(
    ("proxies", "forwarded", "client"),
    [
        (1, "203.0.113.9", "203.0.113.9"),
        # The client wrote the left entries itself; only what our proxies appended counts.
        (1, "1.2.3.4, 203.0.113.9", "203.0.113.9"),
        (1, "1.2.3.4,   203.0.113.9  ", "203.0.113.9"),
        (2, "1.2.3.4, 5.6.7.8, 203.0.113.9, 10.0.0.1", "203.0.113.9"),
        (2, "203.0.113.9, 10.0.0.1", "203.0.113.9"),
        # Fewer entries than proxies: every entry is our proxies', the left-most is the client.
        (3, "203.0.113.9, 10.0.0.1", "203.0.113.9"),
        (1, "2001:db8::7", "2001:db8::7"),
    ],
)
def test_it_takes_the_address_the_outermost_trusted_proxy_saw(
    rf, settings, proxies, forwarded, client
):
    settings.TRUSTED_PROXY_COUNT = proxies

    assert origin_ip(rf, forwarded) == client


@pytest.mark.parametrize("forwarded", [None, "", "  "])
def test_it_falls_back_to_the_peer_address_without_a_forwarded_header(rf, settings, forwarded):
    settings.TRUSTED_PROXY_COUNT = 1

    assert origin_ip(rf, forwarded) == PROXY


@pytest.mark.parametrize("forwarded", ["1.2.3.4, unknown", "1.2.3.4, <script>", "1.2.3.4,"])
def test_it_records_no_address_when_the_trusted_entry_is_not_one(rf, settings, forwarded):
    settings.TRUSTED_PROXY_COUNT = 1

    assert origin_ip(rf, forwarded) is None


def test_a_spoofed_forwarded_for_does_not_reach_the_audit_trail_of_a_log_in(
    client, alice, settings
):
    settings.TRUSTED_PROXY_COUNT = 1

    client.post(
        "/admin/login/",
        {"username": "alice", "password": PASSWORD, "next": "/admin/"},
        HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9",
        REMOTE_ADDR=PROXY,
    )

    event = AuditEvent.objects.get(action=AuditAction.AUTH_LOGIN)
    assert event.source_ip == "203.0.113.9"
