"""HttpProvider against a fake control plane over real HTTP on 127.0.0.1."""

import logging
import time

import pytest

from rotation.models import CredentialVersion
from rotation.providers import CredentialProviderError
from rotation.providers.http import HttpProvider
from tests.conftest import make_installation
from tests.providers.fake_control_plane import start_control_plane

SECRET = "control-plane-signing-secret-7d1e"


@pytest.fixture
def plane(settings, fast_retries):
    plane, server = start_control_plane(SECRET)
    settings.CREDENTIALS_API_URL = plane.url
    settings.CREDENTIALS_API_SECRET = SECRET
    settings.CREDENTIALS_API_READ_TIMEOUT = 0.3
    settings.CREDENTIALS_API_CONNECT_TIMEOUT = 0.5
    settings.ROTATION_PUSH_MAX_ATTEMPTS = 5
    plane.hang_seconds = 0.5
    yield plane
    server.shutdown()
    server.server_close()


@pytest.fixture
def api_resource(db):
    return make_installation("icfg_http", product="api").resources.get()


def test_it_signs_requests_and_returns_the_secrets_it_was_given(plane, api_resource, caplog):
    caplog.set_level(logging.DEBUG)
    made = HttpProvider().create(resource=api_resource, rotation_id=42)

    [request] = plane.received
    assert request.signature_valid
    assert request.path == "/credentials"
    assert request.headers["Idempotency-Key"] == "rotation-42-create"
    assert request.body == {
        "rotation": 42,
        "resource": {
            "id": api_resource.vercel_id,
            "installation": "icfg_http",
            "product": "api",
            "metadata": {},
        },
        "secrets": ["DATABASE_URL", "PGPASSWORD"],
    }
    assert made == plane.made["rotation-42-create"]
    assert all(secret["value"] not in caplog.text for secret in made)


def test_it_survives_5xx_and_timeouts_with_the_same_idempotency_key(plane, api_resource):
    plane.script = ["500", "hang", "429", "ok"]
    started = time.monotonic()
    made = HttpProvider().create(resource=api_resource, rotation_id=7)

    assert time.monotonic() - started < 5  # bounded: the hang ended at the read timeout
    assert len(plane.received) == 4
    assert {r.headers["Idempotency-Key"] for r in plane.received} == {"rotation-7-create"}
    assert all(r.signature_valid for r in plane.received)
    # One credential for the rotation, whatever the retries: a retry after a crash as well.
    assert HttpProvider().create(resource=api_resource, rotation_id=7) == made
    assert list(plane.made) == ["rotation-7-create"]


def test_it_gives_up_after_the_attempt_bound_and_at_once_on_a_refusal(plane, api_resource):
    plane.script = ["500"] * 5
    with pytest.raises(CredentialProviderError, match=r"scripted 500 \(attempt 5"):
        HttpProvider().create(resource=api_resource, rotation_id=8)
    assert len(plane.received) == 5
    plane.received.clear()
    plane.script = ["400"]
    with pytest.raises(CredentialProviderError, match=r"scripted 400 \(attempt 1"):
        HttpProvider().create(resource=api_resource, rotation_id=9)
    assert len(plane.received) == 1


def test_a_wrong_secret_is_refused_by_the_control_plane(plane, api_resource, settings):
    settings.CREDENTIALS_API_SECRET = "not-the-shared-secret"
    with pytest.raises(CredentialProviderError):
        HttpProvider().create(resource=api_resource, rotation_id=10)
    assert not plane.received[0].signature_valid
    assert plane.made == {}


def test_expiry_is_signed_keyed_by_rotation_and_never_quotes_a_value(plane, api_resource):
    made = HttpProvider().create(resource=api_resource, rotation_id=11)
    version = CredentialVersion(resource=api_resource, rotation_id=11, stage="previous")
    version.seal(made)
    plane.script = ["hang", "ok"]
    HttpProvider().expire(resource=api_resource, version=version)
    expiry = [r for r in plane.received if r.path == "/credentials/expire"]
    assert [r.headers["Idempotency-Key"] for r in expiry] == ["rotation-11-expire"] * 2
    assert all(r.signature_valid for r in expiry)
    assert expiry[0].body["version"] == str(version.pk)
    for request in plane.received:
        assert all(secret["value"] not in str(request.body) for secret in made)
