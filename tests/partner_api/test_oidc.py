"""Vercel's OIDC token on Request Secrets Rotation: what is accepted, and every hostile token."""

from __future__ import annotations

import time

import pytest

from rotation.audit import AuditAction
from rotation.models import AuditEvent, Rotation, RotationBatch
from tests.conftest import raw_database_bytes
from tests.partner_api.tokens import (
    claims_for,
    hs256_with_public_key,
    post_rotate,
    signed,
    signed_by_stranger,
    unsigned,
)


@pytest.fixture
def ids(resource):
    return resource.installation.vercel_id, resource.vercel_id


def assert_refused(response, status: int, code: str, text: str = "") -> None:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    assert text.lower() in error["message"].lower()
    assert not Rotation.objects.exists()


def refusal_event() -> AuditEvent:
    return AuditEvent.objects.get(action=AuditAction.ROTATION_REQUEST_DENIED)


def test_it_accepts_an_admin_users_token_and_answers_202(client, vercel_oidc, ids):
    token = signed(vercel_oidc, claims_for(vercel_oidc, ids[0]))
    response = post_rotate(client, *ids, token, {"reason": "leaked in a log"})
    assert response.status_code == 202, response.content
    assert response.json() == {"sync": False}
    batch = RotationBatch.objects.get()
    assert batch.source == RotationBatch.Source.VERCEL
    assert batch.reason == "leaked in a log"
    assert batch.requested_by is None
    assert batch.requested_by_username == "vercel:customer@example.com"
    event = AuditEvent.objects.get(action=AuditAction.ROTATION_REQUESTED)
    assert event.actor_type == AuditEvent.ActorType.VERCEL
    assert event.actor_username == "vercel:customer@example.com"
    assert event.reason == "leaked in a log"
    assert event.source_ip == "127.0.0.1"
    assert event.details["vercel_actor"]["user_role"] == "ADMIN"
    assert event.details["vercel_actor"]["auth"] == "user"
    # The token itself is stored nowhere.
    assert token.encode() not in raw_database_bytes()


def test_it_accepts_a_system_token(client, vercel_oidc, ids):
    token = signed(vercel_oidc, claims_for(vercel_oidc, ids[0], role="system"))
    response = post_rotate(client, *ids, token)
    assert response.status_code == 202, response.content
    event = AuditEvent.objects.get(action=AuditAction.ROTATION_REQUESTED)
    assert event.actor_username.startswith("vercel:account:")
    assert event.details["vercel_actor"]["auth"] == "system"


def test_it_refuses_a_request_without_a_bearer_token(client, vercel_oidc, ids):
    response = post_rotate(client, *ids, None)
    assert_refused(response, 401, "unauthorized", "bearer")
    assert response["WWW-Authenticate"].startswith("Bearer")
    event = refusal_event()
    assert event.actor_type == AuditEvent.ActorType.ANONYMOUS
    assert event.outcome == "denied"
    assert event.installation_ref == ids[0]
    assert event.resource_ref == ids[1]
    assert event.source_ip == "127.0.0.1"


def test_it_refuses_a_wrong_signature(client, vercel_oidc, ids):
    token = signed_by_stranger(vercel_oidc, claims_for(vercel_oidc, ids[0]))
    assert_refused(post_rotate(client, *ids, token), 401, "unauthorized", "signature")
    assert refusal_event().details["message"] == "The token's signature is not valid."
    assert token.encode() not in raw_database_bytes()


def test_it_refuses_alg_none(client, vercel_oidc, ids):
    token = unsigned(vercel_oidc, claims_for(vercel_oidc, ids[0]))
    assert_refused(post_rotate(client, *ids, token), 401, "unauthorized", "RS256")


def test_it_refuses_hs256_signed_with_the_public_key(client, vercel_oidc, ids):
    token = hs256_with_public_key(vercel_oidc, claims_for(vercel_oidc, ids[0]))
    assert_refused(post_rotate(client, *ids, token), 401, "unauthorized", "RS256")


def test_it_refuses_a_wrong_audience(client, vercel_oidc, ids):
    token = signed(vercel_oidc, claims_for(vercel_oidc, ids[0], aud="oac_someone_else"))
    assert_refused(post_rotate(client, *ids, token), 401, "unauthorized", "aud")


def test_it_refuses_a_wrong_issuer(client, vercel_oidc, ids):
    token = signed(vercel_oidc, claims_for(vercel_oidc, ids[0], iss="https://evil.example"))
    assert_refused(post_rotate(client, *ids, token), 401, "unauthorized", "iss")


def test_it_refuses_an_expired_token(client, vercel_oidc, ids):
    now = int(time.time())
    claims = claims_for(vercel_oidc, ids[0], iat=now - 600, nbf=now - 600, exp=now - 120)
    assert_refused(
        post_rotate(client, *ids, signed(vercel_oidc, claims)), 401, "unauthorized", "expired"
    )


def test_it_allows_a_little_clock_skew(client, vercel_oidc, ids):
    now = int(time.time())
    claims = claims_for(vercel_oidc, ids[0], iat=now + 10, nbf=now + 10, exp=now - 10 + 300)
    assert post_rotate(client, *ids, signed(vercel_oidc, claims)).status_code == 202


def test_it_refuses_a_token_whose_nbf_is_in_the_future(client, vercel_oidc, ids):
    later = int(time.time()) + 600
    claims = claims_for(vercel_oidc, ids[0], nbf=later, exp=later + 300)
    assert_refused(
        post_rotate(client, *ids, signed(vercel_oidc, claims)), 401, "unauthorized", "not valid yet"
    )


