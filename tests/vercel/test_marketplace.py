"""The client's Marketplace calls against the stand-in: shapes per Vercel's schema, errors
as `VercelError`, and no token or client secret in an error text."""

import jsonschema
import pytest

from rotation import vercel
from rotation.devtools.fake_vercel import request_schemas
from rotation.vercel import VercelError
from tests.vercel.stand_in import INSTALLATION, PRODUCT, RESOURCE, TOKEN

CLIENT_SECRET = "client-secret-for-tests-42"


@pytest.fixture
def market(fake, settings):
    settings.VERCEL_CLIENT_SECRET = CLIENT_SECRET
    return fake


def test_it_lists_resources(market):
    market.set_resource_on_vercel(
        INSTALLATION, RESOURCE, product=PRODUCT, name="db", status="suspended"
    )
    listed = {
        item.partner_id: item
        for item in vercel.list_resources(installation_id=INSTALLATION, token=TOKEN)
    }
    assert set(listed) == {RESOURCE, "res_other"}
    assert listed[RESOURCE].name == "db"
    assert listed[RESOURCE].status == "suspended"
    assert listed[RESOURCE].product_id == PRODUCT


def test_it_follows_pagination(market):
    market.resources_page_size = 1
    listed = vercel.list_resources(installation_id=INSTALLATION, token=TOKEN)
    assert [item.partner_id for item in listed] == ["res_client1", "res_other"]
    assert [request.path for request in market.requests] == [
        f"/v1/installations/{INSTALLATION}/resources"
    ] * 2
    assert market.requests[-1].headers.get("Authorization") == f"Bearer {TOKEN}"


def test_a_listing_without_resources_is_a_permanent_error(market):
    market.respond_next(200, {"items": []})
    with pytest.raises(VercelError) as caught:
        vercel.list_resources(installation_id=INSTALLATION, token=TOKEN)
    assert caught.value.permanent
    assert caught.value.code == "bad_answer"


def test_the_notification_body_matches_the_schema(market):
    note = vercel.notification_body(level="warn", title="Redeploy", message="DATABASE_URL changed")
    vercel.update_resource(
        installation_id=INSTALLATION,
        resource_id=RESOURCE,
        token=TOKEN,
        fields={"notification": note},
    )
    sent = market.requests[-1]
    assert sent.method == "PATCH"
    assert sent.body == {
        "notification": {"level": "warn", "title": "Redeploy", "message": "DATABASE_URL changed"}
    }
    schema = request_schemas()["update-resource"]
    jsonschema.validate(
        sent.body, {**schema, "properties": {"notification": schema["properties"]["notification"]}}
    )
    assert (
        market.resource_on_vercel(INSTALLATION, RESOURCE).notification == sent.body["notification"]
    )


def test_a_bad_notification_is_refused_before_sending(market):
    with pytest.raises(VercelError) as caught:
        vercel.notification_body(level="loud", title="x")
    assert caught.value.status is None
    assert market.requests == []


def test_rotate_and_revoke(market):
    new = vercel.rotate_installation_credential(
        installation_id=INSTALLATION, token=TOKEN, client_secret=CLIENT_SECRET
    )
    assert new.access_token in market.live_tokens(INSTALLATION)
    assert new.access_token not in repr(new)
    assert market.requests[-1].body == {"client_secret": CLIENT_SECRET}
    already = vercel.revoke_installation_credential(
        installation_id=INSTALLATION,
        token=new.access_token,
        revoke=TOKEN,
        client_secret=CLIENT_SECRET,
    )
    assert already is False
    assert market.live_tokens(INSTALLATION) == [new.access_token]
    with pytest.raises(VercelError) as caught:
        vercel.list_resources(installation_id=INSTALLATION, token=TOKEN)
    assert caught.value.status == 401
    assert caught.value.permanent


def test_rotate_without_a_client_secret_is_refused_before_sending(market):
    with pytest.raises(VercelError) as caught:
        vercel.rotate_installation_credential(
            installation_id=INSTALLATION, token=TOKEN, client_secret=""
        )
    assert "VERCEL_CLIENT_SECRET" in caught.value.message
    assert market.requests == []


def test_errors_never_quote_the_tokens_or_the_client_secret(market):
    market.respond_next(
        400, {"error": {"code": "bad_request", "message": f"bad {TOKEN} and {CLIENT_SECRET}"}}
    )
    with pytest.raises(VercelError) as caught:
        vercel.rotate_installation_credential(
            installation_id=INSTALLATION, token=TOKEN, client_secret=CLIENT_SECRET
        )
    assert TOKEN not in str(caught.value)
    assert CLIENT_SECRET not in str(caught.value)


def test_a_transient_failure_is_not_permanent(market):
    market.respond_next(503)
    with pytest.raises(VercelError) as caught:
        vercel.list_resources(installation_id=INSTALLATION, token=TOKEN)
    assert not caught.value.permanent
