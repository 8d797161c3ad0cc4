"""Vercel errors as the client raises them: statuses, waits, transport failures, and never a
token or secret value in their texts or in logs."""

import logging
import pickle
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from rotation import vercel
from rotation.vercel import VercelError
from tests.vercel.stand_in import (
    INSTALLATION,
    PREVIEW_VALUE,
    RESOURCE,
    TOKEN,
    VALUE,
    push,
    push_error,
)

NOW = 1_800_000_000.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- errors from Vercel ---------------------------------------------------------------------


def test_it_maps_an_unknown_resource_to_a_permanent_error(fake):
    error = push_error(resource_id="res_missing")

    assert (error.status, error.code, error.permanent) == (404, "not_found", True)
    assert error.message == "Resource not found"


def test_it_maps_an_unknown_installation_to_not_found(fake):
    error = push_error(installation_id="icfg_gone")

    assert (error.status, error.permanent) == (404, True)


def test_it_maps_a_wrong_token_to_forbidden(fake):
    error = push_error(token="vci_wrong_token_0000")

    assert (error.status, error.code, error.permanent) == (403, "forbidden", True)


def test_it_maps_a_wrong_product_on_the_deprecated_path_to_not_found(fake):
    error = push_error(endpoint="deprecated", product="redis")

    assert (error.status, error.permanent) == (404, True)


@pytest.mark.parametrize(
    ("status", "code", "permanent"),
    [
        (400, "bad_request", True),
        (401, "unauthorized", True),
        (403, "forbidden", True),
        (404, "not_found", True),
        (409, "conflict", False),
        (410, "gone", True),
        (422, "unprocessable_entity", True),
        (429, "rate_limited", False),
        (500, "internal_server_error", False),
        (502, "bad_gateway", False),
        (503, "service_unavailable", False),
        (504, "gateway_timeout", False),
        (418, "teapot", True),
    ],
)
def test_it_maps_each_status_class(fake, status, code, permanent):
    fake.respond_next(status, {"error": {"code": code, "message": f"Vercel says {status}"}})

    error = push_error()

    assert (error.status, error.code, error.permanent) == (status, code, permanent)
    assert error.message == f"Vercel says {status}"


@pytest.mark.parametrize(
    ("status", "code", "permanent"),
    [(400, "bad_request", True), (404, "not_found", True), (502, "internal_server_error", False)],
)
def test_it_maps_a_non_json_answer_by_status(fake, status, code, permanent):
    fake.respond_next(status, raw=b"<html>oops</html>", content_type="text/html")

    error = push_error()

    assert (error.status, error.code, error.permanent) == (status, code, permanent)
    assert "no Vercel error body" in error.message


def test_it_treats_an_unexpected_redirect_as_permanent_and_does_not_follow_it(fake):
    fake.respond_next(307, headers={"Location": fake.url + "/elsewhere"})

    error = push_error()

    assert (error.status, error.code, error.permanent) == (307, "http_307", True)
    assert len(fake.requests) == 1


@pytest.mark.parametrize(("status", "payload"), [(200, {"ok": True}), (202, {}), (204, None)])
def test_it_accepts_any_2xx_as_success(fake, status, payload):
    fake.respond_next(status, payload)

    assert push() is None

    (request,) = fake.requests
    assert (request.path, request.status) == (
        f"/v1/installations/{INSTALLATION}/resources/{RESOURCE}/secrets",
        status,
    )


# -- rate limits and waits -------------------------------------------------------------------


def test_it_honours_retry_after_from_a_rate_limited_answer(fake):
    fake.respond_next(
        429,
        {"error": {"code": "rate_limited", "message": "slow down", "limit": {"reset": 1}}},
        headers={"Retry-After": "7"},
    )

    error = push_error()

    assert (error.code, error.permanent, error.retry_after) == ("rate_limited", False, 7.0)


def test_it_falls_back_to_limit_reset_without_retry_after(fake):
    fake.rate = 0.01
    push()

    error = push_error()

    assert error.status == 429
    assert error.code == "rate_limited"
    assert 1 <= error.retry_after <= vercel.RETRY_AFTER_MAX


@pytest.mark.parametrize(
    ("header", "limit", "expected"),
    [
        ("7", None, 7.0),
        ("0", None, vercel.RETRY_AFTER_MIN),
        ("0.003", None, vercel.RETRY_AFTER_MIN),
        ("-5", None, vercel.RETRY_AFTER_MIN),
        ("86400000", None, vercel.RETRY_AFTER_MAX),
        ("1e400", {"reset": NOW + 20}, 20.0),
        ("nan", {"reset": NOW + 20}, 20.0),
        ("soon", {"reset": NOW + 20}, 20.0),
        (None, {"reset": NOW + 30}, 30.0),
        (None, {"reset": NOW + 30.5, "resetMs": 1}, 30.5),
        (None, {"reset": NOW - 1000}, vercel.RETRY_AFTER_MIN),
        (None, {"reset": -50}, vercel.RETRY_AFTER_MIN),
        (None, {"reset": 10**30}, vercel.RETRY_AFTER_MAX),
        (None, {"reset": 10**400}, vercel.RETRY_AFTER_MAX),
        (None, {"reset": -(10**400)}, vercel.RETRY_AFTER_MIN),
        (None, {"reset": (NOW + 45) * 1000}, 45.0),
        (None, {"resetMs": (NOW + 12) * 1000}, 12.0),
        (None, {"reset": "tomorrow"}, None),
        (None, {"reset": True}, None),
        (None, "garbage", None),
        (None, None, None),
        ("", {}, None),
    ],
)
def test_it_parses_and_clamps_waits(header, limit, expected):
    assert vercel.parse_retry_after(header, limit, now=NOW) == expected


