"""The demo credential provider: random secret sets shaped like the resource's template."""

from __future__ import annotations

import pytest

from rotation.devtools.demo_provider import RandomCredentialProvider
from rotation.models import Installation, Resource
from rotation.vercel import validate_secrets


@pytest.fixture
def resource(db):
    installation = Installation.objects.create(vercel_id="icfg_cred")
    return Resource.objects.create(
        installation=installation,
        vercel_id="res_cred",
        product="postgres",
        name="db",
        secret_template=[
            {"name": "DATABASE_URL", "prefix": "", "environments": ["production", "preview"]},
            {"name": "PGPASSWORD", "prefix": "", "environments": ["production"]},
            {"name": "PGUSER", "prefix": "", "environments": ["production", "preview"]},
            {"name": "API_KEY", "prefix": "ACME_", "environments": []},
        ],
    )


def by_name(secrets: list[dict]) -> dict[str, dict]:
    return {secret["name"]: secret for secret in secrets}


def test_it_makes_a_secret_set_vercel_accepts(resource):
    secrets = RandomCredentialProvider().create(resource=resource)
    validate_secrets(secrets)
    assert [secret["name"] for secret in secrets] == [
        "DATABASE_URL",
        "PGPASSWORD",
        "PGUSER",
        "API_KEY",
    ]
    assert by_name(secrets)["API_KEY"]["prefix"] == "ACME_"


def test_it_gives_each_environment_its_own_credentials(resource):
    secrets = by_name(RandomCredentialProvider().create(resource=resource))
    url = secrets["DATABASE_URL"]
    # Base value: the least privileged listed environment; production as an override.
    assert set(url["environmentOverrides"]) == {"production"}
    assert url["value"] != url["environmentOverrides"]["production"]
    assert "@preview." in url["value"]
    assert "@production." in url["environmentOverrides"]["production"]
    # Only production listed: the value is production's, no overrides.
    password = secrets["PGPASSWORD"]
    assert "environmentOverrides" not in password
    # The composed URL holds the same user and password as the separate secrets.
    production_url = url["environmentOverrides"]["production"]
    assert f":{password['value']}@" in production_url
    assert production_url.startswith(
        f"postgres://{secrets['PGUSER']['environmentOverrides']['production']}:"
    )
    # No environments listed means all three, each with its own value.
    api_key = secrets["API_KEY"]
    assert set(api_key["environmentOverrides"]) == {"preview", "production"}
    assert len({api_key["value"], *api_key["environmentOverrides"].values()}) == 3


def test_it_makes_strong_values_that_never_repeat(resource):
    provider = RandomCredentialProvider()
    first = provider.create(resource=resource)
    second = provider.create(resource=resource)
    assert len(by_name(first)["PGPASSWORD"]["value"]) >= 40  # 32 random bytes, base64
    firsts = {secret["value"] for secret in first}
    assert not firsts & {secret["value"] for secret in second}


def test_it_verifies_a_complete_set(resource):
    provider = RandomCredentialProvider()
    secrets = provider.create(resource=resource)
    assert provider.verify(resource=resource, secrets=secrets) is True
    assert provider.verify(resource=resource, secrets=secrets[1:]) is False
    secrets[0]["value"] = ""
    assert provider.verify(resource=resource, secrets=secrets) is False


def test_it_defaults_an_empty_template_to_a_database_url(resource):
    resource.secret_template = []
    secrets = RandomCredentialProvider().create(resource=resource)
    assert [secret["name"] for secret in secrets] == ["DATABASE_URL"]
    assert secrets[0]["value"].startswith("postgres://")
