"""The stand-in's secrets endpoints: paths, methods, bearer tokens and bodies, as Vercel
checks them."""

import pytest

from tests.devtools.fake_vercel.api_calls import (
    BODY,
    INSTALLATION,
    PRODUCT,
    RESOURCE,
    SECRETS_PATH,
    TOKEN,
    VALUE,
    call,
    error_of,
)

DEPRECATED_PATH = (
    f"/v1/installations/{INSTALLATION}/products/{PRODUCT}/resources/{RESOURCE}/secrets"
)


def test_it_answers_201_with_an_empty_body_on_both_endpoints(fake, http):
    for path in (SECRETS_PATH, DEPRECATED_PATH):
        response = call(http, fake, path)

        assert response.status_code == 201, response.text
        assert response.content == b""
    assert [request.operation for request in fake.requests] == [
        "update-resource-secrets-by-id",
        "update-resource-secrets",
    ]


def test_it_answers_401_without_a_bearer_token(fake, http):
    for headers in ({}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "}):
        response = call(http, fake, token=None, headers=headers)

        assert response.status_code == 401
        assert error_of(response)["code"] == "unauthorized"
    assert fake.secrets_of(INSTALLATION, RESOURCE) == []


def test_it_answers_403_for_another_installations_token(fake, http):
    fake.add_installation("icfg_other", "vci_other_token_999", {"res_x": "redis"})

    response = call(http, fake, token="vci_other_token_999")

    assert response.status_code == 403
    assert error_of(response) == {"code": "forbidden", "message": "Not authorized"}
    assert fake.requests[0].body == BODY


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/installations/icfg_unknown/resources/{RESOURCE}/secrets",
        f"/v1/installations/{INSTALLATION}/resources/res_unknown/secrets",
        f"/v1/installations/{INSTALLATION}/products/other/resources/{RESOURCE}/secrets",
        f"/v1/installations/{INSTALLATION}/products/{PRODUCT}/resources/res_unknown/secrets",
        "/v2/nothing/here",
        # Create Event is not served: the client does not call it.
        f"/v1/installations/{INSTALLATION}/events",
    ],
)
def test_it_answers_404_for_unknown_installations_resources_products_and_paths(fake, http, path):
    response = call(http, fake, path)

    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_it_answers_405_for_the_wrong_method(fake, http):
    assert call(http, fake, method="POST").status_code == 405


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"secrets": [{"name": "A", "value": VALUE}], "replace": True}, "additional property"),
        ({"secrets": [{"name": "A", "value": VALUE, "target": "x"}]}, "additional property"),
        (
            {"secrets": [{"name": "A", "value": VALUE, "environmentOverrides": {"staging": "x"}}]},
            "additional property `staging`",
        ),
        ({"secrets": [{"name": "A", "value": 42}]}, "`body.secrets[0].value` should be string"),
        ({"secrets": [{"name": "A", "value": VALUE}], "partial": "yes"}, "should be boolean"),
        ({"secrets": [{"name": "A"}]}, "required property `value`"),
        ({"partial": True}, "required property `secrets`"),
        ({"secrets": {"name": "A", "value": VALUE}}, "should be array"),
        ([BODY], "`body` should be object"),
        ({"secrets": [{"name": "9A", "value": VALUE}]}, "not a valid environment variable name"),
        (
            {"secrets": [{"name": "A", "value": VALUE}, {"name": "A", "value": VALUE}]},
            "duplicate",
        ),
    ],
)
def test_it_answers_400_with_vercels_error_body_for_a_body_off_schema(fake, http, body, complaint):
    response = call(http, fake, body=body)

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "bad_request"
    assert complaint in error["message"]
    assert VALUE not in response.text
    assert fake.secrets_of(INSTALLATION, RESOURCE) == []


def test_it_answers_404_once_an_installation_is_removed(fake, http):
    fake.remove_installation(INSTALLATION)

    assert call(http, fake).status_code == 404


@pytest.mark.parametrize(("status", "code"), [(410, "gone"), (404, "not_found")])
def test_it_answers_the_removed_deprecated_endpoint_with_410_or_404(status, code, fake, http):
    fake.gone_deprecated = status
    gone = call(http, fake, DEPRECATED_PATH)
    assert gone.status_code == status
    assert error_of(gone)["code"] == code
    assert call(http, fake, SECRETS_PATH).status_code == 201
    fake.gone_deprecated = None
    assert call(http, fake, DEPRECATED_PATH).status_code == 201


def test_it_knows_only_410_and_404_for_a_removed_endpoint(fake):
    with pytest.raises(ValueError, match="410, 404 or None"):
        fake.gone_deprecated = 500
