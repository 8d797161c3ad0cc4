"""A Support lead moves installations off the deprecated endpoint in a real browser: one
from its page, the rest in bulk from the filtered list."""

import pytest

from rotation.audit import AuditAction
from rotation.models import AuditEvent, Installation
from rotation.roles import SUPPORT_LEAD, roles_sync
from tests.conftest import PASSWORD, make_installation, make_user
from tests.test_browser import chromium_page

pytestmark = pytest.mark.browser


def test_a_lead_switches_one_from_its_page_and_the_rest_in_bulk(
    live_server, transactional_db, fake_vercel
):
    from playwright.sync_api import expect

    roles_sync()
    make_user("lena", group=SUPPORT_LEAD)
    one = make_installation("icfg_one", endpoint="deprecated")
    make_installation("icfg_two", endpoint="deprecated")
    make_installation("icfg_three", endpoint="deprecated")
    make_installation("icfg_now", endpoint="current")
    fake_vercel.load_from_database()  # each switch lists the installation's resources there

    with chromium_page() as page:
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "lena")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.goto(f"{live_server.url}/admin/rotation/installation/{one.pk}/change/")
        expect(page.locator("#deprecated-endpoint-warning")).to_contain_text(
            "still pushes secrets through Vercel's deprecated endpoint"
        )
        page.click("#switch-endpoint")
        expect(page.locator(".messagelist .success")).to_have_text(
            "1 installation(s) switched to the current endpoint."
        )
        expect(page.locator("#deprecated-endpoint-warning")).to_have_count(0)

        page.goto(f"{live_server.url}/admin/redeploy/dashboard/")
        page.click("#figure-deprecated-endpoint a")
        expect(page.locator("#result_list tbody tr")).to_have_count(2)
        page.check("#action-toggle")
        page.select_option("select[name=action]", "switch_to_current_endpoint")
        page.click("button[name=index]")
        expect(page.locator(".messagelist .success")).to_have_text(
            "2 installation(s) switched to the current endpoint."
        )

    assert set(Installation.objects.values_list("endpoint", flat=True)) == {"current"}
    events = AuditEvent.objects.filter(action=AuditAction.INSTALLATION_ENDPOINT_SWITCHED)
    assert sorted(events.values_list("installation_ref", flat=True)) == [
        "icfg_one",
        "icfg_three",
        "icfg_two",
    ]
    assert set(events.values_list("actor_username", flat=True)) == {"lena"}
