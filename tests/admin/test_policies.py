"""The rotation policy admin, the credential-age compliance view, its export and the card."""

import csv
import io
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from rotation.models import AuditAction, AuditEvent, Resource, RotationPolicy
from tests.conftest import make_installation


@pytest.fixture
def ages(db, settings):
    settings.ROTATION_MAX_AGE_DAYS = 90
    resources = list(make_installation("icfg_age", resources=3).resources.order_by("pk"))
    for resource, days in zip(resources, [200, 95, 10], strict=True):
        Resource.objects.filter(pk=resource.pk).update(
            created_at=timezone.now() - timedelta(days=days)
        )
    return resources


def test_staff_edit_a_policy_and_the_change_is_audited(client, root, db):
    client.force_login(root)
    response = client.post(
        reverse("admin:rotation_rotationpolicy_add"),
        {"product": "postgres", "max_age_days": "30", "note": "SOC 2"},
    )
    assert response.status_code == 302
    assert RotationPolicy.objects.get().max_age_days == 30
    event = AuditEvent.objects.get(action=AuditAction.POLICY_CHANGED)
    assert event.actor_username == "root"
    assert event.details["product"] == "postgres" and event.details["change"] == "created"


def test_the_compliance_view_lists_ages_and_filters_past_policy(client, alice, ages):
    client.force_login(alice)
    url = reverse("admin:rotation_credentialage_changelist")
    everything = client.get(url).content.decode()
    assert all(resource.vercel_id in everything for resource in ages)
    past = client.get(url, {"past_policy": "yes"}).content.decode()
    assert ages[0].vercel_id in past and ages[1].vercel_id in past
    assert ages[2].vercel_id not in past
    within = client.get(url, {"past_policy": "no"}).content.decode()
    assert ages[2].vercel_id in within and ages[0].vercel_id not in within


def test_the_export_follows_the_filter_and_is_audited(client, carol, ages):
    client.force_login(carol)
    response = client.get(
        reverse("admin:rotation_credentialage_export_csv"), {"past_policy": "yes"}
    )
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row["resource"] for row in rows] == [ages[0].vercel_id, ages[1].vercel_id]
    assert [row["age_days"] for row in rows] == ["200", "95"]
    assert {row["past_policy"] for row in rows} == {"yes"}
    event = AuditEvent.objects.get(action=AuditAction.CREDENTIAL_AGES_EXPORTED)
    assert event.actor_username == "carol" and event.details["filters"] == "past_policy=yes"


def test_staff_without_permission_are_refused_and_it_is_audited(client, dave, ages):
    client.force_login(dave)
    assert client.get(reverse("admin:rotation_credentialage_export_csv")).status_code == 403
    refused = AuditEvent.objects.get(action=AuditAction.CREDENTIAL_AGES_EXPORTED)
    assert refused.outcome == "denied"


def test_the_dashboard_shows_resources_overdue_for_rotation(client, root, ages):
    client.force_login(root)
    body = client.get("/admin/redeploy/dashboard/").content.decode()
    assert "Overdue for rotation" in body
    card = body[body.index('id="figure-policy-overdue"') :]
    assert "<strong>2</strong>" in card[:200]
