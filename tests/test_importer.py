import copy
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from rotation.importer import ImportRefused, installations_import
from rotation.models import Installation, Resource
from tests.conftest import raw_database_bytes

TOKEN = "vci_import_token_e7c1a9"

DOCUMENT = {
    "installations": [
        {
            "id": "icfg_imp1",
            "name": "Import One",
            "team_id": "team_1",
            "contact_email": "ops@example.com",
            "access_token": TOKEN,
            "endpoint": "deprecated",
            "resources": [
                {
                    "id": "res_1",
                    "product": "postgres",
                    "name": "main-db",
                    "secrets": [
                        {
                            "name": "DATABASE_URL",
                            "prefix": "PG_",
                            "environments": ["production", "preview", "development"],
                        },
                        {"name": "PGPASSWORD"},
                    ],
                },
                {
                    "id": "res_2",
                    "product": "postgres",
                    "name": "replica",
                    "secrets": [{"name": "DATABASE_URL", "environments": ["production"]}],
                },
            ],
        },
        {"id": "icfg_imp2", "access_token": "vci_second_token", "resources": []},
    ]
}


def document():
    return copy.deepcopy(DOCUMENT)


def snapshot():
    return (
        list(Installation.objects.values_list("vercel_id", "name", "endpoint").order_by("pk")),
        list(Resource.objects.values_list("vercel_id", "name", "secret_template").order_by("pk")),
    )


def test_it_imports_installations_and_resources(db):
    result = installations_import(data=document())
    assert (result.installations_created, result.resources_created) == (2, 2)
    installation = Installation.objects.get(vercel_id="icfg_imp1")
    assert installation.endpoint == "deprecated"
    assert installation.access_token() == TOKEN
    resource = Resource.objects.get(vercel_id="res_1")
    assert resource.secret_template[0] == {
        "name": "DATABASE_URL",
        "prefix": "PG_",
        "environments": ["production", "preview", "development"],
    }
    # Omitted environments mean all three.
    assert resource.secret_template[1]["environments"] == ["production", "preview", "development"]
    assert Installation.objects.get(vercel_id="icfg_imp2").endpoint == "current"


def test_re_import_updates_and_never_duplicates(db):
    installations_import(data=document())
    changed = document()
    changed["installations"][0]["name"] = "Renamed"
    changed["installations"][0]["resources"][0]["name"] = "renamed-db"
    changed["installations"][0]["access_token"] = "vci_new_token"
    result = installations_import(data=changed)
    assert (result.installations_created, result.installations_updated) == (0, 2)
    assert (result.resources_created, result.resources_updated) == (0, 2)
    assert Installation.objects.count() == 2
    assert Resource.objects.count() == 2
    assert Installation.objects.get(vercel_id="icfg_imp1").name == "Renamed"
    assert Installation.objects.get(vercel_id="icfg_imp1").access_token() == "vci_new_token"
    assert Resource.objects.get(vercel_id="res_1").name == "renamed-db"


def test_re_import_of_the_same_file_changes_nothing(db):
    installations_import(data=document())
    before = snapshot()
    token_before = Installation.objects.get(vercel_id="icfg_imp1").access_token_encrypted
    installations_import(data=document())
    assert snapshot() == before
    # An unchanged token is not re-encrypted.
    after = Installation.objects.get(vercel_id="icfg_imp1").access_token_encrypted
    assert bytes(after) == bytes(token_before)


