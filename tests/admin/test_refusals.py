"""Every 403 is audited once, and so is a correct password for an account that is not staff."""

import pytest
from django.urls import reverse

from rotation.models import AuditEvent, Rotation
from tests.admin.rotation_requests import request_batch
from tests.conftest import PASSWORD, make_user


def new_events(seen):
    return AuditEvent.objects.exclude(pk__in=seen).order_by("pk")


@pytest.mark.parametrize("persona", ["carol", "dave"])
def test_it_audits_every_403_of_compliance_and_no_group_staff(
    client, alice, resources, persona, request
):
    """Finding 9: a 403 raised before the guarded POST left no event."""
    batch = request_batch(client, alice, resources)
    rotation = batch.rotations.order_by("pk").first()
    Rotation.objects.filter(batch=batch).update(state=Rotation.State.FAILED)
    client.force_login(request.getfixturevalue(persona))
    refused = [
        ("post", reverse("admin:rotation_rotation_retry", args=[rotation.pk])),
        ("post", reverse("admin:rotation_rotation_cancel", args=[rotation.pk])),
        ("post", reverse("admin:rotation_batch_retry_failed", args=[batch.pk])),
        ("post", reverse("admin:rotation_batch_cancel", args=[batch.pk])),
        ("post", f"/admin/redeploy/rotation/{rotation.pk}/rollback/"),
        ("get", f"/admin/redeploy/rotation/{rotation.pk}/rollback/"),
        ("get", "/admin/rotation/installation/add/"),  # Django's own admin check
    ]
    for method, url in refused:
        seen = list(AuditEvent.objects.values_list("pk", flat=True))
        assert getattr(client, method)(url).status_code == 403, url
        event = new_events(seen).get()  # exactly one event per 403
        assert (event.outcome, event.actor_username) == ("denied", persona), url
        assert event.details["message"] == "You do not have permission to do this."
    assert batch.rotations.filter(state=Rotation.State.FAILED).count() == len(resources)


def test_it_audits_a_correct_password_of_an_account_that_is_not_staff(client, db):
    make_user("nora", staff=False)
    seen = list(AuditEvent.objects.values_list("pk", flat=True))
    response = client.post(
        reverse("admin:login"),
        {"username": "nora", "password": PASSWORD, "next": "/admin/"},
        REMOTE_ADDR="203.0.113.9",
    )
    assert response.status_code == 200  # the sign-in page again, with Django's message
    assert "_auth_user_id" not in client.session
    event = new_events(seen).get()
    assert (event.action, event.outcome, event.actor_username) == (
        "auth.login_denied",
        "denied",
        "nora",
    )
    assert event.source_ip == "203.0.113.9"
    assert event.details["is_staff"] is False
