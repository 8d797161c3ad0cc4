"""The stand-in playing Vercel towards the portal: its JWKS, its signed rotate requests,
the form on its page and `manage.py fake_vercel_request_rotation`."""

from __future__ import annotations

import jwt
import pytest
from django.core.management import CommandError, call_command

from rotation.models import AuditEvent, Rotation, RotationBatch
from tests.conftest import make_installation


def test_it_publishes_its_signing_key_and_its_tokens_verify_against_it(fake, http):
    keys = http.get(fake.jwks_url, timeout=2).json()
    (key,) = keys["keys"]
    assert (key["kty"], key["alg"], key["use"], key["kid"]) == (
        "RSA",
        "RS256",
        "sig",
        fake.partner.key.kid,
    )
    assert "d" not in key  # the public half only

    token = fake.partner.key.sign(fake.partner.claims("icfg_x"))
    public = jwt.PyJWK(key)
    claims = jwt.decode(
        token, public, algorithms=["RS256"], audience=fake.partner.client_id, issuer=fake.url
    )
    assert claims["installation_id"] == "icfg_x"
    assert claims["user_role"] == "ADMIN"


def test_a_rotated_key_replaces_the_published_one(fake, http):
    before = fake.partner.key.kid
    after = fake.partner.key.rotate()
    assert after != before
    assert [key["kid"] for key in http.get(fake.jwks_url, timeout=2).json()["keys"]] == [after]


def test_its_trigger_refuses_cross_site_form_posts(fake, http):
    response = http.post(
        fake.url + "/_fake/request-rotation",
        data={"resource": "icfg_x res_y"},
        headers={"Origin": "https://evil.example"},
        timeout=5,
    )
    assert response.status_code == 403
    assert fake.partner.sent == []


def test_it_reports_a_portal_that_does_not_answer(fake, http):
    fake.partner.portal_url = "http://127.0.0.1:9"
    response = http.post(
        fake.url + "/_fake/request-rotation",
        json={"installation": "icfg_x", "resource": "res_y"},
        timeout=10,
    )
    assert response.status_code == 502
    assert "did not answer" in response.json()["error"]


@pytest.fixture
def portal(live_server, transactional_db, vercel_oidc):
    """The portal (live server) trusting the stand-in, which sends its requests there."""
    vercel_oidc.partner.portal_url = live_server.url
    installation = make_installation("icfg_cmd")
    vercel_oidc.load_from_database()
    return installation.resources.get()


def test_the_command_has_the_stand_in_ask_the_portal_to_rotate(portal, vercel_oidc, capsys):
    options = [
        portal.vercel_id,
        "--reason=customer clicked rotate",
        "--delay-hours=2",
        "--idempotency-key=cmd-key-1",
        f"--fake-vercel-url={vercel_oidc.url}",
    ]
    call_command("fake_vercel_request_rotation", *options)
    assert "Portal answered 202: {'sync': False}" in capsys.readouterr().out
    batch = RotationBatch.objects.get()
    assert batch.source == RotationBatch.Source.VERCEL
    assert batch.reason == "customer clicked rotate"
    assert batch.rotations.get().expire_old_after_push.total_seconds() == 7200

    # Vercel's retry with the same key: same answer, no second rotation.
    call_command("fake_vercel_request_rotation", *options)
    assert "Portal answered 202" in capsys.readouterr().out
    assert Rotation.objects.count() == 1


def test_the_command_exits_non_zero_on_a_refusal(portal, vercel_oidc):
    with pytest.raises(CommandError, match="Portal answered 403"):
        call_command(
            "fake_vercel_request_rotation",
            portal.vercel_id,
            "--role=USER",
            f"--fake-vercel-url={vercel_oidc.url}",
        )
    assert AuditEvent.objects.filter(action="rotation.request_denied").count() == 1


def test_the_command_names_an_unknown_resource_and_a_missing_stand_in(db):
    with pytest.raises(CommandError, match="no resource 'res_nope'"):
        call_command("fake_vercel_request_rotation", "res_nope")
    with pytest.raises(CommandError, match="did not answer"):
        call_command(
            "fake_vercel_request_rotation",
            "res_nope",
            "--installation=icfg_x",
            "--fake-vercel-url=http://127.0.0.1:9",
        )


def test_the_page_form_sends_the_request_and_lists_the_answer(portal, vercel_oidc, http):
    page = http.get(vercel_oidc.url + "/", timeout=5).text
    assert "id='request-rotation'" in page
    assert f"<option value='icfg_cmd {portal.vercel_id}'>" in page

    response = http.post(
        vercel_oidc.url + "/_fake/request-rotation",
        data={
            "resource": f"icfg_cmd {portal.vercel_id}",
            "reason": "from the page",
            "role": "ADMIN",
        },
        allow_redirects=False,
        timeout=30,
    )
    assert response.status_code == 303
    assert RotationBatch.objects.get().reason == "from the page"
    listed = http.get(vercel_oidc.url + "/", timeout=5).text
    assert "<td>202</td><td>{&quot;sync&quot;: false}</td>" in listed
