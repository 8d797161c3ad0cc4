"""The Vercel client over real HTTP against the local stand-in (no patched requests)."""

import json
import os
import tomllib
from pathlib import Path

import jsonschema
import pytest
from django.conf import settings as django_settings

from rotation import vercel
from tests.vercel.stand_in import (
    INSTALLATION,
    PREVIEW_VALUE,
    PRODUCT,
    RESOURCE,
    TOKEN,
    VALUE,
    push,
    push_error,
)

OPENAPI = Path(vercel.__file__).parent.parent / "vercel_openapi.json"


# -- paths, headers and bodies ------------------------------------------------------------


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
    assert fake.secrets_of(INSTALLATION, RESOURCE) == [{"name": "DATABASE_URL", "value": VALUE}]


def test_it_sends_the_bearer_token_user_agent_and_json_content_type(fake):
    push()

    (request,) = fake.requests
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["User-Agent"].startswith(f"partnerportal/{vercel.VERSION}")
    assert request.headers["Content-Type"] == "application/json"


def test_it_sends_what_the_session_carries_but_keeps_its_own_bearer(fake):
    session = vercel.default_session()
    session.cookies.set("__vcdn", "kept", domain="127.0.0.1", path="/")
    try:
        push(session=session)
    finally:
        session.cookies.clear()

    (request,) = fake.requests
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Cookie"] == "__vcdn=kept"


def test_it_names_the_projects_version_in_the_user_agent():
    pyproject = tomllib.loads((Path(django_settings.BASE_DIR) / "pyproject.toml").read_text())

    assert f"partnerportal/{pyproject['project']['version']}" == vercel.USER_AGENT


def test_it_treats_none_prefix_and_overrides_as_absent(fake):
    push(secrets=[{"name": "A", "value": "a-value", "prefix": None, "environmentOverrides": None}])

    assert fake.requests[0].body == {"secrets": [{"name": "A", "value": "a-value"}]}


def test_it_quotes_ids_in_the_path(fake):
    fake.add_installation("icfg/odd id", TOKEN, {"res ?#": PRODUCT})

    push(installation_id="icfg/odd id", resource_id="res ?#")

    assert (
        fake.requests[0].path == "/v1/installations/icfg%2Fodd%20id/resources/res%20%3F%23/secrets"
    )
    assert fake.secrets_of("icfg/odd id", "res ?#")


def test_it_omits_empty_optional_fields_and_partial_unless_asked(fake):
    push(secrets=[{"name": "A", "value": "a-value", "prefix": "", "environmentOverrides": {}}])

    assert fake.requests[0].body == {"secrets": [{"name": "A", "value": "a-value"}]}


def test_it_sends_prefix_overrides_and_partial_when_given(fake):
    secret = {
        "name": "URL",
        "value": VALUE,
        "prefix": "PG_",
        "environmentOverrides": {"preview": PREVIEW_VALUE},
    }

    push(secrets=[secret], partial=True)

    assert fake.requests[0].body == {"secrets": [secret], "partial": True}
    assert fake.secrets_of(INSTALLATION, RESOURCE) == [secret]


def test_it_replaces_all_secrets_without_partial(fake):
    fake.set_secrets(INSTALLATION, RESOURCE, [{"name": "OLD", "value": "old"}])

    push(secrets=[{"name": "NEW", "value": "new"}])

    assert fake.secrets_of(INSTALLATION, RESOURCE) == [{"name": "NEW", "value": "new"}]


def test_it_merges_secrets_with_partial(fake):
    fake.set_secrets(
        INSTALLATION, RESOURCE, [{"name": "KEEP", "value": "k"}, {"name": "NEW", "value": "1"}]
    )

    push(secrets=[{"name": "NEW", "value": "2"}], partial=True)

    assert fake.secrets_of(INSTALLATION, RESOURCE) == [
        {"name": "KEEP", "value": "k"},
        {"name": "NEW", "value": "2"},
    ]


def test_it_reuses_one_session_and_connection(fake):
    push()
    push()

    assert vercel.default_session() is vercel.default_session()
    first, second = fake.requests
    assert first.client == second.client


def test_it_gives_a_forked_process_its_own_session():
    parent = vercel.default_session()
    pid = os.fork()
    if pid == 0:  # the child reports through its exit status only
        os._exit(0 if vercel.default_session() is not parent else 1)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert vercel.default_session() is parent


def test_it_reads_the_base_url_at_call_time(fake, settings):
    settings.VERCEL_API_URL = fake.url + "/"

    push()

    assert fake.requests[0].path.startswith("/v1/")


# -- validation before sending -------------------------------------------------------------


