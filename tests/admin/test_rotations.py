"""The rotation records: their buttons, timeline, filters, and pages without secrets."""

from django.urls import reverse

from rotation.models import AuditEvent, Resource, Rotation
from tests.admin.rotation_requests import CHANGELIST, action_post, request_batch
from tests.conftest import make_installation


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
