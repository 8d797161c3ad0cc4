"""The warning in the customer's Vercel dashboard: set after a push, cleared at the end,
retried when Vercel fails, never blocking the rotation, audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from rotation import services
from rotation.models import AuditEvent, Rotation
from rotation.redeploy.notification import (
    notifications_request,
    notifications_requeue,
    rotation_notification_sync,
)
from rotation.tasks_redeploy import rotation_expire_old_task
from tests.redeploy_builders import make_pushed_rotation, run_queued, run_rollback
from tests.services.batch_runs import run_batch

TASK = "rotation.tasks_marketplace.rotation_notification"
Notification = Rotation.Notification


def on_vercel(market, resource):
    return market.resource_on_vercel(resource.installation.vercel_id, resource.vercel_id)


def test_a_push_sets_the_warning_naming_the_variables(
    market, alice, resource, settings, django_capture_on_commit_callbacks
):
    settings.VERCEL_NOTIFICATION_HREF = "https://partner.example/rotation/{resource_id}"
    with django_capture_on_commit_callbacks(execute=True):
        batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
        run_batch(batch)
    rotation = batch.rotations.get()
    assert rotation.state == Rotation.State.AWAITING_REDEPLOY
    assert rotation.notification_state == Notification.SETTING
    assert run_queued(TASK) == [Notification.SET]
    note = on_vercel(market, resource).notification
    assert note["level"] == "warn"
    assert note["title"] == settings.VERCEL_NOTIFICATION_TITLE
    assert "DATABASE_URL, PGPASSWORD" in note["message"]
    assert note["href"] == f"https://partner.example/rotation/{resource.vercel_id}"
    patch = market.requests[-1]
    assert patch.method == "PATCH" and set(patch.body) == {"notification"}
    event = AuditEvent.objects.get(action="rotation.notification_set")
    assert event.rotation_ref == rotation.pk
    assert event.details["level"] == "warn"


def pushed_with_warning(market, resource) -> Rotation:
    rotation = make_pushed_rotation(resource)
    notifications_request([rotation.pk], wanted="set")
    assert rotation_notification_sync(rotation_id=rotation.pk) == Notification.SET
    assert on_vercel(market, resource).notification is not None
    return rotation


def test_completion_clears_the_warning(
    market, resource, policy, django_capture_on_commit_callbacks
):
    rotation = pushed_with_warning(market, resource)
    Rotation.objects.filter(pk=rotation.pk).update(emergency=True)
    with django_capture_on_commit_callbacks(execute=True):
        assert rotation_expire_old_task(rotation.pk) is True
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.COMPLETED
    assert rotation.notification_state == Notification.CLEARING
    assert run_queued(TASK) == [Notification.CLEARED]
    assert on_vercel(market, resource).notification is None
    assert market.requests[-1].body == {"notification": None}
    assert AuditEvent.objects.filter(action="rotation.notification_cleared").count() == 1


def test_a_rollback_clears_the_warning(market, resource, lead, django_capture_on_commit_callbacks):
    rotation = pushed_with_warning(market, resource)
    with django_capture_on_commit_callbacks(execute=True):
        services.rotation_rollback(rotation=rotation, actor=lead, reason="bad values")
        run_rollback(rotation)
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.ROLLED_BACK
    assert run_queued(TASK) == [Notification.CLEARED]
    assert on_vercel(market, resource).notification is None


def test_a_rotation_cancelled_before_its_push_queues_nothing(
    market, alice, resource, django_capture_on_commit_callbacks
):
    batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
    with django_capture_on_commit_callbacks(execute=True):
        services.rotation_cancel(rotation=batch.rotations.get(), actor=alice)
    assert run_queued(TASK) == []
    assert market.requests == []


def test_a_transient_failure_is_retried_by_the_sweeper(
    market, resource, settings, django_capture_on_commit_callbacks
):
    settings.ROTATION_PUSH_BACKOFF_BASE = 0.01
    rotation = make_pushed_rotation(resource)
    notifications_request([rotation.pk], wanted="set")
    market.respond_next(503)
    assert rotation_notification_sync(rotation_id=rotation.pk) == Notification.SETTING
    rotation.refresh_from_db()
    assert rotation.notification_attempts == 1
    assert "503" in rotation.notification_error
    assert rotation.state == Rotation.State.AWAITING_REDEPLOY  # the rotation goes on
    with django_capture_on_commit_callbacks(execute=True):
        assert notifications_requeue(now=timezone.now() + timedelta(minutes=2)) == [rotation.pk]
    assert run_queued(TASK) == [Notification.SET]
    failed = AuditEvent.objects.get(action="rotation.notification_failed")
    assert failed.outcome == "failure"
    assert failed.details["stopped"] is False


def test_a_permanent_failure_stops_and_shows_why(market, resource):
    rotation = make_pushed_rotation(resource)
    notifications_request([rotation.pk], wanted="set")
    market.respond_next(404, {"error": {"code": "not_found", "message": "Resource not found"}})
    assert rotation_notification_sync(rotation_id=rotation.pk) == Notification.FAILED
    rotation.refresh_from_db()
    assert "Resource not found" in rotation.notification_error
    assert rotation.notification_next_attempt_at is None
    assert notifications_requeue(now=timezone.now() + timedelta(days=1)) == []
    assert rotation.state == Rotation.State.AWAITING_REDEPLOY


@pytest.mark.parametrize("template", ["{secret_value}", "{resource.__class__}", "{0}"])
def test_a_template_with_an_unknown_placeholder_fails_without_calling_vercel(
    market, resource, settings, template
):
    settings.VERCEL_NOTIFICATION_MESSAGE = f"see {template}"
    rotation = make_pushed_rotation(resource)
    notifications_request([rotation.pk], wanted="set")
    assert rotation_notification_sync(rotation_id=rotation.pk) == Notification.FAILED
    rotation.refresh_from_db()
    assert "VERCEL_NOTIFICATION_MESSAGE" in rotation.notification_error
    assert market.requests == []


def test_a_clear_asked_while_the_set_waits_wins(market, resource):
    rotation = make_pushed_rotation(resource)
    notifications_request([rotation.pk], wanted="set")
    notifications_request([rotation.pk], wanted="clear")
    assert rotation_notification_sync(rotation_id=rotation.pk) == Notification.CLEARED
    assert [r.body for r in market.requests] == [{"notification": None}]