@pytest.mark.parametrize(
    "secrets",
    [
        [],
        "DATABASE_URL",
        ["DATABASE_URL"],
        [{"name": "1DATABASE", "value": VALUE}],
        [{"name": "BAD-NAME", "value": VALUE}],
        [{"name": "", "value": VALUE}],
        [{"value": VALUE}],
        [{"name": "A", "value": ""}],
        [{"name": "A", "value": 5}],
        [{"name": "A"}],
        [{"name": "A", "value": VALUE}, {"name": "A", "value": VALUE}],
        [{"name": "PG_A", "value": VALUE}, {"name": "A", "value": VALUE, "prefix": "PG_"}],
        [{"name": "A", "value": VALUE, "prefix": "9X"}],
        [{"name": "A", "value": VALUE, "environmentOverrides": {"staging": VALUE}}],
        [{"name": "A", "value": VALUE, "environmentOverrides": {"preview": ""}}],
        [{"name": "A", "value": VALUE, "environmentOverrides": ["preview"]}],
        [{"name": "A", "value": VALUE, "target": ["production"]}],
    ],
)
def test_it_refuses_a_bad_secret_set_before_sending(fake, secrets):
    error = push_error(secrets=secrets)

    assert (error.status, error.code, error.permanent) == (None, "invalid_request", True)
    assert VALUE not in str(error)
    assert fake.requests == []


def test_it_refuses_a_token_a_header_cannot_carry_without_echoing_it(fake):
    error = push_error(token=TOKEN + "\r\nX-Evil: 1")

    assert error.code == "invalid_request"
    assert TOKEN not in str(error) and TOKEN not in repr(error)
    assert fake.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://api.vercel.com",
        "http://10.0.0.5:8765",
        "ftp://127.0.0.1",
        "api.vercel.com",
        "http://127.attacker.example",
        "http://127.0.0.1.attacker.example",
        "http://localhost.attacker.example",
        "http://[::ffff:10.0.0.5]",
    ],
)
def test_it_refuses_to_send_the_token_in_clear_text_off_this_machine(fake, settings, url):
    settings.VERCEL_API_URL = url

    error = push_error()

    assert (error.code, error.permanent) == ("invalid_request", True)
    assert fake.requests == []


def test_it_refuses_plain_http_to_a_lookalike_loopback_host(fake, settings):
    # `127.attacker.example` starts like a loopback address but is a name anyone can point.
    settings.VERCEL_API_URL = "http://127.attacker.example:8765"

    error = push_error()

    assert (error.code, error.permanent) == ("invalid_request", True)
    assert "https" in str(error)
    assert fake.requests == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_it_allows_plain_http_to_a_literal_loopback_address_or_localhost(fake, settings, host):
    settings.VERCEL_API_URL = settings.VERCEL_API_URL.replace("127.0.0.1", host)
    assert settings.VERCEL_API_URL.startswith(f"http://{host}:")

    push()

    assert [request.status for request in fake.requests] == [201]


def test_it_refuses_an_unknown_endpoint_or_missing_product(fake):
    assert push_error(endpoint="legacy").code == "invalid_request"
    assert push_error(endpoint="deprecated").code == "invalid_request"
    assert fake.requests == []


# -- the contract: every body the client sends fits Vercel's published schema ---------------


def test_it_sends_only_bodies_the_openapi_subset_accepts(fake):
    document = json.loads(OPENAPI.read_text())
    schemas = {
        (method.upper(), template): operation["requestBody"]["content"]["application/json"][
            "schema"
        ]
        for template, operations in document["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation
    }
    full = {
        "name": "URL",
        "value": VALUE,
        "prefix": "PG_",
        "environmentOverrides": {
            "production": VALUE,
            "preview": PREVIEW_VALUE,
            "development": "dev-value",
        },
    }
    for endpoint in ("current", "deprecated"):
        for partial in (False, True):
            push(endpoint=endpoint, product=PRODUCT, partial=partial)
            push(endpoint=endpoint, product=PRODUCT, partial=partial, secrets=[full])
            push(
                endpoint=endpoint,
                product=PRODUCT,
                secrets=[{"name": f"S{i}", "value": f"v{i}", "prefix": ""} for i in range(30)],
            )

    sent = fake.requests
    assert len(sent) == 12
    for request in sent:
        assert request.status == 201
        matching = [
            schema
            for (method, path_template), schema in schemas.items()
            if method == request.method and _path_matches(path_template, request.path)
        ]
        assert len(matching) == 1, request.path
        jsonschema.Draft202012Validator(matching[0]).validate(request.body)
        # Stricter than the published schema: override keys are limited to the three.
        for secret in request.body.get("secrets", []):
            assert set(secret.get("environmentOverrides", {})) <= {
                "production",
                "preview",
                "development",
            }


def _path_matches(template: str, path: str) -> bool:
    template_parts = template.strip("/").split("/")
    path_parts = path.strip("/").split("/")
    return len(template_parts) == len(path_parts) and all(
        t.startswith("{") or t == p for t, p in zip(template_parts, path_parts, strict=True)
    )
