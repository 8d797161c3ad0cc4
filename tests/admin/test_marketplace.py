"""The installation list's Marketplace actions: rotate the access token (Support lead, with a
confirmation page), check resources against Vercel, token age; the inventory report and the
notification on the rotation page."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.admin import helpers
from django.urls import reverse
from django.utils import timezone

from rotation.models import AuditEvent, Installation, InventoryReport, Rotation
from tests.conftest import make_installation
from tests.redeploy_builders import make_pushed_rotation, run_queued

CHANGELIST = "admin:rotation_installation_changelist"
OLD = "vci_test_token_1"


def post_action(client, action, installation, **extra):
    data = {"action": action, helpers.ACTION_CHECKBOX_NAME: [installation.pk], **extra}
    return client.post(reverse(CHANGELIST), data, follow=True)


def test_support_lead_rotates_a_token_after_confirming(
    client, lead, market, installation, q_sync, django_capture_on_commit_callbacks
):
    client.force_login(lead)
    page = post_action(client, "rotate_access_token", installation)
    assert b"rotate-token-confirm" in page.content
    installation.refresh_from_db()
    assert installation.token_rotation_step == ""  # nothing happens before confirming
    with django_capture_on_commit_callbacks(execute=True):
        done = post_action(client, "rotate_access_token", installation, post="yes")
    assert "Token rotation started for 1 installation" in done.content.decode()
    installation.refresh_from_db()
    assert installation.access_token() != OLD
    assert installation.token_rotation_step == ""
    assert market.is_revoked(installation.vercel_id, OLD)
    requested = AuditEvent.objects.get(action="installation.token_rotation_requested")
    assert requested.actor_username == "lena"
    body = client.get(reverse(CHANGELIST)).content.decode()
    assert installation.access_token() not in body
    assert OLD not in body


def test_support_is_not_offered_the_token_actions(client, alice, market, installation):
    client.force_login(alice)
    body = client.get(reverse(CHANGELIST)).content.decode()
    assert "rotate_access_token" not in body
    assert "check_resources_on_vercel" not in body
    post_action(client, "rotate_access_token", installation, post="yes")
    installation.refresh_from_db()
    assert installation.token_rotation_step == ""
    assert market.requests == []


def test_without_the_client_secret_the_refusal_is_shown(
    client, lead, market, installation, settings
):
    settings.VERCEL_CLIENT_SECRET = ""
    client.force_login(lead)
    page = post_action(client, "rotate_access_token", installation, post="yes")
    assert "VERCEL_CLIENT_SECRET is not set" in page.content.decode()


def test_the_list_shows_token_age_and_filters_by_it(client, lead, db):
    old = make_installation("icfg_old", token="vci_old_token")
    make_installation("icfg_new", token="vci_new_token")
    Installation.objects.filter(pk=old.pk).update(
        access_token_set_at=timezone.now() - timedelta(days=120)
    )
    client.force_login(lead)
    body = client.get(reverse(CHANGELIST)).content.decode()
    assert "120 days" in body
    filtered = client.get(reverse(CHANGELIST) + "?token_age=90to365").content.decode()
    assert "icfg_old" in filtered and "icfg_new" not in filtered
    fresh = client.get(reverse(CHANGELIST) + "?token_age=lt30").content.decode()
    assert "icfg_new" in fresh and "icfg_old" not in fresh


def test_check_resources_queues_a_report_staff_can_read(
    client, lead, market, installation, django_capture_on_commit_callbacks
):
    resource = installation.resources.get()
    market.set_resource_on_vercel(
        installation.vercel_id, resource.vercel_id, product="postgres", name="renamed on vercel"
    )
    client.force_login(lead)
    with django_capture_on_commit_callbacks(execute=True):
        page = post_action(client, "check_resources_on_vercel", installation)
    assert "Inventory check #" in page.content.decode()
    report = InventoryReport.objects.get()
    assert report.source == "admin" and report.requested_by == "lena"
    assert run_queued("rotation.tasks_marketplace.inventory_check_report") == [1]
    report_page = client.get(reverse("admin:rotation_inventoryreport_change", args=[report.pk]))
    body = report_page.content.decode()
    assert "renamed on vercel" in body
    assert "Name changed" in body


def test_the_rotation_page_shows_the_notification(client, root, resource):
    rotation = make_pushed_rotation(resource)
    Rotation.objects.filter(pk=rotation.pk).update(
        notification_state=Rotation.Notification.FAILED,
        notification_error="VercelError: Vercel 404 not_found (permanent): Resource not found",
    )
    client.force_login(root)
    body = client.get(reverse("admin:rotation_rotation_change", args=[rotation.pk])).content
    assert b"Dashboard notification on Vercel" in body
    assert b"Resource not found" in body


def test_findings_are_listed_and_searchable(client, lead, market, installation):
    from rotation.services.inventory import inventory_check

    resource = installation.resources.get()
    market.remove_resource_on_vercel(installation.vercel_id, resource.vercel_id)
    inventory_check(installation_ids=None, source="cli", actor=None, origin=None)
    client.force_login(lead)
    url = reverse("admin:rotation_inventoryfinding_changelist")
    body = client.get(url + f"?q={installation.vercel_id}").content.decode()
    assert resource.vercel_id in body
    assert resource.vercel_id not in client.get(url + "?q=icfg_other").content.decode()
