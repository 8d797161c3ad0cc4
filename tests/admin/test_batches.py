"""The batch page: progress, failures, and its retry and cancel buttons."""

import pytest
from django.urls import reverse

from rotation.models import AuditEvent, Rotation
from tests.admin.rotation_requests import login, request_batch


def test_it_reports_batch_progress_as_json(client, alice, resources):
    batch = request_batch(client, alice, resources)
    rotations = list(batch.rotations.order_by("pk"))
    Rotation.objects.filter(pk=rotations[0].pk).update(state=Rotation.State.AWAITING_REDEPLOY)
    Rotation.objects.filter(pk=rotations[1].pk).update(
        state=Rotation.State.FAILED, last_error="bad token"
    )
    url = reverse("admin:rotation_batch_progress", args=[batch.pk])
    data = client.get(url).json()
    assert data["total"] == 3
    assert data["counts"]["awaiting_redeploy"] == 1
    assert data["counts"]["failed"] == 1
    assert data["counts"]["requested"] + data["counts"]["preparing"] == 1
    assert data["finished"] is False
    assert 0 < data["percent"] < 100
    Rotation.objects.filter(pk=rotations[2].pk).update(state=Rotation.State.AWAITING_REDEPLOY)
    data = client.get(url).json()
    assert data["finished"] is True
    assert data["percent"] == 100
    assert (data["batch"], data["refused"]) == (batch.pk, 0)


def test_it_tells_the_batch_page_whether_the_batch_is_finished(client, alice, resources):
    batch = request_batch(client, alice, resources)
    url = reverse("admin:rotation_rotationbatch_change", args=[batch.pk])
    page = client.get(url).content.decode()
    assert 'data-finished="false"' in page
    assert "in progress" in page
    Rotation.objects.filter(batch=batch).update(state=Rotation.State.FAILED)
    page = client.get(url).content.decode()
    assert 'data-finished="true"' in page
    assert 'id="batch-status">finished<' in page
    assert 'value="Retry failed (3)"' in page


def test_it_denies_progress_to_staff_without_view_permission(client, alice, dave, resources):
    batch = request_batch(client, alice, resources)
    client.logout()
    response = login(client, dave).get(reverse("admin:rotation_batch_progress", args=[batch.pk]))
    assert response.status_code == 403


def test_it_shows_failures_with_their_reasons_on_the_batch_page(client, alice, resources):
    batch = request_batch(client, alice, resources)
    failed = batch.rotations.order_by("pk").first()
    Rotation.objects.filter(pk=failed.pk).update(
        state=Rotation.State.FAILED,
        last_error="The installation was not found",
        last_error_code="not_found",
        last_error_status=404,
    )
    page = client.get(reverse("admin:rotation_rotationbatch_change", args=[batch.pk])).content
    page = page.decode()
    assert 'id="batch-failures"' in page
    assert "The installation was not found" in page
    assert "not_found" in page
    assert reverse("admin:rotation_rotation_change", args=[failed.pk]) in page
    assert 'id="batch-retry"' in page
    assert 'id="batch-cancel"' in page
    assert 'id="batch-progress"' in page


def test_it_hides_the_buttons_without_permissions(client, alice, viewer, resources):
    batch = request_batch(client, alice, resources)
    Rotation.objects.filter(batch=batch).update(state=Rotation.State.FAILED)
    client.logout()
    page = login(client, viewer).get(
        reverse("admin:rotation_rotationbatch_change", args=[batch.pk])
    )
    assert page.status_code == 200
    assert b'id="batch-retry"' not in page.content
    assert b'id="batch-cancel"' not in page.content


def test_it_denies_and_audits_retry_and_cancel_without_permission(client, alice, viewer, resources):
    batch = request_batch(client, alice, resources)
    Rotation.objects.filter(batch=batch).update(state=Rotation.State.FAILED)
    rotation = batch.rotations.first()
    client.logout()
    login(client, viewer)
    urls = [
        reverse("admin:rotation_batch_retry_failed", args=[batch.pk]),
        reverse("admin:rotation_batch_cancel", args=[batch.pk]),
        reverse("admin:rotation_rotation_retry", args=[rotation.pk]),
        reverse("admin:rotation_rotation_cancel", args=[rotation.pk]),
    ]
    for url in urls:
        assert client.post(url).status_code == 403
    assert batch.rotations.filter(state=Rotation.State.FAILED).count() == 3
    denied = AuditEvent.objects.filter(outcome="denied", actor_username="victor")
    assert denied.count() == 4
    # Refused before the lookup: each event names the id that was asked for.
    refs = set(denied.values_list("batch_ref", "rotation_ref"))
    assert refs == {(batch.pk, None), (None, rotation.pk)}


def button_urls(batch, rotation) -> dict[str, str]:
    """Each button's URL and the audit action its refusal is recorded under."""
    return {
        reverse("admin:rotation_batch_retry_failed", args=[batch.pk]): "batch.retry_failed",
        reverse("admin:rotation_batch_cancel", args=[batch.pk]): "batch.cancelled",
        reverse("admin:rotation_rotation_retry", args=[rotation.pk]): "rotation.retried",
        reverse("admin:rotation_rotation_cancel", args=[rotation.pk]): "rotation.cancelled",
    }


