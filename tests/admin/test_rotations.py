"""The rotate action on the resource list, the batch page and the rotation records."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission
from django.urls import reverse

from rotation.models import AuditEvent, Resource, Rotation, RotationBatch
from tests.conftest import PASSWORD, make_installation, make_user

CHANGELIST = "/admin/rotation/resource/"


@pytest.fixture
def viewer(db):
    """Staff who may look at resources but not rotate them."""
    user = make_user("victor")
    user.user_permissions.add(
        Permission.objects.get(codename="view_resource"),
        Permission.objects.get(codename="view_rotationbatch"),
        Permission.objects.get(codename="view_rotation"),
    )
    return user


@pytest.fixture
def resources(installation):
    make_installation("icfg_test2", resources=2)
    return list(Resource.objects.order_by("pk"))


def login(client, user):
    assert client.login(username=user.username, password=PASSWORD)
    return client


def action_post(ids, **extra):
    return {"action": "rotate_and_push", "index": "0", ACTION_CHECKBOX_NAME: ids, **extra}


def confirm_post(ids, **extra):
    data = {"action": "rotate_and_push", "post": "yes", ACTION_CHECKBOX_NAME: ids}
    data.update({"reason": "leaked in a log", "ticket": "SEC-1"}, **extra)
    return data


def test_it_offers_the_action_to_support(client, alice, resources):
    response = login(client, alice).get(CHANGELIST)
    assert b"Rotate and push to Vercel" in response.content


def test_it_hides_the_action_without_the_permission(client, viewer, resources):
    response = login(client, viewer).get(CHANGELIST)
    assert response.status_code == 200
    assert b"rotate_and_push" not in response.content


def test_it_shows_a_confirmation_page_first(client, alice, resources):
    ids = [r.pk for r in resources]
    response = login(client, alice).post(CHANGELIST, action_post(ids))
    assert response.status_code == 200
    assert response.templates[0].name.endswith("rotate_and_push_confirmation.html")
    page = response.content.decode()
    assert 'id="rotate-count">3<' in page
    assert 'name="reason"' in page
    assert 'name="ticket"' in page
    assert 'name="post" value="yes"' in page
    assert RotationBatch.objects.count() == 0


def test_it_offers_emergency_only_with_its_permission(client, alice, root, resources):
    ids = [resources[0].pk]
    page = login(client, alice).post(CHANGELIST, action_post(ids)).content
    assert b'name="emergency"' not in page
    client.logout()
    page = login(client, root).post(CHANGELIST, action_post(ids)).content
    assert b'name="emergency"' in page


def test_it_rotates_on_confirmation_and_redirects_to_the_batch(client, alice, resources):
    ids = [r.pk for r in resources]
    response = login(client, alice).post(CHANGELIST, confirm_post(ids))
    batch = RotationBatch.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("admin:rotation_rotationbatch_change", args=[batch.pk])
    assert batch.reason == "leaked in a log"
    assert batch.ticket == "SEC-1"
    assert batch.source == RotationBatch.Source.ADMIN
    assert batch.requested_by == alice
    assert not batch.emergency
    assert set(batch.rotations.values_list("resource_id", flat=True)) == set(ids)
    page = client.get(response.url).content.decode()
    assert "3 rotation(s) requested" in page


def test_it_requires_a_reason(client, alice, resources):
    ids = [r.pk for r in resources]
    response = login(client, alice).post(CHANGELIST, confirm_post(ids, reason=""))
    assert response.status_code == 200
    assert b"This field is required" in response.content
    assert RotationBatch.objects.count() == 0


def test_it_lists_refused_resources_before_confirmation(client, alice, resources):
    login(client, alice).post(CHANGELIST, confirm_post([resources[0].pk]))
    response = client.post(CHANGELIST, action_post([r.pk for r in resources]))
    page = response.content.decode()
    assert 'id="rotate-will">2<' in page
    assert 'id="rotate-refused"' in page
    assert resources[0].vercel_id in page.split('id="rotate-refused"')[1]


def test_it_reports_refused_resources_on_the_batch(client, alice, resources):
    login(client, alice).post(CHANGELIST, confirm_post([resources[0].pk]))
    response = client.post(CHANGELIST, confirm_post([r.pk for r in resources]), follow=True)
    batch = RotationBatch.objects.order_by("-pk").first()
    assert batch.rotations.count() == 2
    assert len(batch.refused) == 1
    page = response.content.decode()
    assert "1 resource(s) refused" in page
    assert 'id="batch-refused"' in page


def test_it_refuses_a_forged_post_without_the_permission_and_audits_it(client, viewer, resources):
    ids = [r.pk for r in resources]
    response = login(client, viewer).post(CHANGELIST, confirm_post(ids))
    assert response.status_code == 403
    assert RotationBatch.objects.count() == 0
    assert Rotation.objects.count() == 0
    event = AuditEvent.objects.get(outcome="denied")
    assert event.actor_username == "victor"
    assert event.action == "rotation.request_denied"
    assert event.details == {
        "message": "You do not have permission to do this.",
        "selected": 3,
        "select_across": False,
    }


def test_it_refuses_a_forged_post_from_staff_without_any_permission(client, dave, resources):
    response = login(client, dave).post(CHANGELIST, confirm_post([resources[0].pk]))
    assert response.status_code == 403
    assert RotationBatch.objects.count() == 0
    assert AuditEvent.objects.filter(outcome="denied", actor_username="dave").exists()


def test_it_refuses_a_forged_emergency_without_its_permission(client, alice, resources):
    data = confirm_post([resources[0].pk], emergency="on")
    response = login(client, alice).post(CHANGELIST, data)
    assert response.status_code == 200
    assert RotationBatch.objects.filter(emergency=True).count() == 0
    assert Rotation.objects.count() == 0


def test_it_rotates_every_match_with_select_across(client, alice, db):
    big = make_installation("icfg_big", resources=130)
    make_installation("icfg_other", resources=3)
    query = f"?installation__id__exact={big.pk}"
    first_page = list(
        Resource.objects.filter(installation=big).order_by("pk").values_list("pk", flat=True)
    )[:100]
    login(client, alice)
    response = client.post(CHANGELIST + query, action_post(first_page, select_across="1"))
    page = response.content.decode()
    assert 'id="rotate-count">130<' in page
    # The confirmation re-posts the filter and select_across, not 130 hidden inputs.
    assert page.count(f'name="{ACTION_CHECKBOX_NAME}"') == 1
    assert 'name="select_across" value="1"' in page
    response = client.post(
        CHANGELIST + query,
        confirm_post(first_page[:1], select_across="1", expected_count="130"),
    )
    assert response.status_code == 302
    batch = RotationBatch.objects.get()
    assert batch.rotations.count() == 130
    assert not batch.rotations.exclude(resource__installation=big).exists()


def test_it_asks_again_when_the_selection_changed(client, alice, db):
    big = make_installation("icfg_big", resources=5)
    query = f"?installation__id__exact={big.pk}"
    first = Resource.objects.filter(installation=big).first().pk
    login(client, alice)
    response = client.post(
        CHANGELIST + query, confirm_post([first], select_across="1", expected_count="4")
    )
    assert response.status_code == 200
    assert b"The selection changed" in response.content
    assert RotationBatch.objects.count() == 0


def request_batch(client, user, resources) -> RotationBatch:
    login(client, user).post(CHANGELIST, confirm_post([r.pk for r in resources]))
    return RotationBatch.objects.order_by("-pk").first()


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
    assert set(denied.values_list("batch_ref", flat=True)) == {batch.pk}


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


def test_it_answers_a_plain_403_to_pages_without_the_view_permission(
    client, alice, dave, resources
):
    batch = request_batch(client, alice, resources)
    client.logout()
    login(client, dave)
    before = AuditEvent.objects.count()
    assert client.get(reverse("admin:rotation_batch_progress", args=[batch.pk])).status_code == 403
    page = client.get(reverse("admin:rotation_rotationbatch_change", args=[batch.pk]))
    assert page.status_code == 403
    assert AuditEvent.objects.count() == before


def test_it_reports_a_refusal_of_the_service_as_an_error(client, alice, resources):
    batch = request_batch(client, alice, resources)
    rotation = batch.rotations.order_by("pk").first()
    Rotation.objects.filter(pk=rotation.pk).update(state=Rotation.State.AWAITING_REDEPLOY)
    url = reverse("admin:rotation_rotation_cancel", args=[rotation.pk])
    response = client.post(url, follow=True)
    assert response.redirect_chain[-1][0] == reverse(
        "admin:rotation_rotation_change", args=[rotation.pk]
    )
    sent = [(m.level_tag, str(m)) for m in response.context["messages"]]
    assert sent[0][1].startswith(f"Batch #{batch.pk}:")  # from requesting the batch
    refusal = AuditEvent.objects.get(action="rotation.cancelled", outcome="failure")
    assert sent[1:] == [("error", refusal.details["message"])]
    assert f"Rotation #{rotation.pk} is awaiting redeploy" in refusal.details["message"]
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.AWAITING_REDEPLOY


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


def test_it_cancels_and_retries_one_rotation(client, alice, resources):
    batch = request_batch(client, alice, resources)
    rotation = batch.rotations.order_by("pk").first()
    Rotation.objects.filter(pk=rotation.pk).update(state=Rotation.State.FAILED)
    page = client.get(reverse("admin:rotation_rotation_change", args=[rotation.pk])).content
    assert b'id="rotation-retry"' in page
    assert b'id="rotation-cancel"' in page
    client.post(reverse("admin:rotation_rotation_retry", args=[rotation.pk]))
    rotation.refresh_from_db()
    assert rotation.state != Rotation.State.FAILED
    Rotation.objects.filter(pk=rotation.pk).update(state=Rotation.State.FAILED)
    client.post(reverse("admin:rotation_rotation_cancel", args=[rotation.pk]))
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.CANCELLED


def test_it_keeps_rotations_and_batches_read_only(client, root, resources):
    batch = request_batch(client, root, resources)
    rotation = batch.rotations.first()
    assert client.get("/admin/rotation/rotation/add/").status_code == 403
    assert client.get("/admin/rotation/rotationbatch/add/").status_code == 403
    assert client.get(f"/admin/rotation/rotation/{rotation.pk}/delete/").status_code == 403
    assert client.get(f"/admin/rotation/rotationbatch/{batch.pk}/delete/").status_code == 403
    response = client.post(
        f"/admin/rotation/rotation/{rotation.pk}/change/", {"state": "completed"}
    )
    assert response.status_code == 403
    rotation.refresh_from_db()
    assert rotation.state != Rotation.State.COMPLETED


def test_it_shows_the_rotation_timeline_from_the_audit_trail(client, alice, resources):
    batch = request_batch(client, alice, resources)
    rotation = batch.rotations.order_by("pk").first()
    Rotation.objects.filter(pk=rotation.pk).update(state=Rotation.State.FAILED)
    client.post(reverse("admin:rotation_rotation_retry", args=[rotation.pk]))
    client.post(reverse("admin:rotation_rotation_cancel", args=[rotation.pk]))
    page = client.get(reverse("admin:rotation_rotation_change", args=[rotation.pk]))
    timeline = page.content.decode().split("Timeline (from the audit trail)")[1]
    assert AuditEvent.objects.filter(rotation_ref=rotation.pk).count() == 2
    for action in ["rotation.requested", "rotation.retried", "rotation.cancelled"]:
        assert action in timeline
    assert timeline.index("rotation.retried") < timeline.index("rotation.cancelled")
    assert "leaked in a log" in timeline


def test_it_filters_rotations_by_state_installation_and_batch(client, alice, resources):
    batch = request_batch(client, alice, resources[:1])
    request_batch(client, alice, resources[1:])
    base = reverse("admin:rotation_rotation_changelist")
    page = client.get(f"{base}?batch={batch.pk}").content.decode()
    assert resources[0].vercel_id in page
    assert resources[1].vercel_id not in page
    page = client.get(f"{base}?installation=icfg_test2").content.decode()
    assert resources[0].vercel_id not in page
    assert resources[2].vercel_id in page
    page = client.get(f"{base}?state__exact=cancelled").content.decode()
    assert resources[0].vercel_id not in page
    page = client.get(f"{base}?q={resources[2].vercel_id}").content.decode()
    assert resources[2].vercel_id in page
    assert resources[1].vercel_id not in page


def test_it_lists_rotations_without_a_query_per_row(
    client, alice, db, django_assert_max_num_queries
):
    make_installation("icfg_many", resources=60)
    request_batch(client, alice, Resource.objects.all())
    with django_assert_max_num_queries(15):
        response = client.get(reverse("admin:rotation_rotation_changelist"))
    assert response.status_code == 200
    with django_assert_max_num_queries(15):
        response = client.get(reverse("admin:rotation_rotationbatch_changelist"))
    assert response.status_code == 200


def test_it_shows_no_secret_value_on_any_admin_page_after_a_push(client, root, fake_vercel):
    from rotation.tasks import rotations_process

    installation = make_installation("icfg_push", resources=2, token="vci_push_token")
    resources = list(installation.resources.order_by("pk"))
    fake_vercel.load_from_database()
    batch = request_batch(client, root, resources)
    rotations = list(batch.rotations.order_by("pk"))
    assert rotations_process([r.pk for r in rotations]) == 2
    values = []
    for resource in resources:
        for secret in fake_vercel.secrets_of(installation.vercel_id, resource.vercel_id):
            values += [secret["value"], *(secret.get("environmentOverrides") or {}).values()]
    assert len(values) >= 4
    pages = [
        "/admin/",
        CHANGELIST,
        reverse("admin:rotation_installation_changelist"),
        reverse("admin:rotation_installation_change", args=[installation.pk]),
        reverse("admin:rotation_rotation_changelist"),
        reverse("admin:rotation_rotationbatch_changelist"),
        reverse("admin:rotation_rotationbatch_change", args=[batch.pk]),
        reverse("admin:rotation_batch_progress", args=[batch.pk]),
        reverse("admin:rotation_auditevent_changelist"),
        *[reverse("admin:rotation_resource_change", args=[r.pk]) for r in resources],
        *[reverse("admin:rotation_rotation_change", args=[r.pk]) for r in rotations],
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        leaked = [value for value in values if value in response.content.decode()]
        assert not leaked, url
    confirmation = client.post(CHANGELIST, action_post([r.pk for r in resources]))
    assert not [value for value in values if value in confirmation.content.decode()]


def test_it_requires_a_csrf_token_for_the_buttons(alice, resources):
    from django.test import Client

    batch = request_batch(Client(), alice, resources)
    strict = Client(enforce_csrf_checks=True)
    login(strict, alice)
    response = strict.post(reverse("admin:rotation_batch_cancel", args=[batch.pk]))
    assert response.status_code == 403
    assert not batch.rotations.filter(state=Rotation.State.CANCELLED).exists()
