"""The Request Secrets Rotation body: what is accepted, and 400 in Vercel's shape for the rest."""

from __future__ import annotations

import pytest

from rotation.models import AuditEvent, Rotation, RotationBatch
from tests.partner_api.tokens import claims_for, post_rotate, signed


@pytest.fixture
def call(client, vercel_oidc, resource):
    installation_id, resource_id = resource.installation.vercel_id, resource.vercel_id

    def send(body, **headers):
        token = signed(vercel_oidc, claims_for(vercel_oidc, installation_id))
        return post_rotate(client, installation_id, resource_id, token, body, **headers)

    return send


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'"rotate"', "JSON object"),
        ({"reason": "x", "force": True}, "Unknown field 'force'"),
        ({"reason": 42}, "reason must be a string"),
        ({"reason": None}, "reason must be a string"),
        ({"reason": "x" * 501}, "at most 500"),
        ({"delayOldSecretsExpirationHours": -1}, "from 0 to 720"),
        ({"delayOldSecretsExpirationHours": 720.5}, "from 0 to 720"),
        ({"delayOldSecretsExpirationHours": "24"}, "must be a number"),
        ({"delayOldSecretsExpirationHours": True}, "must be a number"),
        ({"delayOldSecretsExpirationHours": None}, "must be a number"),
        (b'{"delayOldSecretsExpirationHours": NaN}', "NaN, which is not JSON"),
        (b'{"reason": "a", "reason": "b"}', "repeats the key"),
        ({"reason": "x" * 20_000}, "larger than"),
    ],
)
def test_it_refuses_a_bad_body_with_400_in_vercels_shape(call, body, says):
    response = call(body)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "bad_request"
    assert says in response.json()["error"]["message"]
    assert not Rotation.objects.exists()
    event = AuditEvent.objects.get(action="rotation.request_denied")
    assert event.outcome == "failure"
    assert event.actor_type == AuditEvent.ActorType.VERCEL


@pytest.mark.parametrize(
    "key", ["k" * 256, "caf\u00e9", "line\nbreak"], ids=["too-long", "non-ascii", "control"]
)
def test_it_refuses_a_bad_idempotency_key(call, key):
    response = call({}, **{"Idempotency-Key": key.encode("utf-8").decode("latin-1")})
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "reason", "hours"),
    [
        (b"", "Requested through Vercel (no reason given).", 14 * 24),
        ({}, "Requested through Vercel (no reason given).", 14 * 24),
        ({"reason": "incident 7", "delayOldSecretsExpirationHours": 1.5}, "incident 7", 1.5),
        ({"delayOldSecretsExpirationHours": 0}, "Requested through Vercel (no reason given).", 0),
        (
            {"delayOldSecretsExpirationHours": 720},
            "Requested through Vercel (no reason given).",
            720,
        ),
    ],
)
def test_it_accepts_optional_fields_and_fractional_delays(call, policy, body, reason, hours):
    response = call(body)
    assert response.status_code == 202, response.content
    batch = RotationBatch.objects.get()
    assert batch.reason == reason
    rotation = batch.rotations.get()
    assert rotation.expire_old_after_push.total_seconds() == hours * 3600
