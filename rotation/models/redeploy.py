"""Redeploy tracking: projects to wait for, webhook deliveries seen, reminders planned."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from rotation.models.rotations import Rotation


class RedeployCheck(models.Model):
    """One project connected at push time, and whether it has redeployed since the push."""

    class Status(models.TextChoices):
        WAITING = "waiting", "Waiting for a deployment"
        REDEPLOYED = "redeployed", "Redeployed after the push"
        CONFIRMED = "confirmed", "Customer confirmed (staff)"
        DISCONNECTED = "disconnected", "Disconnected from the resource"

    rotation = models.ForeignKey(Rotation, on_delete=models.CASCADE, related_name="redeploy_checks")
    project_id = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status, default=Status.WAITING)
    connected_at = models.DateTimeField(null=True, blank=True)
    deployment_id = models.CharField(max_length=64, blank=True)
    deployment_target = models.CharField(max_length=32, blank=True)
    # When Vercel says the deployment happened (the event's createdAt), not when we heard.
    deployed_at = models.DateTimeField(null=True, blank=True)
    event_id = models.CharField(max_length=128, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["rotation_id", "project_id"]
        constraints = [
            models.UniqueConstraint(fields=["rotation", "project_id"], name="redeploy_check_unique")
        ]

    def __str__(self) -> str:
        return f"{self.rotation_id} {self.project_id} {self.status}"


class WebhookEvent(models.Model):
    """A Vercel webhook delivery, recorded once per event id (redeliveries are ignored)."""

    # No "failed": a handler that fails rolls its delivery back, so Vercel's redelivery
    # retries it; only handled deliveries are recorded.
    class Status(models.TextChoices):
        PROCESSED = "processed", "Processed"
        IGNORED = "ignored", "Ignored"

    event_id = models.CharField(max_length=128, unique=True)
    type = models.CharField(max_length=64, db_index=True)
    occurred_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    deployment_id = models.CharField(max_length=64, blank=True, db_index=True)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status, default=Status.PROCESSED)
    result = models.TextField(blank=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class Reminder(models.Model):
    """A reminder planned at push time; the (rotation, step) pair is sent at most once."""

    class Kind(models.TextChoices):
        CUSTOMER = "customer", "Customer reminder"
        ESCALATION = "escalation", "Escalation to staff"

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed (will retry)"
        SKIPPED = "skipped", "Skipped"
        CANCELLED = "cancelled", "Cancelled"

    rotation = models.ForeignKey(Rotation, on_delete=models.CASCADE, related_name="reminders")
    step = models.CharField(max_length=32)
    kind = models.CharField(max_length=16, choices=Kind)
    due_at = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status, default=Status.SCHEDULED)
    attempts = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    recipients = models.TextField(blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["due_at"]
        constraints = [
            models.UniqueConstraint(fields=["rotation", "step"], name="reminder_once_per_step")
        ]
        indexes = [models.Index(fields=["status", "due_at"])]

    def __str__(self) -> str:
        return f"{self.rotation_id} {self.step} {self.status}"