def test_it_refuses_a_token_issued_in_the_future(client, vercel_oidc, ids):
    later = int(time.time()) + 600
    claims = claims_for(vercel_oidc, ids[0], iat=later, nbf=None, exp=later + 300)
    assert_refused(post_rotate(client, *ids, signed(vercel_oidc, claims)), 401, "unauthorized")


def test_it_refuses_a_token_for_another_installation(client, vercel_oidc, ids):
    token = signed(vercel_oidc, claims_for(vercel_oidc, "icfg_someone_else"))
    assert_refused(post_rotate(client, *ids, token), 403, "forbidden", "another installation")
    event = refusal_event()
    assert event.outcome == "denied"
    assert event.actor_type == AuditEvent.ActorType.VERCEL  # a valid token: we know who asked


def test_it_refuses_the_user_role(client, vercel_oidc, ids):
    token = signed(vercel_oidc, claims_for(vercel_oidc, ids[0], role="USER"))
    assert_refused(post_rotate(client, *ids, token), 403, "forbidden", "ADMIN")
    event = refusal_event()
    assert event.actor_type == AuditEvent.ActorType.VERCEL
    assert event.details["vercel_actor"]["user_role"] == "USER"


@pytest.mark.parametrize(
    "claim",
    ["iss", "aud", "exp", "iat", "sub", "account_id", "installation_id", "user_id", "user_role"],
)
def test_it_refuses_a_token_missing_claims(client, vercel_oidc, ids, claim):
    token = signed(vercel_oidc, claims_for(vercel_oidc, ids[0], **{claim: None}))
    assert_refused(post_rotate(client, *ids, token), 401, "unauthorized")


@pytest.mark.parametrize("sub", ["user:abc", "account:xyz!", "account:abc:user:", "team_123"])
def test_it_refuses_subjects_that_are_neither_user_nor_system(client, vercel_oidc, ids, sub):
    token = signed(vercel_oidc, claims_for(vercel_oidc, ids[0], sub=sub))
    assert_refused(post_rotate(client, *ids, token), 401, "unauthorized", "subject")


def test_it_refetches_the_jwks_for_an_unknown_kid(client, vercel_oidc, ids):
    first = signed(vercel_oidc, claims_for(vercel_oidc, ids[0]))
    assert post_rotate(client, *ids, first, {"reason": "one"}).status_code == 202
    served = vercel_oidc.partner.jwks_served
    Rotation.objects.update(state=Rotation.State.COMPLETED)

    vercel_oidc.partner.key.rotate()  # Vercel rotates its signing key
    token = signed(vercel_oidc, claims_for(vercel_oidc, ids[0]))
    assert post_rotate(client, *ids, token, {"reason": "two"}).status_code == 202
    assert vercel_oidc.partner.jwks_served == served + 1


def test_it_refetches_for_unknown_kids_at_most_once_per_interval(
    client, vercel_oidc, ids, settings
):
    settings.VERCEL_OIDC_JWKS_REFETCH_SECONDS = 60
    token = signed(vercel_oidc, claims_for(vercel_oidc, ids[0]))
    assert post_rotate(client, *ids, token).status_code == 202
    served = vercel_oidc.partner.jwks_served
    for _ in range(5):  # a flood of tokens naming keys nobody published
        vercel_oidc.partner.key.rotate()
        forged = signed(vercel_oidc, claims_for(vercel_oidc, ids[0]))
        assert post_rotate(client, *ids, forged).status_code == 401
    assert vercel_oidc.partner.jwks_served == served


def test_it_answers_503_when_the_jwks_cannot_be_reached(client, vercel_oidc, ids, settings):
    token = signed(vercel_oidc, claims_for(vercel_oidc, ids[0]))
    settings.VERCEL_OIDC_JWKS_URL = "http://127.0.0.1:9/.well-known/jwks"
    response = post_rotate(client, *ids, token)
    assert_refused(response, 503, "service_unavailable", "try again")
    assert int(response["Retry-After"]) > 0
    assert refusal_event().outcome == "failure"


def test_it_answers_503_when_the_jwks_is_not_a_key_set(client, vercel_oidc, ids, settings):
    token = signed(vercel_oidc, claims_for(vercel_oidc, ids[0]))
    settings.VERCEL_OIDC_JWKS_URL = vercel_oidc.url + "/"  # the stand-in's HTML page
    assert_refused(post_rotate(client, *ids, token), 503, "service_unavailable")


def test_it_refuses_everything_while_no_client_id_is_configured(client, vercel_oidc, ids, settings):
    settings.VERCEL_CLIENT_ID = ""
    token = signed(vercel_oidc, claims_for(vercel_oidc, ids[0]))
    assert_refused(post_rotate(client, *ids, token), 403, "forbidden", "not configured")
    assert vercel_oidc.partner.jwks_served == 0


def test_it_fetches_keys_over_plain_http_only_on_this_machine(client, vercel_oidc, ids, settings):
    settings.VERCEL_OIDC_JWKS_URL = "http://keys.example/.well-known/jwks"
    token = signed(vercel_oidc, claims_for(vercel_oidc, ids[0]))
    assert_refused(post_rotate(client, *ids, token), 403, "forbidden", "not configured")


def test_it_answers_405_to_other_methods(client, vercel_oidc, ids):
    from tests.partner_api.tokens import rotate_url

    response = client.get(rotate_url(*ids))
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
