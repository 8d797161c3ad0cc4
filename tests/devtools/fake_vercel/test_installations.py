"""What the stand-in holds: secrets per resource, and installations from a config."""

import pytest

from rotation.devtools.fake_vercel import FakeVercel
from tests.devtools.fake_vercel.api_calls import INSTALLATION, RESOURCE, call


def test_it_replaces_all_secrets_unless_partial(fake, http):
    call(http, fake, body={"secrets": [{"name": "A", "value": "1"}, {"name": "B", "value": "1"}]})
    call(http, fake, body={"secrets": [{"name": "B", "value": "2"}], "partial": True})
    assert fake.secrets_of(INSTALLATION, RESOURCE) == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "2"},
    ]

    call(http, fake, body={"secrets": [{"name": "C", "value": "3"}], "partial": False})

    assert fake.secrets_of(INSTALLATION, RESOURCE) == [{"name": "C", "value": "3"}]


def test_it_keys_secrets_by_prefixed_name(fake, http):
    call(http, fake, body={"secrets": [{"name": "URL", "value": "1", "prefix": "PG_"}]})
    call(http, fake, body={"secrets": [{"name": "URL", "value": "2"}], "partial": True})

    assert [s["value"] for s in fake.secrets_of(INSTALLATION, RESOURCE)] == ["1", "2"]


def test_it_learns_installations_from_the_import_format(http):
    data = {
        "installations": [
            {
                "id": "icfg_cfg",
                "name": "Team",
                "access_token": "vci_cfg_token_1",
                "endpoint": "deprecated",
                "resources": [{"id": "res_cfg", "product": "pg", "name": "db", "secrets": []}],
            }
        ]
    }
    with FakeVercel() as fake:
        fake.load_config(data)
        path = "/v1/installations/icfg_cfg/products/pg/resources/res_cfg/secrets"

        response = call(http, fake, path, token="vci_cfg_token_1")

    assert response.status_code == 201


def test_it_refuses_a_config_without_tokens():
    with pytest.raises(ValueError, match=r"installations\[0\]"):
        FakeVercel().load_config({"installations": [{"id": "icfg_x", "resources": []}]})
