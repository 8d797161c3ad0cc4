"""The local Vercel stand-in, spoken to with plain HTTP as Vercel's API would be."""

import json
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import pytest
import requests
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command

from rotation import vercel
from rotation.devtools.fake_vercel import FakeVercel, mask, request_schemas, schema_problems
from rotation.devtools.fake_vercel.wire import Answer, Server, send
from rotation.models import Resource
from tests.conftest import make_installation

INSTALLATION = "icfg_fake1"
TOKEN = "vci_fake_token_0123456789"
RESOURCE = "res_fake1"
PRODUCT = "neon"
VALUE = "postgres://user:very-secret-password-77@db/app"
SECRETS_PATH = f"/v1/installations/{INSTALLATION}/resources/{RESOURCE}/secrets"
DEPRECATED_PATH = (
    f"/v1/installations/{INSTALLATION}/products/{PRODUCT}/resources/{RESOURCE}/secrets"
)
BODY = {"secrets": [{"name": "DATABASE_URL", "value": VALUE}]}


@pytest.fixture
def fake(fake_vercel):
    fake_vercel.add_installation(INSTALLATION, TOKEN, {RESOURCE: PRODUCT})
    return fake_vercel


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


def call(http, fake, path=SECRETS_PATH, body=BODY, *, method="PUT", token=TOKEN, **kwargs):
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None and "data" not in kwargs:
        kwargs["json"] = body
    return http.request(method, fake.url + path, headers=headers, timeout=(1, 2), **kwargs)


def error_of(response) -> dict:
    return response.json()["error"]


# -- answers --------------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    "body",
    [
        {"secrets": [{"name": "A", "value": VALUE}], "replace": True},
        {"secrets": [{"name": "A", "value": VALUE, "target": "x"}]},
        {"secrets": [{"name": "A", "value": 42}]},
        {"secrets": [{"name": "A", "value": VALUE}], "partial": "yes"},
        {"secrets": [{"name": "A"}]},
        {"partial": True},
        {"secrets": {"name": "A", "value": VALUE}},
        [BODY],
    ],
)
def test_its_schema_check_refuses_what_jsonschema_refuses(body):
    schema = request_schemas()["update-resource-secrets-by-id"]

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, schema)
    assert schema_problems(schema, body)


