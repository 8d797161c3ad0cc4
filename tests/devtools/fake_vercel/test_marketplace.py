"""The stand-in's Marketplace calls: list and update resources, rotate and revoke tokens,
as strict as the secrets endpoints (bearer, schema, faults)."""

import pytest

from tests.devtools.fake_vercel.api_calls import (
    INSTALLATION,
    PRODUCT,
    RESOURCE,
    TOKEN,
    call,
    error_of,
)

BASE = f"/v1/installations/{INSTALLATION}"
CLIENT_SECRET = "integration-client-secret-123"


@pytest.fixture
def market(fake, settings):
    settings.VERCEL_CLIENT_SECRET = CLIENT_SECRET
    return fake


def rotate(http, fake, token=TOKEN, secret=CLIENT_SECRET):
    return call(
        http,
        fake,
        f"{BASE}/credentials/rotate",
        {"client_secret": secret},
        method="POST",
        token=token,
    )


def revoke(http, fake, *, token, revoked, secret=CLIENT_SECRET):
    body = {"token": revoked, "client_secret": secret}
    return call(http, fake, f"{BASE}/credentials/revoke", body, method="POST", token=token)


def test_it_lists_resources_with_name_status_and_notification(market, http):
    market.set_resource_on_vercel(INSTALLATION, RESOURCE, product=PRODUCT, name="main db")
    response = call(http, market, f"{BASE}/resources", None, method="GET")
    assert response.status_code == 200
    [item] = response.json()["resources"]
    assert item["partnerId"] == RESOURCE
    assert item["productId"] == PRODUCT
    assert item["name"] == "main db"
    assert item["status"] == "ready"
    assert item["internalId"].startswith("iri_")


def test_it_refuses_listing_with_a_wrong_token(market, http):
    response = call(http, market, f"{BASE}/resources", None, method="GET", token="vci_wrong")
    assert response.status_code == 403


def test_it_sets_and_clears_a_notification(market, http):
    note = {
        "level": "warn",
        "title": "Redeploy",
        "message": "New credentials",
        "href": "https://x.example",
    }
    response = call(
        http, market, f"{BASE}/resources/{RESOURCE}", {"notification": note}, method="PATCH"
    )
    assert response.status_code == 200
    assert response.json() == {"name": RESOURCE}
    assert market.resource_on_vercel(INSTALLATION, RESOURCE).notification == note
    page = http.get(market.url + "/", timeout=2).text
    assert "Redeploy" in page and "New credentials" in page
    response = call(
        http, market, f"{BASE}/resources/{RESOURCE}", {"notification": None}, method="PATCH"
    )
    assert response.status_code == 200
    assert market.resource_on_vercel(INSTALLATION, RESOURCE).notification is None


@pytest.mark.parametrize(
    "body",
    [
        {"notification": {"level": "loud", "title": "x"}},
        {"notification": {"level": "warn"}},
        {"notification": {"level": "warn", "title": "x", "colour": "red"}},
        {"nickname": "x"},
    ],
)
def test_it_refuses_a_patch_outside_the_schema(market, http, body):
    response = call(http, market, f"{BASE}/resources/{RESOURCE}", body, method="PATCH")
    assert response.status_code == 400
    assert error_of(response)["code"] == "bad_request"


def test_a_patch_of_an_unknown_resource_is_404(market, http):
    response = call(http, market, f"{BASE}/resources/res_nope", {"name": "x"}, method="PATCH")
    assert response.status_code == 404


def test_a_rotated_token_works_and_the_old_one_until_revoked(market, http):
    response = rotate(http, market)
    assert response.status_code == 200
    answer = response.json()
    new = answer["access_token"]
    assert answer["token_type"] == "oauth2-token"
    assert new != TOKEN
    assert call(http, market, token=new).status_code == 201
    assert call(http, market).status_code == 201  # the old one still works
    response = revoke(http, market, token=new, revoked=TOKEN)
    assert response.json() == {"revoked": True, "alreadyRevoked": False}
    assert call(http, market).status_code == 401
    assert call(http, market, f"{BASE}/resources", None, method="GET").status_code == 401
    assert call(http, market, token=new).status_code == 201
    again = revoke(http, market, token=new, revoked=TOKEN)
    assert again.json() == {"revoked": True, "alreadyRevoked": True}


def test_it_refuses_to_revoke_the_last_live_token(market, http):
    response = revoke(http, market, token=TOKEN, revoked=TOKEN)
    assert response.status_code == 409
    assert call(http, market).status_code == 201


def test_rotate_needs_the_client_secret(market, http):
    assert rotate(http, market, secret="wrong-secret").status_code == 403
    response = call(http, market, f"{BASE}/credentials/rotate", {}, method="POST")
    assert response.status_code == 400
    assert "client_secret" in error_of(response)["message"]


def test_a_revoked_token_cannot_rotate(market, http):
    new = rotate(http, market).json()["access_token"]
    revoke(http, market, token=new, revoked=TOKEN)
    assert rotate(http, market, token=TOKEN).status_code == 401


def test_faults_apply_to_marketplace_calls(market, http):
    market.respond_next(503, {"error": {"code": "internal_server_error", "message": "x"}})
    assert rotate(http, market).status_code == 503
    assert len(market.live_tokens(INSTALLATION)) == 1


def test_the_page_shows_token_age(market, http):
    page = http.get(market.url + "/", timeout=2).text
    assert "Installation tokens" in page
    assert INSTALLATION in page
    assert TOKEN not in page
