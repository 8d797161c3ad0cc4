"""Stored webhook deliveries are pruned after WEBHOOK_EVENT_RETENTION_DAYS, a bounded number
per tick."""

from datetime import timedelta

import pytest
from django.utils import timezone

from rotation.models import WebhookEvent
from rotation.redeploy import events
from rotation.tasks_redeploy import redeploy_tick


def deliveries(count: int, *, age_days: float, prefix: str) -> None:
    received = timezone.now() - timedelta(days=age_days)
    WebhookEvent.objects.bulk_create(
        WebhookEvent(event_id=f"{prefix}{n}", type="deployment.succeeded", received_at=received)
        for n in range(count)
    )


@pytest.mark.django_db
def test_the_tick_prunes_deliveries_past_retention_in_bounded_batches(settings, monkeypatch):
    settings.WEBHOOK_EVENT_RETENTION_DAYS = 30
    monkeypatch.setattr(events, "PRUNE_BATCH", 10)
    monkeypatch.setattr(events, "PRUNE_BATCHES_PER_CALL", 3)
    deliveries(45, age_days=31, prefix="old")
    deliveries(5, age_days=29, prefix="recent")
    assert redeploy_tick()["webhook_events_pruned"] == 30  # 3 batches of 10, then the next tick
    assert WebhookEvent.objects.count() == 20
    assert redeploy_tick()["webhook_events_pruned"] == 15
    assert redeploy_tick()["webhook_events_pruned"] == 0
    assert sorted(WebhookEvent.objects.values_list("event_id", flat=True)) == [
        f"recent{n}" for n in range(5)
    ]
    settings.WEBHOOK_EVENT_RETENTION_DAYS = 7
    assert redeploy_tick()["webhook_events_pruned"] == 5
