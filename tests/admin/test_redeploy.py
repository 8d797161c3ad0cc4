"""Admin pages for redeploys: confirm (note, own permission), roll back (reason), the panel."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from rotation.audit import AuditAction
from rotation.models import AuditEvent, Rotation, WebhookEvent
from tests.redeploy_builders import (
    NEW_SECRETS,
    OLD_SECRETS,
    connect,
    make_pushed_rotation,
    run_queued,
)


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
        (AuditAction.REDEPLOY_CONFIRMED, "dave"),  # the form page (GET)
        (AuditAction.REDEPLOY_CONFIRMED, "dave"),  # the form (POST)
        (AuditAction.ROLLBACK_REQUESTED, "alice"),
    ]
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.AWAITING_REDEPLOY


@pytest.mark.parametrize(
    ("persona", "url", "action"),
    [
        ("dave", confirm_url, AuditAction.REDEPLOY_CONFIRMED),
        ("dave", rollback_url, AuditAction.ROLLBACK_REQUESTED),
        ("alice", rollback_url, AuditAction.ROLLBACK_REQUESTED),
    ],
)
def test_it_audits_a_refused_post_once_with_its_message(
    client, rotation, persona, url, action, request
):
    client.force_login(request.getfixturevalue(persona))
    seen = list(AuditEvent.objects.values_list("pk", flat=True))
    assert client.post(url(rotation), {"text": "x"}).status_code == 403
    event = AuditEvent.objects.exclude(pk__in=seen).get()
    assert (event.action, event.outcome, event.actor_username) == (action, "denied", persona)
    assert event.details["message"] == "You do not have permission to do this."
    assert event.rotation_ref == rotation.pk  # refused before the lookup: the id asked for


def test_it_asks_for_a_note_to_confirm_and_a_reason_to_roll_back(client, root, rotation):
    client.force_login(root)
    confirm = client.get(confirm_url(rotation)).content.decode()
    assert '<label for="id_text"' in confirm and ">Note:</label>" in confirm
    assert "How the customer confirmed (ticket, call, email)" in confirm
    rollback = client.get(rollback_url(rotation)).content.decode()
    assert ">Reason:</label>" in rollback
    assert "Why roll back? Recorded in the audit trail." in rollback
    assert 'name="text"' in confirm and 'name="text"' in rollback


def test_it_rolls_back_from_the_admin(
    client, root, resource, rotation, fake_vercel, settings, django_capture_on_commit_callbacks
):
    installation = resource.installation
    fake_vercel.load_from_database()
    fake_vercel.set_secrets(installation.vercel_id, resource.vercel_id, NEW_SECRETS)
    client.force_login(root)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(rollback_url(rotation), {"text": "logins fail with the new set"})

    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "rollback requested" in page
    # The request only queued the task; the task puts the previous values back.
    assert fake_vercel.secrets_of(installation.vercel_id, resource.vercel_id) == NEW_SECRETS
    with django_capture_on_commit_callbacks(execute=True):
        assert run_queued("rotation.tasks_redeploy.rotation_rollback_task") == [True]
    assert fake_vercel.secrets_of(installation.vercel_id, resource.vercel_id) == OLD_SECRETS
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.ROLLED_BACK
    page = client.get(response["Location"]).content.decode()
    assert "Rolled back" in page
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
    delivery = WebhookEvent.objects.get()
    change = f"/admin/rotation/webhookevent/{delivery.pk}/change/"
    assert client.post(change, {"status": "ignored"}).status_code == 403
    assert client.post(f"/admin/rotation/webhookevent/{delivery.pk}/delete/").status_code == 403
    assert WebhookEvent.objects.get().status == delivery.status


def inline_data(resource, rows: list[dict]) -> dict:
    """The resource change form as the admin posts it, with the connected-projects inline."""
    data = {
        "installation": resource.installation_id,
        "vercel_id": resource.vercel_id,
        "product": resource.product,
        "name": resource.name,
        "status": resource.status,
        "secret_template": json.dumps(resource.secret_template),
        "connected_projects-TOTAL_FORMS": len(rows),
        "connected_projects-INITIAL_FORMS": sum(1 for row in rows if row.get("id")),
        "connected_projects-MIN_NUM_FORMS": 0,
        "connected_projects-MAX_NUM_FORMS": 1000,
    }
    for index, row in enumerate(rows):
        prefix = f"connected_projects-{index}-"
        connected = row.get("connected_at")
        gone = row.get("disconnected_at")
        data.update(
            {
                prefix + "id": row.get("id", ""),
                prefix + "resource": resource.pk,
                prefix + "project_id": row["project_id"],
                prefix + "source": row.get("source", "manual"),
                prefix + "connected_at_0": connected.strftime("%Y-%m-%d"),
                prefix + "connected_at_1": connected.strftime("%H:%M:%S"),
                prefix + "disconnected_at_0": gone.strftime("%Y-%m-%d") if gone else "",
                prefix + "disconnected_at_1": gone.strftime("%H:%M:%S") if gone else "",
            }
        )
        if row.get("id"):  # callable default: the form compares against a hidden initial
            data[f"initial-{prefix}connected_at_0"] = connected.strftime("%Y-%m-%d")
            data[f"initial-{prefix}connected_at_1"] = connected.strftime("%H:%M:%S")
        if row.get("delete"):
            data[prefix + "DELETE"] = "on"
    return data


def test_it_audits_hand_corrections_of_connected_projects(client, root, resource, rotation):
    client.force_login(root)
    whole_second = rotation.pushed_at.replace(microsecond=0) - timedelta(days=3)
    resource.connected_projects.update(connected_at=whole_second)  # what the form round-trips
    existing = {p.project_id: p for p in resource.connected_projects.all()}
    before_push = rotation.pushed_at - timedelta(days=1)
    rows = [
        {
            "id": existing["prj_a"].pk,
            "project_id": "prj_a",
            "source": "webhook",
            "connected_at": existing["prj_a"].connected_at,
        },
        {
            "id": existing["prj_b"].pk,
            "project_id": "prj_b",
            "source": "webhook",
            "connected_at": existing["prj_b"].connected_at,
            "disconnected_at": timezone.now(),
        },
        {"project_id": "prj_missed", "connected_at": before_push},
    ]

    response = client.post(
        f"/admin/rotation/resource/{resource.pk}/change/", inline_data(resource, rows)
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    checks = dict(rotation.redeploy_checks.values_list("project_id", "status"))
    assert checks == {"prj_a": "waiting", "prj_b": "disconnected", "prj_missed": "waiting"}
    assert resource.connected_projects.get(project_id="prj_missed").source == "manual"
    events = AuditEvent.objects.filter(
        action__in=[AuditAction.PROJECT_CONNECTED, AuditAction.PROJECT_DISCONNECTED],
        actor_username="root",
    )
    assert sorted((e.action, e.details["project"], e.details["change"]) for e in events) == [
        (AuditAction.PROJECT_CONNECTED, "prj_missed", "added"),
        (AuditAction.PROJECT_DISCONNECTED, "prj_b", "changed"),
    ]


@pytest.mark.parametrize("url", [confirm_url, rollback_url])
@pytest.mark.parametrize("method", ["get", "post"])
def test_it_answers_403_for_missing_and_existing_rotations_alike(
    client, dave, rotation, url, method
):
    """Finding 11: the lookup came first, so 404 versus 403 told which rotation ids exist."""
    client.force_login(dave)
    missing = Rotation(pk=rotation.pk + 1000)
    seen = list(AuditEvent.objects.values_list("pk", flat=True))
    for target in (rotation, missing):
        assert getattr(client, method)(url(target), {"text": "x"}).status_code == 403
    denied = AuditEvent.objects.exclude(pk__in=seen).order_by("pk")
    assert [(e.outcome, e.actor_username, e.rotation_ref) for e in denied] == [
        ("denied", "dave", rotation.pk),
        ("denied", "dave", missing.pk),
    ]