@pytest.mark.parametrize("persona", ["viewer", "dave"])
def test_it_audits_each_refused_button_post_once(client, alice, resources, persona, request):
    user = request.getfixturevalue(persona)
    batch = request_batch(client, alice, resources)
    Rotation.objects.filter(batch=batch).update(state=Rotation.State.FAILED)
    rotation = batch.rotations.order_by("pk").first()
    client.logout()
    login(client, user)
    for url, action in button_urls(batch, rotation).items():
        seen = list(AuditEvent.objects.values_list("pk", flat=True))
        assert client.post(url).status_code == 403, url
        event = AuditEvent.objects.exclude(pk__in=seen).get()  # exactly one new event
        assert (event.action, event.outcome, event.actor_username) == (
            action,
            "denied",
            user.username,
        ), url
        assert event.details["message"] == "You do not have permission to do this.", url
    assert batch.rotations.filter(state=Rotation.State.FAILED).count() == 3


def test_it_audits_the_403_of_pages_without_the_view_permission(client, alice, dave, resources):
    batch = request_batch(client, alice, resources)
    client.logout()
    login(client, dave)
    seen = list(AuditEvent.objects.values_list("pk", flat=True))
    progress = reverse("admin:rotation_batch_progress", args=[batch.pk])
    assert client.get(progress).status_code == 403
    page = reverse("admin:rotation_rotationbatch_change", args=[batch.pk])
    assert client.get(page).status_code == 403
    denied = AuditEvent.objects.exclude(pk__in=seen).order_by("pk")
    assert [(e.action, e.outcome, e.actor_username, e.details["path"]) for e in denied] == [
        ("admin.access_denied", "denied", "dave", progress),
        ("admin.access_denied", "denied", "dave", page),
    ]


def test_it_warns_when_a_batch_button_finds_nothing_to_do(client, alice, resources):
    batch = request_batch(client, alice, resources)
    url = reverse("admin:rotation_batch_retry_failed", args=[batch.pk])
    response = client.post(url, follow=True)
    sent = [(m.level_tag, str(m)) for m in response.context["messages"]]
    assert sent[0][1].startswith(f"Batch #{batch.pk}:")  # from requesting the batch
    assert sent[1:] == [("warning", "0 failed rotation(s) queued again.")]


def test_it_only_accepts_posts_for_the_buttons(client, alice, resources):
    batch = request_batch(client, alice, resources)
    response = client.get(reverse("admin:rotation_batch_cancel", args=[batch.pk]))
    assert response.status_code == 405


def test_it_cancels_a_batch(client, alice, resources):
    batch = request_batch(client, alice, resources)
    response = client.post(reverse("admin:rotation_batch_cancel", args=[batch.pk]), follow=True)
    assert b"3 rotation(s) cancelled" in response.content
    assert batch.rotations.filter(state=Rotation.State.CANCELLED).count() == 3


def test_it_retries_the_failed_rotations_of_a_batch(client, alice, resources):
    batch = request_batch(client, alice, resources)
    Rotation.objects.filter(batch=batch).update(state=Rotation.State.FAILED, last_error="x")
    url = reverse("admin:rotation_batch_retry_failed", args=[batch.pk])
    response = client.post(url, follow=True)
    assert b"3 failed rotation(s) queued again" in response.content
    assert not batch.rotations.filter(state=Rotation.State.FAILED).exists()


def test_it_requires_a_csrf_token_for_the_buttons(alice, resources):
    from django.test import Client

    batch = request_batch(Client(), alice, resources)
    strict = Client(enforce_csrf_checks=True)
    login(strict, alice)
    response = strict.post(reverse("admin:rotation_batch_cancel", args=[batch.pk]))
    assert response.status_code == 403
    assert not batch.rotations.filter(state=Rotation.State.CANCELLED).exists()


def test_the_batch_page_shows_when_it_waits_on_vercels_rate_limit(client, alice, resources):
    from datetime import timedelta

    import time_machine

    from rotation.models import PushPace
    from rotation.services.pace import pace_rate_limited

    batch = request_batch(client, alice, resources)
    page_url = reverse("admin:rotation_rotationbatch_change", args=[batch.pk])
    progress_url = reverse("admin:rotation_batch_progress", args=[batch.pk])
    assert client.get(progress_url).json()["rate_limited_until"] is None
    assert 'id="batch-rate-limited" class="warning" hidden' in client.get(page_url).content.decode()
    # A 429 for an installation with none of the batch's rotations in flight: not this batch.
    Rotation.objects.filter(batch=batch, resource=resources[0]).update(
        state=Rotation.State.AWAITING_REDEPLOY
    )
    pace_rate_limited(installation_id=resources[0].installation_id, wait=60)
    assert client.get(progress_url).json()["rate_limited_until"] is None
    until = pace_rate_limited(installation_id=resources[1].installation_id, wait=90)
    assert client.get(progress_url).json()["rate_limited_until"] == until.isoformat()
    page = client.get(page_url).content.decode()
    assert "Waiting on Vercel's rate limit until" in page
    assert until.strftime("%Y-%m-%d %H:%M:%S") in page
    assert 'id="batch-rate-limited" class="warning" hidden' not in page
    with time_machine.travel(until + timedelta(seconds=1)):
        assert client.get(progress_url).json()["rate_limited_until"] is None
    assert PushPace.objects.count() == 2
