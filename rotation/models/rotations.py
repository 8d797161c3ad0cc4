"""Rotation batches and rotations: who asked for what, and where each rotation stands."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from rotation.models.resources import Resource


class RotationBatch(models.Model):
    """One request by staff (or Vercel) to rotate one or many resources."""

    class Source(models.TextChoices):
        ADMIN = "admin", "Admin action"
        CLI = "cli", "Command line"
        VERCEL = "vercel", "Vercel request"
        POLICY = "policy", "Rotation policy (maximum credential age)"

    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="rotation_batches",
    )
    requested_by_username = models.CharField(max_length=150, blank=True)
    source = models.CharField(max_length=16, choices=Source, default=Source.ADMIN)
    reason = models.TextField()
    ticket = models.CharField(max_length=100, blank=True)
    emergency = models.BooleanField(default=False)
    # Resources that were asked for but refused: [{"resource": id, "reason": text}].
    refused = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "rotation batches"

    def __str__(self) -> str:
        return f"Batch #{self.pk}"


class Rotation(models.Model):
    """The rotation of one resource's credentials, from request to expiry of the old ones."""

    class Notification(models.TextChoices):
        """The warning on the resource in the customer's Vercel dashboard."""

        NONE = "", "—"
        SETTING = "setting", "Being set"
        SET = "set", "Shown to the customer"
        CLEARING = "clearing", "Being cleared"
        CLEARED = "cleared", "Cleared"
        FAILED = "failed", "Failed (see the error)"

    class State(models.TextChoices):
        REQUESTED = "requested", "Requested"
        PREPARING = "preparing", "Preparing"
        PUSHING = "pushing", "Pushing"
        AWAITING_REDEPLOY = "awaiting_redeploy", "Awaiting redeploy"
        EXPIRING = "expiring", "Expiring old credentials"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        ESCALATED = "escalated", "Escalated"
        CANCELLED = "cancelled", "Cancelled"
        ROLLED_BACK = "rolled_back", "Rolled back"

    OPEN_STATES = (
        State.REQUESTED,
        State.PREPARING,
        State.PUSHING,
        State.FAILED,
        State.AWAITING_REDEPLOY,
        State.EXPIRING,
        State.ESCALATED,
    )
    # Pushed and waiting for redeploys; the old credentials still work.
    WAITING_STATES = (State.AWAITING_REDEPLOY, State.ESCALATED)

    # No single-column indexes: (batch, state) and (resource, created_at) below lead with
    # them, and each index less makes the bulk insert of a large batch cheaper.
    batch = models.ForeignKey(
        RotationBatch, on_delete=models.PROTECT, related_name="rotations", db_index=False
    )
    resource = models.ForeignKey(
        Resource, on_delete=models.PROTECT, related_name="rotations", db_index=False
    )
    state = models.CharField(max_length=20, choices=State, default=State.REQUESTED)
    emergency = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    last_error_code = models.CharField(max_length=64, blank=True)
    last_error_status = models.PositiveSmallIntegerField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    state_changed_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(auto_now_add=True)
    pushed_at = models.DateTimeField(null=True, blank=True)
    redeploy_deadline_at = models.DateTimeField(null=True, blank=True)
    redeployed_at = models.DateTimeField(null=True, blank=True)
    # Old credentials stay valid at least until then (Vercel's delayOldSecretsExpirationHours).
    keep_old_until = models.DateTimeField(null=True, blank=True)
    # Set when Vercel asked for the rotation: Vercel redeploys the linked projects itself, so
    # the old credentials expire this long after the push (keep_old_until), not on redeploys.
    expire_old_after_push = models.DurationField(
        "old credentials expire after the push (Vercel's delay)", null=True, blank=True
    )
    expired_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # When the next planned reminder falls due: its row is made then (rotation.redeploy.reminders),
    # not at push time. None: no reminder left to make.
    next_reminder_at = models.DateTimeField(null=True, blank=True)
    # A rollback staff asked for, run by a task (rotation.services.rollback). Set while it is
    # pending, to when its task was (re-)queued; cleared when it fails. The rotation stays
    # waiting meanwhile, so the one-open-rotation constraint covers it; expiry waits for it.
    rollback_queued_at = models.DateTimeField(null=True, blank=True)
    rollback_reason = models.TextField(blank=True)
    rollback_requested_by = models.CharField(max_length=150, blank=True)
    rollback_attempts = models.PositiveIntegerField(default=0)
    # The dashboard notification (rotation.services.notifications): what it should be
    # (`notification_wanted`: set or clear), where it stands, and its retries.
    notification_state = models.CharField(
        max_length=16, choices=Notification, blank=True, default=""
    )
    notification_wanted = models.CharField(max_length=8, blank=True)
    notification_attempts = models.PositiveIntegerField(default=0)
    notification_next_attempt_at = models.DateTimeField(null=True, blank=True)
    notification_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["resource"],
                condition=Q(
                    state__in=[
                        "requested",
                        "preparing",
                        "pushing",
                        "failed",
                        "awaiting_redeploy",
                        "expiring",
                        "escalated",
                    ]
                ),
                name="rotation_one_open_per_resource",
            )
        ]
        indexes = [
            models.Index(fields=["state", "state_changed_at"]),
            models.Index(fields=["batch", "state"]),
            models.Index(fields=["resource", "created_at"]),
            # The rotation list sorted by last change, a page at a time.
            models.Index(fields=["state_changed_at"], name="rotation_state_changed_idx"),
            # The sweeper looks for lost rollback tasks among the few pending ones.
            models.Index(
                fields=["rollback_queued_at"],
                condition=Q(rollback_queued_at__isnull=False),
                name="rotation_rollback_pending_idx",
            ),
            # The redeploy tick reads the rotations whose next reminder is due.
            models.Index(
                fields=["next_reminder_at"],
                condition=Q(next_reminder_at__isnull=False),
                name="rotation_reminder_due_idx",
            ),
        ]
        permissions = [
            ("cancel_rotation", "Can cancel a rotation"),
            ("retry_rotation", "Can retry a failed rotation"),
            ("confirm_redeploy", "Can record a customer-confirmed redeploy"),
            ("rollback_rotation", "Can roll back a rotation"),
        ]

    def __str__(self) -> str:
        return f"Rotation #{self.pk}"

    @property
    def rollback_pending(self) -> bool:
        """A requested rollback has not landed or failed yet (the old credentials must stay)."""
        return self.rollback_queued_at is not None and self.state in self.WAITING_STATES
