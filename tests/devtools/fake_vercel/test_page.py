"""The stand-in's page at `/`: resources and their secrets, masked."""

from rotation.devtools.fake_vercel import mask
from tests.devtools.fake_vercel.api_calls import PRODUCT, RESOURCE, TOKEN, VALUE, call


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
