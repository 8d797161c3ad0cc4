"""A provider per product, and what it declares: import and admin refuse anything else."""

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from rotation.devtools.demo_provider import RandomCredentialProvider
from rotation.importer import ImportRefused, installations_import
from rotation.models import Resource
from rotation.providers import get_provider
from tests.conftest import make_installation
from tests.provider_doubles import DeclaringProvider
from tests.test_settings import PRODUCTION, manage

DECLARING = "tests.provider_doubles.DeclaringProvider"


@pytest.fixture
def pg_product(settings):
    settings.ROTATION_PROVIDERS = {"pg-main": DECLARING}


def import_document(metadata, secrets=("DATABASE_URL",)):
    resource = {
        "id": "res_pg",
        "product": "pg-main",
        "name": "db",
        "secrets": [{"name": name} for name in secrets],
    }
    if metadata is not None:
        resource["metadata"] = metadata
    return {"installations": [{"id": "icfg_d", "access_token": "vci_t", "resources": [resource]}]}


def test_it_picks_the_provider_of_the_product_else_the_default(pg_product):
    assert isinstance(get_provider("pg-main"), DeclaringProvider)
    assert type(get_provider("other")) is RandomCredentialProvider
    assert type(get_provider()) is RandomCredentialProvider


def test_import_stores_metadata_the_provider_declares(db, pg_product):
    installations_import(data=import_document({"role": "app_owner", "database": "app"}))
    assert Resource.objects.get().metadata == {"role": "app_owner", "database": "app"}


@pytest.mark.parametrize(
    ("metadata", "secrets", "expected"),
    [
        (None, ["DATABASE_URL"], "metadata field 'role' is required by DeclaringProvider"),
        (
            {"role": "o", "database": "d", "host": "x"},
            ["DATABASE_URL"],
            "metadata field 'host' is not used by DeclaringProvider",
        ),
        ({"role": ["o"], "database": "d"}, ["DATABASE_URL"], "'role' must be a string"),
        (
            {"role": "o", "database": "d"},
            ["DATABASE_URL", "REDIS_URL"],
            "secret 'REDIS_URL' is not one DeclaringProvider can produce",
        ),
    ],
)
def test_import_refuses_what_the_provider_does_not_declare(
    db, pg_product, metadata, secrets, expected
):
    with pytest.raises(ImportRefused) as refused:
        installations_import(data=import_document(metadata, secrets))
    problems = "\n".join(refused.value.problems)
    assert "installations[0] (icfg_d).resources[0] (res_pg)" in problems
    assert expected in problems
    assert not Resource.objects.exists()


def test_the_import_command_names_resource_and_field(db, pg_product, tmp_path, capsys):
    path = tmp_path / "import.json"
    path.write_text(json.dumps(import_document({"role": "o"})))
    with pytest.raises(CommandError):
        call_command("import_installations", str(path))
    assert (
        "installations[0] (icfg_d).resources[0] (res_pg): metadata field 'database' is required"
        in capsys.readouterr().err
    )


def test_the_admin_edits_metadata_and_refuses_undeclared_fields(client, root, pg_product):
    installation = make_installation("icfg_meta", product="pg-main")
    resource = installation.resources.get()
    resource.secret_template = [{"name": "DATABASE_URL", "prefix": "", "environments": []}]
    resource.metadata = {"role": "o", "database": "d"}
    resource.save()
    client.force_login(root)
    url = reverse("admin:rotation_resource_change", args=[resource.pk])
    form = {
        "installation": installation.pk,
        "vercel_id": resource.vercel_id,
        "product": "pg-main",
        "name": "db",
        "status": "ready",
        "secret_template": json.dumps(resource.secret_template),
        "connected_projects-TOTAL_FORMS": "0",
        "connected_projects-INITIAL_FORMS": "0",
    }
    refused = client.post(url, {**form, "metadata": json.dumps({"role": "o", "dbname": "d"})})
    assert refused.status_code == 200
    body = refused.content.decode()
    assert "metadata field &#x27;dbname&#x27; is not used by DeclaringProvider" in body
    assert "metadata field &#x27;database&#x27; is required" in body
    resource.refresh_from_db()
    assert resource.metadata == {"role": "o", "database": "d"}

    saved = client.post(url, {**form, "metadata": json.dumps({"role": "n", "database": "d"})})
    assert saved.status_code == 302
    resource.refresh_from_db()
    assert resource.metadata == {"role": "n", "database": "d"}


def test_checks_and_production_settings_cover_every_configured_provider():
    broken = manage("check", ROTATION_PROVIDERS=json.dumps({"kv": "tests.nowhere.X"}))
    assert broken.returncode != 0
    assert "rotation.E001" in broken.stderr and "ROTATION_PROVIDERS['kv']" in broken.stderr
    demo = json.dumps({"kv": "rotation.devtools.demo_provider.RandomCredentialProvider"})
    refused = manage("check", **dict(PRODUCTION, ROTATION_PROVIDERS=demo))
    assert refused.returncode != 0
    assert "- ROTATION_PROVIDERS['kv'] names the demo provider" in refused.stderr
    assert manage("check", **dict(PRODUCTION, ROTATION_PROVIDERS=json.dumps({}))).returncode == 0


def test_checks_name_the_setting_a_configured_provider_needs():
    pg = json.dumps({"pg-main": "rotation.providers.postgres.PostgresRoleProvider"})
    missing = manage("check", ROTATION_PROVIDERS=pg, POSTGRES_PROVIDER_ADMIN_URL="")
    assert missing.returncode != 0
    assert "rotation.E003" in missing.stderr and "POSTGRES_PROVIDER_ADMIN_URL" in missing.stderr
    admin_url = "postgres://rotator@127.0.0.1:5432/postgres"
    fine = manage("check", ROTATION_PROVIDERS=pg, POSTGRES_PROVIDER_ADMIN_URL=admin_url)
    assert fine.returncode == 0, fine.stderr


def test_a_provider_that_does_not_import_fails_the_rotation_not_the_task(db, root, settings):
    from rotation import services

    resource = make_installation("icfg_broken", product="broken").resources.get()
    settings.ROTATION_PROVIDERS = {"broken": "tests.nowhere.Provider"}
    rotation = services.rotation_request(
        resource_ids=[resource.pk], actor=root, reason="x"
    ).rotations.get()
    assert services.rotation_prepare(rotation_id=rotation.pk) == "failed"
    rotation.refresh_from_db()
    assert "tests.nowhere" in rotation.last_error
