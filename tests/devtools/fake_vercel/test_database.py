"""The stand-in learning installations and tokens from the project's database."""

from rotation.devtools.fake_vercel import FakeVercel
from rotation.models import Resource
from tests.conftest import make_installation
from tests.devtools.fake_vercel.api_calls import BODY, call


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
