"""The whole admin flow in a real browser, with a real qcluster and the Vercel stand-in."""

import contextlib
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

from rotation.models import CredentialVersion, Resource, Rotation, RotationBatch
from rotation.roles import SUPPORT, roles_sync
from rotation.services import rotation_request
from tests.conftest import PASSWORD, make_installation, make_user, qcluster_start, qcluster_stop
from tests.redeploy_builders import connect, deployment_event, post_signed

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
WEBHOOK_SECRET = "browser-test-webhook-secret"
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
    """A page in Debian's chromium (else Playwright's own, which `make test` installs where
    apt cannot), failing the test if the Content-Security-Policy blocked anything. Playwright
    runs an event loop: no ORM calls meanwhile."""
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM if Path(CHROMIUM).exists() else None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            # Chromium reports what the Content-Security-Policy blocked on the console.
            blocked: list[str] = []
            page.on(
                "console",
                lambda message: (
                    blocked.append(message.text)
                    if "Content Security Policy" in message.text
                    else None
                ),
            )
            yield page
            assert blocked == [], "the Content-Security-Policy blocked part of a page"
        finally:
            browser.close()


def log_in(page, base_url: str) -> None:
    page.goto(f"{base_url}/admin/login/")
    page.fill("#id_username", "support")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")


@pytest.fixture
def qcluster(live_server, fake_vercel, tmp_path):
    """`manage.py qcluster` in its own process on the test database, pushing to the stand-in."""
    env = {
        "DATABASE_URL": database_url(connection.settings_dict),
        "VERCEL_API_URL": fake_vercel.url,
        "Q_WORKERS": "2",
        "Q_POLL": "0.1",
        # Expire as soon as every project has redeployed, so the test sees `completed`.
        "ROTATION_EXPIRE_SAFETY_DELAY_MINUTES": "0",
    }
    log_path = tmp_path / "qcluster.log"
    process = qcluster_start(env, log_path)
    yield process
    qcluster_stop(process)
    print(log_path.read_text(errors="replace")[-3000:])


