"""The whole admin flow in a real browser, with a real qcluster and the Vercel stand-in."""

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

from rotation.models import Resource, RotationBatch
from rotation.roles import SUPPORT, roles_sync
from rotation.selectors import PUSHED_STATES
from rotation.services import rotation_request
from tests.conftest import PASSWORD, make_installation, make_user

pytestmark = pytest.mark.browser

BASE_DIR = Path(__file__).resolve().parent.parent
ARTIFACTS = BASE_DIR / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Upper bounds for waiting, not speed assertions: a healthy run finishes in seconds.
WAIT_MS = 120_000


def database_url(settings_dict: dict) -> str:
    """DATABASE_URL naming the test database, for a second process."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        name = str(settings_dict["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            pytest.fail("the test database is in memory; run with the browser marker selected")
        return f"sqlite:///{Path(name).resolve()}"
    user = quote(settings_dict.get("USER") or "")
    password = quote(settings_dict.get("PASSWORD") or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


@contextlib.contextmanager
def chromium_page():
    """A page in Debian's chromium. Playwright runs an event loop: no ORM calls meanwhile."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


@pytest.fixture
def qcluster(live_server, fake_vercel, tmp_path):
    """`manage.py qcluster` in its own process on the test database, pushing to the stand-in."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(connection.settings_dict),
        "VERCEL_API_URL": fake_vercel.url,
        "Q_WORKERS": "2",
        "Q_POLL": "0.1",
    }
    log_path = tmp_path / "qcluster.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    yield process
    # The cluster and its workers form their own process group, started above.
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    print(log_path.read_text(errors="replace")[-3000:])


def test_it_rotates_three_resources_from_the_browser(
    live_server, transactional_db, fake_vercel, qcluster
):
    from playwright.sync_api import expect

    roles_sync()
    make_user("support", group=SUPPORT)
    installation = make_installation("icfg_browser", resources=3, token="vci_browser_token")
    resources = list(Resource.objects.filter(installation=installation).order_by("pk"))
    fake_vercel.add_installation(
        installation.vercel_id, "vci_browser_token", {r.vercel_id: r.product for r in resources}
    )
    changelist = f"/admin/rotation/resource/?installation__id__exact={installation.pk}"
    ARTIFACTS.mkdir(exist_ok=True)

    with chromium_page() as page:
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "support")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.goto(live_server.url + changelist)
        for resource in resources:
            page.check(f"input[name=_selected_action][value='{resource.pk}']")
        page.select_option("select[name=action]", "rotate_and_push")
        page.click("button[name=index]")

        expect(page.locator("#rotate-count")).to_have_text("3")
        page.fill("textarea[name=reason]", "Browser test: routine rotation")
        page.fill("input[name=ticket]", "OPS-42")
        page.click("#rotate-confirm")

        expect(page.locator("#batch-progress")).to_be_visible()
        page.wait_for_selector('#batch-progress[data-finished="true"]', timeout=WAIT_MS)
        expect(page.locator("#batch-percent")).to_have_text("100%")
        page.screenshot(path=str(ARTIFACTS / "browser_rotate_and_push.png"), full_page=True)
        html = page.content()

    batch = RotationBatch.objects.get()
    assert batch.requested_by.username == "support"
    assert batch.ticket == "OPS-42"
    states = set(batch.rotations.values_list("state", flat=True))
    assert states <= set(PUSHED_STATES), states
    for resource in resources:
        pushed = fake_vercel.secrets_of(installation.vercel_id, resource.vercel_id)
        assert pushed, f"nothing pushed for {resource.vercel_id}"
        for secret in pushed:
            values = [secret["value"], *(secret.get("environmentOverrides") or {}).values()]
            assert not [value for value in values if value in html]


def test_it_selects_all_matching_resources_across_pages(live_server, transactional_db):
    from playwright.sync_api import expect

    roles_sync()
    support = make_user("support", group=SUPPORT)
    installation = make_installation("icfg_many", resources=130)
    make_installation("icfg_other", resources=3)
    busy = Resource.objects.filter(installation=installation).order_by("pk").first()
    rotation_request(resource_ids=[busy.pk], actor=support, reason="an earlier request")

    with chromium_page() as page:
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "support")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.goto(
            f"{live_server.url}/admin/rotation/resource/?installation__id__exact={installation.pk}"
        )
        page.check("#action-toggle")
        page.click(".actions .question a")  # Django's "Select all 130 resources"
        page.select_option("select[name=action]", "rotate_and_push")
        page.click("button[name=index]")

        expect(page.locator("#rotate-count")).to_have_text("130")
        expect(page.locator("#rotate-will")).to_have_text("129")
        expect(page.locator("#rotate-refused")).to_contain_text(busy.vercel_id)
        page.fill("textarea[name=reason]", "Browser test: select all")
        page.click("#rotate-confirm")
        expect(page.locator("#batch-progress")).to_be_visible()

    batch = RotationBatch.objects.order_by("-pk").first()
    assert batch.rotations.count() == 129
    assert not batch.rotations.exclude(resource__installation=installation).exists()
    assert [item["resource"] for item in batch.refused] == [busy.pk]
