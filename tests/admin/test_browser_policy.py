"""What the browser is told to enforce: a Content-Security-Policy the admin lives within
(no inline script or style anywhere), and staff sessions that end."""

from __future__ import annotations

import re
from datetime import timedelta

from django.contrib.sessions.models import Session
from django.urls import reverse
from django.utils import timezone

from rotation.models import AuditEvent, Rotation
from tests.admin.rotation_requests import CHANGELIST, action_post, login, request_batch
from tests.conftest import PASSWORD

SCRIPT_TAG = re.compile(r"<script\b[^>]*>", re.IGNORECASE)
INLINE_STYLE = re.compile(r"<style\b|\sstyle\s*=", re.IGNORECASE)


def policy_of(response) -> dict[str, list[str]]:
    header = response.headers.get("Content-Security-Policy", "")
    directives = (part.split() for part in header.split(";") if part.strip())
    return {words[0]: words[1:] for words in directives}


def admin_pages(client, user, resources) -> dict[str, str]:
    batch = request_batch(client, user, resources)
    rotation = Rotation.objects.filter(batch=batch).first()
    return {
        "index": reverse("admin:index"),
        "resources": reverse("admin:rotation_resource_changelist"),
        "batch": reverse("admin:rotation_rotationbatch_change", args=[batch.pk]),
        "rotation": reverse("admin:rotation_rotation_change", args=[rotation.pk]),
        "installation": reverse(
            "admin:rotation_installation_change", args=[resources[0].installation_id]
        ),
        "dashboard": reverse("redeploy_dashboard"),
        "audit": reverse("admin:rotation_auditevent_changelist"),
        "audit event": reverse(
            "admin:rotation_auditevent_change", args=[AuditEvent.objects.latest("pk").pk]
        ),
        "rollback form": reverse("redeploy_rollback", args=[rotation.pk]),
    }


def test_every_admin_page_carries_a_policy_that_allows_no_inline_script(client, root, resources):
    pages = admin_pages(client, root, resources)
    client.logout()
    responses = {"login": client.get(reverse("admin:login"))}
    login(client, root)
    responses |= {name: client.get(url) for name, url in pages.items()}

    for name, response in responses.items():
        assert response.status_code == 200, name
        policy = policy_of(response)
        assert policy.get("script-src") == ["'self'"], name
        assert policy.get("style-src") == ["'self'"], name
        assert policy.get("object-src") == ["'none'"], name
        assert policy.get("frame-ancestors") == ["'none'"], name
        assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"], name


def test_no_admin_page_holds_an_inline_script_or_style(client, root, resources):
    confirmation = login(client, root).post(CHANGELIST, action_post([r.pk for r in resources]))
    assert b'id="rotate-confirm"' in confirmation.content
    pages = admin_pages(client, root, resources)
    htmls = {name: client.get(url).content.decode() for name, url in pages.items()}
    htmls["rotate confirmation"] = confirmation.content.decode()

    for name, html in htmls.items():
        inline = [tag for tag in SCRIPT_TAG.findall(html) if "src=" not in tag]
        assert inline == [], name
        assert INLINE_STYLE.findall(html) == [], name


def test_the_batch_page_polls_from_a_static_script(client, alice, resources):
    batch = request_batch(client, alice, resources)

    html = client.get(reverse("admin:rotation_rotationbatch_change", args=[batch.pk])).content

    assert b'src="/static/rotation/batch_progress.js"' in html
    assert b'<progress id="batch-bar" max="100" value="0">' in html


def test_a_staff_session_lasts_eight_hours_and_ends_when_the_browser_closes(client, alice):
    before = timezone.now()

    response = client.post(
        reverse("admin:login"), {"username": "alice", "password": PASSWORD, "next": "/admin/"}
    )

    assert response.status_code == 302
    cookie = response.cookies["sessionid"]
    assert (cookie["expires"], cookie["max-age"]) == ("", "")  # a browser-session cookie
    expires = Session.objects.get().expire_date
    assert before + timedelta(hours=8) <= expires <= timezone.now() + timedelta(hours=8)
