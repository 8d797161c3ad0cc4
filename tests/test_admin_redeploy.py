"""Admin pages for redeploys: confirm (note, own permission), roll back (reason), the panel."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from rotation.audit import AuditAction
from rotation.models import AuditEvent, Rotation, WebhookEvent
from tests.redeploy_builders import NEW_SECRETS, OLD_SECRETS, connect, make_pushed_rotation


@pytest.fixture
def resource(installation):
    return installation.resources.get()


@pytest.fixture
def rotation(resource):
    connect(resource, "prj_a", "prj_b", at=timezone.now() - timedelta(days=3))
    return make_pushed_rotation(resource)


def confirm_url(rotation) -> str:
    return f"/admin/redeploy/rotation/{rotation.pk}/confirm-redeploy/"


def rollback_url(rotation) -> str:
    return f"/admin/redeploy/rotation/{rotation.pk}/rollback/"


def test_it_shows_the_redeploy_panel_on_the_rotation_page(client, alice, rotation):
    client.force_login(alice)
    page = client.get(f"/admin/rotation/rotation/{rotation.pk}/change/").content.decode()
    assert 'id="redeploy-panel"' in page
    assert 'data-project="prj_a"' in page and 'data-project="prj_b"' in page
    assert "day-1" in page
    assert confirm_url(rotation) in page
    assert rollback_url(rotation) not in page  # Support may not roll back


def test_it_records_a_confirmed_redeploy_with_a_note(client, alice, rotation):
    client.force_login(alice)
    assert client.get(confirm_url(rotation)).status_code == 200

    response = client.post(confirm_url(rotation), {"text": "Customer replied on ticket 77"})

    assert response.status_code == 302
    assert response["Location"] == f"/admin/rotation/rotation/{rotation.pk}/change/"
    rotation.refresh_from_db()
    assert rotation.redeployed_at is not None
    event = AuditEvent.objects.get(action=AuditAction.REDEPLOY_CONFIRMED)
    assert (event.actor_username, event.reason) == ("alice", "Customer replied on ticket 77")
    assert event.source_ip == "127.0.0.1"


def test_it_wants_a_note(client, alice, rotation):
    client.force_login(alice)
    response = client.post(confirm_url(rotation), {"text": ""})
    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    rotation.refresh_from_db()
    assert rotation.redeployed_at is None


def test_it_refuses_and_audits_staff_without_the_permission(client, dave, alice, rotation):
    client.force_login(dave)
    assert client.get(confirm_url(rotation)).status_code == 403
    assert client.post(confirm_url(rotation), {"text": "x"}).status_code == 403
    client.force_login(alice)
    assert client.post(rollback_url(rotation), {"text": "x"}).status_code == 403
    denied = AuditEvent.objects.filter(outcome="denied").values_list("action", "actor_username")
    assert sorted(denied) == [
        (AuditAction.REDEPLOY_CONFIRMED, "dave"),
        (AuditAction.ROTATION_ROLLED_BACK, "alice"),
    ]
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.AWAITING_REDEPLOY


def test_it_rolls_back_from_the_admin(client, root, resource, rotation, fake_vercel, settings):
    settings.ROTATION_CREDENTIAL_PROVIDER = "rotation.credentials.RandomCredentialProvider"
    installation = resource.installation
    fake_vercel.add_installation(
        installation.vercel_id, installation.access_token(), {resource.vercel_id: resource.product}
    )
    fake_vercel.set_secrets(installation.vercel_id, resource.vercel_id, NEW_SECRETS)
    client.force_login(root)

    response = client.post(rollback_url(rotation), {"text": "logins fail with the new set"})

    assert response.status_code == 302
    assert fake_vercel.secrets_of(installation.vercel_id, resource.vercel_id) == OLD_SECRETS
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.ROLLED_BACK
    page = client.get(response["Location"]).content.decode()
    assert "rolled back" in page
    assert "old-pass" not in page and "new-pass" not in page


def test_it_reports_a_refusal_on_the_rotation_page(client, root, rotation):
    Rotation.objects.filter(pk=rotation.pk).update(state=Rotation.State.COMPLETED)
    client.force_login(root)
    response = client.post(confirm_url(rotation), {"text": "late"}, follow=True)
    assert "not waiting for a redeploy" in response.content.decode()


def test_it_lists_webhook_deliveries_read_only(client, root, db):
    WebhookEvent.objects.create(event_id="evt_1", type="deployment.succeeded", payload={"id": 1})
    client.force_login(root)
    page = client.get("/admin/rotation/webhookevent/").content.decode()
    assert "evt_1" in page
    assert client.get("/admin/rotation/webhookevent/add/").status_code == 403