def test_it_rotates_three_resources_from_the_browser(
    live_server, transactional_db, fake_vercel, qcluster, settings
):
    from playwright.sync_api import expect

    settings.VERCEL_CLIENT_SECRET = WEBHOOK_SECRET
    settings.ROTATION_EXPIRE_SAFETY_DELAY_MINUTES = 0
    roles_sync()
    make_user("support", group=SUPPORT)
    installation = make_installation("icfg_browser", resources=3, token="vci_browser_token")
    resources = list(Resource.objects.filter(installation=installation).order_by("pk"))
    for index, resource in enumerate(resources):
        # One project for the first resource, two for the others.
        connect(resource, *[f"prj_{index}_{n}" for n in range(1 + (index > 0))])
    fake_vercel.load_from_database()
    changelist = f"/admin/rotation/resource/?installation__id__exact={installation.pk}"
    ARTIFACTS.mkdir(exist_ok=True)

    with chromium_page() as page:
        log_in(page, live_server.url)
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

    # Vercel tells us, one signed webhook per connected project, that each redeployed.
    webhook_url = live_server.url + "/webhooks/vercel/"
    rotations = list(RotationBatch.objects.get().rotations.select_related("resource"))
    for rotation in rotations:
        for project in rotation.resource.connected_projects.all():
            delivery = deployment_event(
                rotation.resource,
                project.project_id,
                rotation.pushed_at + timedelta(seconds=5),
                f"evt_{project.project_id}",
            )
            assert post_signed(webhook_url, delivery, "not-the-secret").status_code == 403
            response = post_signed(webhook_url, delivery, WEBHOOK_SECRET)
            assert response.status_code == 200, response.text

    rotation_url = f"{live_server.url}/admin/rotation/rotation/{rotations[-1].pk}/change/"
    with chromium_page() as page:
        log_in(page, live_server.url)
        page.goto(rotation_url)
        for _ in range(WAIT_MS // 500):  # the qcluster expires the old credentials meanwhile
            if "Completed" in page.locator("#content").inner_text():
                break
            page.wait_for_timeout(500)
            page.reload()
        expect(page.locator("#content")).to_contain_text("Completed")
        page.screenshot(path=str(ARTIFACTS / "browser_rotation_completed.png"), full_page=True)
        rotation_html = page.content()

    batch = RotationBatch.objects.get()
    states = set(batch.rotations.values_list("state", flat=True))
    assert states == {Rotation.State.COMPLETED}, states
    # The old credentials were expired and their ciphertext wiped.
    assert not CredentialVersion.objects.filter(
        resource__in=resources, stage=CredentialVersion.Stage.PREVIOUS
    ).exists()
    assert set(
        CredentialVersion.objects.filter(resource__in=resources, stage="expired").values_list(
            "secrets_encrypted", flat=True
        )
    ) <= {b""}
    assert batch.requested_by.username == "support"
    assert batch.ticket == "OPS-42"
    for resource in resources:
        pushed = fake_vercel.secrets_of(installation.vercel_id, resource.vercel_id)
        assert pushed, f"nothing pushed for {resource.vercel_id}"
        for secret in pushed:
            values = [secret["value"], *(secret.get("environmentOverrides") or {}).values()]
            assert not [value for value in values if value in html + rotation_html]


def test_it_selects_all_matching_resources_across_pages(live_server, transactional_db):
    from playwright.sync_api import expect

    roles_sync()
    support = make_user("support", group=SUPPORT)
    installation = make_installation("icfg_many", resources=130)
    make_installation("icfg_other", resources=3)
    busy = Resource.objects.filter(installation=installation).order_by("pk").first()
    rotation_request(resource_ids=[busy.pk], actor=support, reason="an earlier request")

    with chromium_page() as page:
        log_in(page, live_server.url)
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


def test_it_rotates_when_vercel_asks_from_the_stand_in_page(
    live_server, transactional_db, vercel_oidc, qcluster
):
    """A customer clicks "rotate" on Vercel (the stand-in's page); the portal checks the signed
    request, the worker pushes, and the stand-in's page shows the new values and the
    dashboard notification."""
    from playwright.sync_api import expect

    from rotation.devtools.fake_vercel import mask

    installation = make_installation("icfg_asks", token="vci_asks_token")
    resource = installation.resources.get()
    vercel_oidc.partner.portal_url = live_server.url
    vercel_oidc.load_from_database()
    ARTIFACTS.mkdir(exist_ok=True)

    with chromium_page() as page:
        page.goto(vercel_oidc.url + "/")
        page.select_option("#rotation-resource", f"{installation.vercel_id} {resource.vercel_id}")
        page.fill("input[name=reason]", "Browser test: customer clicked rotate")
        page.fill("input[name=delay_hours]", "1.5")
        page.click("#request-rotation")
        expect(page.locator("#rotation-requests")).to_contain_text('{"sync": false}')
        expect(page.locator("#rotation-requests")).to_contain_text("202")

        for _ in range(WAIT_MS // 500):  # the qcluster prepares and pushes meanwhile
            if vercel_oidc.secrets_of(installation.vercel_id, resource.vercel_id):
                break
            page.wait_for_timeout(500)
        page.reload()
        pushed = vercel_oidc.secrets_of(installation.vercel_id, resource.vercel_id)
        assert pushed, "the worker pushed nothing"
        for secret in pushed:
            expect(page.locator("body")).to_contain_text(mask(secret["value"]))
        # After the push a task sets the customer's dashboard notification on the resource.
        notification = page.locator("td.notification")
        for _ in range(WAIT_MS // 500):
            if notification.count():
                break
            page.wait_for_timeout(500)
            page.reload()
        expect(notification).to_contain_text("warn")
        expect(notification).to_contain_text("New credentials are in place")
        page.screenshot(
            path=str(ARTIFACTS / "browser_vercel_requested_rotation.png"), full_page=True
        )
        html = page.content()

    rotation = Rotation.objects.get(resource=resource)
    assert rotation.batch.source == RotationBatch.Source.VERCEL
    assert rotation.batch.reason == "Browser test: customer clicked rotate"
    assert rotation.state == Rotation.State.AWAITING_REDEPLOY
    assert rotation.keep_old_until == rotation.pushed_at + timedelta(hours=1.5)
    for secret in pushed:
        assert secret["value"] not in html