def test_it_parses_retry_after_as_an_http_date():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=42), usegmt=True)

    assert vercel.parse_retry_after(header, now=now.timestamp()) == 42.0


def test_it_sets_no_wait_on_permanent_errors(fake):
    fake.respond_next(
        404, {"error": {"code": "not_found", "message": "x"}}, headers={"Retry-After": "3"}
    )

    assert push_error().retry_after is None


def test_it_reads_the_wait_of_a_server_error(fake):
    fake.respond_next(503, {"error": {"code": "x", "message": "y"}}, headers={"Retry-After": "2"})

    assert push_error().retry_after == 2.0


# -- transport failures -----------------------------------------------------------------------


def test_it_gives_up_on_a_hanging_answer_as_a_transient_timeout(fake):
    fake.hang_rate = 1.0
    fake.hang_seconds = 5

    error = push_error()

    assert (error.status, error.code, error.permanent) == (None, "timeout", False)
    assert error.message == "no answer in time (ReadTimeout)"
    assert fake.stats["hung"] == 1


def test_it_reports_a_dropped_connection_as_transient(fake):
    fake.drop_rate = 1.0

    error = push_error()

    assert (error.status, error.code, error.permanent) == (None, "connection_error", False)
    assert fake.stats["dropped"] == 1


def test_it_recovers_after_a_dropped_connection(fake):
    push()
    fake.drop_rate = 1.0
    push_error()
    fake.drop_rate = 0.0

    push()

    assert fake.stats["by_status"] == {201: 2}


def test_it_reports_a_refused_connection_as_transient(fake, settings):
    settings.VERCEL_API_URL = f"http://127.0.0.1:{free_port()}"

    error = push_error()

    assert (error.code, error.permanent) == ("connection_error", False)
    assert error.message == "connection failed (ConnectionError)"


def test_it_reports_a_request_it_cannot_send_as_permanent_naming_only_the_class(fake, settings):
    settings.VERCEL_API_URL = "http://127.0.0.1:99999"

    error = push_error()

    assert (error.status, error.code, error.permanent) == (None, "request_error", True)
    assert error.message == "request could not be sent (InvalidURL)"
    assert fake.requests == []


def test_it_pickles_an_error_with_its_fields():
    error = VercelError(
        status=429, code="rate_limited", message="m", permanent=False, retry_after=2
    )

    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes

    assert (copy.status, copy.code, copy.message, copy.permanent, copy.retry_after) == (
        429,
        "rate_limited",
        "m",
        False,
        2,
    )


# -- nothing secret in logs or exception texts ----------------------------------------------


def test_it_never_logs_or_raises_a_token_or_secret_value(fake, settings, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")
    caplog.set_level(logging.DEBUG, logger="rotation")
    secrets = [
        {
            "name": "DATABASE_URL",
            "value": VALUE,
            "environmentOverrides": {"preview": PREVIEW_VALUE},
        }
    ]
    echo = f"bad token {TOKEN} for value {VALUE} / {PREVIEW_VALUE}"
    errors = []

    def attempt(**overrides):
        with pytest.raises(VercelError) as caught:
            push(**{"secrets": secrets, **overrides})
        errors.append(caught.value)

    for status in (400, 401, 403, 404, 409, 410, 422, 429, 500, 503):
        fake.respond_next(status, {"error": {"code": "x", "message": echo}})
        attempt()
    fake.respond_next(400, {"error": {"code": TOKEN, "message": VALUE}})
    attempt()
    fake.respond_next(502, raw=echo.encode(), content_type="text/plain")
    attempt()
    fake.respond_next(429, {"error": {"code": "rate_limited", "message": echo, "limit": {}}})
    attempt()
    attempt(token="vci_wrong_token_0000")
    attempt(resource_id="res_missing")
    attempt(endpoint="deprecated", product="wrong")
    attempt(token=TOKEN + "\n")
    attempt(secrets=[*secrets, {"name": "DATABASE_URL", "value": VALUE}])
    attempt(secrets=[{"name": "A", "value": VALUE, "environmentOverrides": {"x": VALUE}}])
    fake.hang_rate, fake.hang_seconds = 1.0, 5
    attempt()
    fake.hang_rate, fake.drop_rate = 0.0, 1.0
    attempt()
    fake.drop_rate = 0.0
    settings.VERCEL_API_URL = f"http://127.0.0.1:{free_port()}"
    attempt()

    assert len(errors) == 22
    texts = [record.getMessage() for record in caplog.records]
    texts += [repr(record.args) for record in caplog.records]
    texts += [text for error in errors for text in (str(error), repr(error), repr(error.args))]
    assert any("vercel PUT" in text for text in texts)
    assert any("urllib3" in record.name for record in caplog.records)
    for text in texts:
        for hidden in (TOKEN, VALUE, PREVIEW_VALUE):
            assert hidden not in text
