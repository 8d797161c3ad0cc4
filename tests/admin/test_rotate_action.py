"""The rotate action on the resource list: confirmation, refusals and select-across."""

from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from rotation.models import AuditEvent, Resource, Rotation, RotationBatch
from tests.admin.rotation_requests import CHANGELIST, action_post, confirm_post, login
from tests.conftest import make_installation


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