def _set(path, value):
    def mutate(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path):
    def mutate(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


SECRET0 = ["installations", 0, "resources", 0, "secrets", 0]
BAD_INPUTS = {
    "env name starting with digit": (
        _set([*SECRET0, "name"], "1DATABASE_URL"),
        "installations[0] (icfg_imp1).resources[0] (res_1).secrets[0].name: '1DATABASE_URL'"
        " is not a valid environment variable name",
    ),
    "env name with dash": (
        _set([*SECRET0, "name"], "DATABASE-URL"),
        ".secrets[0].name: 'DATABASE-URL' is not a valid",
    ),
    "duplicate names": (
        _set(["installations", 0, "resources", 0, "secrets", 1, "name"], "DATABASE_URL"),
        None,  # different prefix: allowed; checked separately below
    ),
    "bad environment": (
        _set([*SECRET0, "environments"], ["production", "staging"]),
        ".secrets[0].environments: 'staging' is not one of production, preview, development",
    ),
    "unknown installation key": (
        _set(["installations", 0, "colour"], "blue"),
        "installations[0] (icfg_imp1): unknown field 'colour'",
    ),
    "unknown secret key": (
        _set([*SECRET0, "value"], "literal"),
        ".secrets[0]: unknown field 'value'",
    ),
    "missing resource product": (
        _delete(["installations", 0, "resources", 1, "product"]),
        "installations[0] (icfg_imp1).resources[1] (res_2): missing field 'product'",
    ),
    "missing token": (
        _delete(["installations", 1, "access_token"]),
        "installations[1] (icfg_imp2): missing field 'access_token'",
    ),
    "empty token": (
        _set(["installations", 1, "access_token"], "  "),
        "installations[1] (icfg_imp2).access_token: must not be empty",
    ),
    "bad endpoint": (
        _set(["installations", 0, "endpoint"], "legacy"),
        "installations[0] (icfg_imp1).endpoint: must be 'current' or 'deprecated'",
    ),
    "bad email": (
        _set(["installations", 0, "contact_email"], "not-an-email"),
        "installations[0] (icfg_imp1).contact_email: not a valid email address",
    ),
    "secrets not a list": (
        _set(["installations", 0, "resources", 0, "secrets"], "DATABASE_URL"),
        ".resources[0] (res_1).secrets: must be a non-empty list",
    ),
    "duplicate resource id": (
        _set(["installations", 0, "resources", 1, "id"], "res_1"),
        ".resources[1] (res_1).id: duplicate resource id 'res_1'",
    ),
    # Hostile files (issue 10, finding 8).
    "endpoint is a list": (
        _set(["installations", 0, "endpoint"], ["x"]),
        "installations[0] (icfg_imp1).endpoint: must be 'current' or 'deprecated'",
    ),
    "name is an object": (
        _set(["installations", 0, "name"], {"a": 1}),
        "installations[0] (icfg_imp1).name: must be a string, not an object",
    ),
    "environment is a list": (
        _set(["installations", 0, "resources", 0, "secrets", 0, "environments"], [["x"]]),
        ".secrets[0].environments: ['x'] is not one of production, preview, development",
    ),
    "5 MB id": (
        _set(["installations", 0, "id"], "i" * 5_000_000),
        ".id: longer than 64 characters",
    ),
    "5 MB resource id": (
        _set(["installations", 0, "resources", 0, "id"], "r" * 5_000_000),
        ".resources[0] ('rrrrrrrr",
    ),
    "id with a trailing space": (
        _set(["installations", 0, "id"], "icfg_imp1 "),
        "installations[0] ('icfg_imp1 ').id: 'icfg_imp1 ' is not a Vercel id",
    ),
    "id with a right-to-left override": (
        _set(["installations", 0, "resources", 0, "id"], "res_\u202e1"),
        ".resources[0] ('res_\\u202e1').id: 'res_\\u202e1' is not a Vercel id",
    ),
    "fullwidth id": (
        _set(["installations", 0, "team_id"], "team\uff3f1"),
        ".team_id: 'team\uff3f1' is not a Vercel id",
    ),
    "token with a newline": (
        _set(["installations", 0, "access_token"], "vci_a\nb"),
        ".access_token: must be printable ASCII without spaces or line breaks",
    ),
}


@pytest.mark.parametrize(
    "kind", [kind for kind, (_, message) in BAD_INPUTS.items() if message is not None]
)
def test_it_refuses_bad_input_and_leaves_the_database_unchanged(db, kind):
    installations_import(data={"installations": [{"id": "icfg_pre", "access_token": "vci_x"}]})
    before = snapshot()
    mutate, message = BAD_INPUTS[kind]
    doc = document()
    mutate(doc)
    with pytest.raises(ImportRefused) as refused:
        installations_import(data=doc)
    assert any(message in problem for problem in refused.value.problems), refused.value.problems
    assert snapshot() == before


def test_it_refuses_duplicate_secret_names_within_a_resource(db):
    doc = document()
    doc["installations"][0]["resources"][0]["secrets"].append({"name": "PGPASSWORD"})
    with pytest.raises(ImportRefused) as refused:
        installations_import(data=doc)
    assert refused.value.problems == [
        "installations[0] (icfg_imp1).resources[0] (res_1).secrets[2].name: "
        "duplicate name 'PGPASSWORD'"
    ]
    assert not Installation.objects.exists()


def test_a_late_error_imports_nothing_from_earlier_entries(db):
    doc = document()
    doc["installations"][1]["endpoint"] = "nope"
    with pytest.raises(ImportRefused):
        installations_import(data=doc)
    assert not Installation.objects.exists()
    assert not Resource.objects.exists()


def test_the_command_reports_counts(db, tmp_path, capsys):
    path = tmp_path / "installations.json"
    path.write_text(json.dumps(document()))
    call_command("import_installations", str(path))
    out = capsys.readouterr().out
    assert "installations 2 created, 0 updated; resources 2 created, 0 updated" in out
    assert TOKEN not in out


def test_the_command_fails_with_every_problem_and_no_token(db, tmp_path, capsys):
    doc = document()
    doc["installations"][0]["endpoint"] = "nope"
    doc["installations"][0]["resources"][0]["secrets"][0]["name"] = "9X"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(CommandError, match="refused, nothing imported"):
        call_command("import_installations", str(path))
    err = capsys.readouterr().err
    assert ".endpoint: must be 'current' or 'deprecated'" in err
    assert ".secrets[0].name: '9X' is not a valid" in err
    assert TOKEN not in err
    assert not Installation.objects.exists()


def test_the_command_refuses_broken_json_without_echoing_it(db, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"installations": [{"access_token": "' + TOKEN + '"')
    with pytest.raises(CommandError) as error:
        call_command("import_installations", str(path))
    assert "not valid JSON" in str(error.value)
    assert TOKEN not in str(error.value)


def test_raw_tables_hold_no_token_after_import(db):
    installations_import(data=document())
    raw = raw_database_bytes()
    assert b"icfg_imp1" in raw  # the dump really covers the imported rows
    assert TOKEN.encode() not in raw
    assert TOKEN.encode().hex().encode() not in raw


@pytest.mark.parametrize(
    ("sunset", "warned"), [(None, False), ("2099-01-01", False), ("2020-01-01", True)]
)
def test_the_command_warns_about_the_deprecated_endpoint_after_its_sunset(
    sunset, warned, db, tmp_path, capsys, settings
):
    from datetime import date

    settings.VERCEL_DEPRECATED_ENDPOINT_SUNSET = date.fromisoformat(sunset) if sunset else None
    path = tmp_path / "installations.json"
    path.write_text(json.dumps(document()))
    call_command("import_installations", str(path))
    captured = capsys.readouterr()
    # Imported either way: the format keeps accepting "deprecated".
    assert Installation.objects.get(vercel_id="icfg_imp1").endpoint == "deprecated"
    assert "installations 2 created" in captured.out
    expected = (
        "warning: installations[0] (icfg_imp1).endpoint: 'deprecated' is past Vercel's sunset "
        "(2020-01-01); its pushes go through the current endpoint\n"
    )
    assert captured.err == (expected if warned else "")


HOSTILE = list(BAD_INPUTS)[list(BAD_INPUTS).index("endpoint is a list") :]


@pytest.mark.parametrize("kind", HOSTILE)
def test_it_refuses_hostile_files_with_one_short_line_per_problem(db, tmp_path, capsys, kind):
    """Finding 8: a list where a string belongs, a 5 MB id, lookalike ids and tokens with
    line breaks ended in tracebacks, 5 MB error lines or a failure at push time."""
    installations_import(data={"installations": [{"id": "icfg_pre", "access_token": "vci_x"}]})
    before = snapshot()
    mutate, message = BAD_INPUTS[kind]
    doc = document()
    mutate(doc)
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(CommandError, match="refused, nothing imported"):
        call_command("import_installations", str(path))
    lines = capsys.readouterr().err.splitlines()
    assert any(message in line for line in lines), lines
    assert all(len(line) < 300 for line in lines), [len(line) for line in lines]
    assert not any("vci_a" in line for line in lines)  # a token is never echoed
    assert snapshot() == before


def test_it_refuses_json_nested_too_deeply_with_a_clear_error(db, tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"installations": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(CommandError, match="nested too deeply to read; nothing imported"):
        call_command("import_installations", str(path))
    assert not Installation.objects.exists()
