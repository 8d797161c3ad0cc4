"""The Vercel client over real HTTP against the local stand-in (no patched requests)."""

import pytest

from rotation import vercel
from rotation.vercel import VercelError

INSTALLATION = "icfg_client1"
TOKEN = "vci_client_token_abcdef123456"
RESOURCE = "res_client1"
PRODUCT = "postgres"
VALUE = "postgres://app:s3cr3t-value-0001@db.example.com/app"


@pytest.fixture
def fake(fake_vercel):
    fake_vercel.add_installation(INSTALLATION, TOKEN, {RESOURCE: PRODUCT, "res_other": "redis"})
    return fake_vercel


def push(**overrides):
    arguments = {
        "installation_id": INSTALLATION,
        "resource_id": RESOURCE,
        "token": TOKEN,
        "secrets": [{"name": "DATABASE_URL", "value": VALUE}],
    }
    arguments.update(overrides)
    vercel.update_resource_secrets(**arguments)


def test_it_puts_secrets_on_the_current_path(fake):
    push()

    (request,) = fake.requests
    assert request.method == "PUT"
    assert request.path == f"/v1/installations/{INSTALLATION}/resources/{RESOURCE}/secrets"
    assert request.body == {"secrets": [{"name": "DATABASE_URL", "value": VALUE}]}
    assert request.status == 201
    assert fake.secrets_of(INSTALLATION, RESOURCE) == [{"name": "DATABASE_URL", "value": VALUE}]


def test_it_puts_secrets_on_the_deprecated_path_with_the_product(fake):
    push(endpoint="deprecated", product=PRODUCT)

    (request,) = fake.requests
    assert request.path == (
        f"/v1/installations/{INSTALLATION}/products/{PRODUCT}/resources/{RESOURCE}/secrets"
    )
    assert request.status == 201


def test_it_maps_an_unknown_resource_to_a_permanent_error(fake):
    with pytest.raises(VercelError) as caught:
        push(resource_id="res_missing")

    assert caught.value.status == 404
    assert caught.value.code == "not_found"
    assert caught.value.permanent is True