def test_it_answers_400_for_a_body_that_is_not_json(fake, http):
    response = call(
        http, fake, body=None, data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400

    response = call(http, fake, body=None, data=b"secrets=x")
    assert response.status_code == 400


def test_it_reads_a_chunked_body(fake, http):
    chunks = (part.encode() for part in json.dumps(BODY).partition("secrets"))

    response = call(
        http, fake, body=None, data=chunks, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 201, response.text
    assert fake.requests[0].headers["Transfer-Encoding"] == "chunked"
    assert fake.secrets_of(INSTALLATION, RESOURCE) == BODY["secrets"]


def test_it_answers_413_for_a_huge_body(fake, http):
    huge = {"secrets": [{"name": "A", "value": "x" * (2 << 20)}]}

    assert call(http, fake, body=huge).status_code == 413


def test_it_answers_404_once_an_installation_is_removed(fake, http):
    fake.remove_installation(INSTALLATION)

    assert call(http, fake).status_code == 404


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


# -- fault injection ------------------------------------------------------------------------


def test_it_rate_limits_with_retry_after_and_the_limit_body(fake, http):
    fake.rate = 0.01

    first = call(http, fake)
    second = call(http, fake)

    assert first.status_code == 201
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) >= 1
    error = error_of(second)
    assert error["code"] == "rate_limited"
    assert set(error["limit"]) == {"total", "remaining", "reset", "resetMs"}
    assert error["limit"]["remaining"] == 0
    assert error["limit"]["resetMs"] // 1000 <= error["limit"]["reset"]
    assert fake.stats["rate_limited"] == 1


def test_it_lifts_the_rate_limit_when_the_knob_is_cleared(fake, http):
    fake.rate = 0.01
    call(http, fake)
    assert call(http, fake).status_code == 429

    fake.rate = None

    assert call(http, fake).status_code == 201


def test_it_fails_with_5xx_error_bodies_at_the_fail_rate(fake, http):
    fake.fail_rate = 1.0

    response = call(http, fake)

    assert 500 <= response.status_code < 600
    assert set(error_of(response)) == {"code", "message"}
    fake.fail_rate = 0.0
    assert call(http, fake).status_code == 201


def test_it_draws_the_same_faults_for_the_same_seed(http):
    def statuses(seed):
        with FakeVercel(seed=seed, fail_rate=0.5) as fake:
            fake.add_installation(INSTALLATION, TOKEN, {RESOURCE: PRODUCT})
            return [call(http, fake).status_code for _ in range(20)]

    first = statuses(7)

    assert first == statuses(7)
    assert {201} < set(first)


def test_it_drops_the_connection_at_the_drop_rate(fake, http):
    fake.drop_rate = 1.0

    with pytest.raises(requests.ConnectionError):
        call(http, fake)

    assert fake.stats["dropped"] == 1
    assert fake.secrets_of(INSTALLATION, RESOURCE) == []


def test_it_hangs_longer_than_the_client_waits(fake, http):
    fake.hang_rate = 1.0
    fake.hang_seconds = 10

    with pytest.raises(requests.ReadTimeout):
        http.put(
            fake.url + SECRETS_PATH,
            json=BODY,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=(1, 0.3),
        )

    assert fake.stats["hung"] == 1


def test_it_answers_after_the_configured_latency(fake, http):
    fake.latency_ms = 50
    started = time.monotonic()

    response = call(http, fake)

    assert time.monotonic() - started >= 0.05
    assert response.status_code == 201


def test_it_plays_scripted_answers_first(fake, http):
    fake.respond_next(409, {"error": {"code": "conflict", "message": "busy"}}, times=2)

    assert [call(http, fake).status_code for _ in range(3)] == [409, 409, 201]


def test_it_counts_requests_per_status_and_resets(fake, http):
    call(http, fake)
    call(http, fake, token="vci_wrong_token_x")
    call(http, fake, token=None)

    assert fake.stats == {
        "total": 3,
        "by_status": {201: 1, 403: 1, 401: 1},
        "dropped": 0,
        "hung": 0,
        "rate_limited": 0,
    }
    fake.reset_stats()
    assert fake.stats["total"] == 0
    assert fake.requests == []


def test_it_serves_many_clients_at_once(fake):
    errors = []

    def worker(index):
        with requests.Session() as session:
            for step in range(25):
                body = {"secrets": [{"name": f"W{index}_{step}", "value": "v"}], "partial": True}
                response = call(session, fake, body=body)
                if response.status_code != 201:
                    errors.append(response.status_code)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert fake.stats["by_status"] == {201: 200}
    assert len(fake.secrets_of(INSTALLATION, RESOURCE)) == 200


# -- the page at / ----------------------------------------------------------------------------


def test_it_shows_secrets_masked_but_for_the_last_4_characters(fake, http):
    body = {
        "secrets": [
            {"name": "DATABASE_URL", "value": VALUE, "environmentOverrides": {"preview": VALUE}},
            {"name": "SHORT", "value": "abc123"},
        ]
    }
    call(http, fake, body=body)

    page = http.get(fake.url + "/", timeout=2)

    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "DATABASE_URL" in page.text
    assert "<td>••••••••/app</td>" in page.text
    assert "@db/app" not in page.text
    assert VALUE not in page.text
    assert "abc123" not in page.text
    assert "preview: ••••••••/app" in page.text


def test_it_lists_known_resources_before_any_push_and_caps_the_page(fake, http):
    fake.add_installation("icfg_z<b>", TOKEN, {f"res_{i:03}": "pg" for i in range(400)})

    page = http.get(fake.url + "/", timeout=2).text

    assert f"<td>{RESOURCE}</td><td>{PRODUCT}</td><td></td><td>(no secrets pushed yet)" in page
    assert "icfg_z&lt;b&gt;" in page and "icfg_z<b>" not in page
    assert "101 more resources not shown" in page


def test_it_lists_resources_with_pushed_secrets_first(fake, http):
    fake.add_installation("icfg_a", TOKEN, {f"res_{i:03}": "pg" for i in range(400)})
    fake.add_installation("icfg_zz", TOKEN, {"res_pushed": "pg"})
    fake.set_secrets("icfg_zz", "res_pushed", [{"name": "PGPASSWORD", "value": VALUE}])

    page = http.get(fake.url + "/", timeout=2).text

    assert "<td>icfg_zz</td><td>res_pushed</td>" in page
    assert page.index("res_pushed") < page.index("res_000")


def test_it_masks_short_values_whole():
    assert mask("0123456789ab") == "••••••••89ab"
    assert mask("short") == "••••••••"
    assert mask("") == "••••••••"


# -- learning installations -------------------------------------------------------------------


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


def test_it_learns_installations_and_tokens_from_the_database(db, http, fake_vercel):
    installation = make_installation("icfg_db1", token="vci_db_token_1", resources=2)

    assert fake_vercel.load_from_database() == 1

    path = "/v1/installations/icfg_db1/products/postgres/resources/icfg_db1_res1/secrets"
    assert call(http, fake_vercel, path, token="vci_db_token_1").status_code == 201
    assert installation.resources.count() == 2


def test_it_forgets_removed_installations_and_resources_from_the_database(db, http, fake_vercel):
    gone = make_installation("icfg_gone", token="vci_gone_token")
    kept = make_installation("icfg_kept", token="vci_kept_token", resources=2)
    fake_vercel.load_from_database()
    gone.status = "removed"
    gone.save()
    kept.resources.filter(vercel_id="icfg_kept_res1").update(status="removed")

    assert fake_vercel.load_from_database() == 1

    statuses = [
        call(http, fake_vercel, path, token=token).status_code
        for path, token in (
            ("/v1/installations/icfg_gone/resources/icfg_gone_res0/secrets", "vci_gone_token"),
            ("/v1/installations/icfg_kept/resources/icfg_kept_res1/secrets", "vci_kept_token"),
            ("/v1/installations/icfg_kept/resources/icfg_kept_res0/secrets", "vci_kept_token"),
        )
    ]
    assert statuses == [404, 404, 201]


def test_it_looks_in_the_database_again_for_an_unknown_installation(transactional_db, http):
    with FakeVercel(reload_from_database=True) as fake:
        fake.load_from_database()
        make_installation("icfg_late", token="vci_late_token_1")
        path = "/v1/installations/icfg_late/resources/icfg_late_res0/secrets"

        response = call(http, fake, path, token="vci_late_token_1")

    assert response.status_code == 201, response.text


def test_it_looks_in_the_database_again_after_a_token_change(transactional_db, http):
    installation = make_installation("icfg_turn", token="vci_first_token")
    with FakeVercel(reload_from_database=True) as fake:
        fake.load_from_database()
        installation.set_access_token("vci_second_token")
        installation.save()
        path = "/v1/installations/icfg_turn/resources/icfg_turn_res0/secrets"

        response = call(http, fake, path, token="vci_second_token")

    assert response.status_code == 201, response.text


def test_it_looks_in_the_database_again_for_an_unknown_resource(transactional_db, http):
    installation = make_installation("icfg_grow", token="vci_grow_token_1")
    with FakeVercel(reload_from_database=True) as fake:
        fake.load_from_database()
        Resource.objects.create(
            installation=installation, vercel_id="res_added_later", product="postgres", name="db"
        )
        path = "/v1/installations/icfg_grow/resources/res_added_later/secrets"

        response = call(http, fake, path, token="vci_grow_token_1")

        assert response.status_code == 201, response.text
        assert fake.secrets_of("icfg_grow", "res_added_later") == BODY["secrets"]


# -- the schema interpreter and the command ----------------------------------------------------


def test_it_checks_schemas_strictly_without_quoting_values():
    schema = {
        "type": "object",
        "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}}},
    }

    assert schema_problems(schema, {"a": {"b": "x"}}) == []
    assert schema_problems(schema, {"a": {"c": "secret-ish"}}) == [
        "`body.a` should NOT have additional property `c`"
    ]
    assert "secret-ish" not in " ".join(schema_problems(schema, {"a": {"b": ["secret-ish"]}}))


def test_it_runs_as_a_management_command_for_both_endpoints(tmp_path, settings):
    config = tmp_path / "installations.json"
    config.write_text(
        json.dumps(
            {
                "installations": [
                    {
                        "id": "icfg_cmd",
                        "access_token": "vci_cmd_token_1",
                        "resources": [{"id": "res_cmd", "product": "pg", "name": "db"}],
                    }
                ]
            }
        )
    )
    manage = Path(django_settings.BASE_DIR) / "manage.py"
    process = subprocess.Popen(
        [sys.executable, str(manage), "fake_vercel", "--port", "0", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Bounded: a command that never prints must fail the test, not hang it.
        ready, _, _ = select.select([process.stdout], [], [], 30)
        assert ready, "the command printed nothing within 30 s"
        line = process.stdout.readline()
        assert line.startswith("Fake Vercel at http://127.0.0.1:"), line
        settings.VERCEL_API_URL = line.split()[3].rstrip(",")
        secrets = [{"name": "DATABASE_URL", "value": VALUE}]
        for endpoint in ("current", "deprecated"):
            vercel.update_resource_secrets(
                installation_id="icfg_cmd",
                resource_id="res_cmd",
                token="vci_cmd_token_1",
                secrets=secrets,
                endpoint=endpoint,
                product="pg",
            )
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert stderr.count("-> 201") == 2
    assert VALUE not in stderr
    assert "vci_cmd_token_1" not in stderr


def test_it_cuts_kept_alive_connections_when_stopped(settings):
    def push():
        vercel.update_resource_secrets(
            installation_id=INSTALLATION, resource_id=RESOURCE, token=TOKEN, secrets=BODY["secrets"]
        )

    first = FakeVercel().start()
    first.add_installation(INSTALLATION, TOKEN, {RESOURCE: PRODUCT})
    settings.VERCEL_API_URL = first.url
    push()
    port = int(first.url.rsplit(":", 1)[1])
    first.stop()

    with FakeVercel(port=port) as second:
        second.add_installation(INSTALLATION, TOKEN, {RESOURCE: PRODUCT})
        push()

    assert len(first.requests) == 1
    assert len(second.requests) == 1


@pytest.mark.parametrize(
    ("content", "complaint"),
    [(None, "no such file"), ("{oops", "not valid JSON"), ('{"installations": [{}]}', "needs id")],
)
def test_its_command_refuses_a_bad_config(tmp_path, content, complaint):
    config = tmp_path / "installations.json"
    if content is not None:
        config.write_text(content)

    with pytest.raises(CommandError, match=complaint):
        call_command("fake_vercel", "--port", "0", "--config", str(config))


def test_its_wire_server_hands_each_request_to_the_callable_it_is_given(http):
    seen = []

    def respond(handler, method):
        seen.append((method, handler.path))
        send(handler, Answer(204))

    server = Server(("127.0.0.1", 0), respond)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        response = http.patch(server.url + "/anything?x=1", timeout=(1, 2))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    assert response.status_code == 204
    assert seen == [("PATCH", "/anything?x=1")]
