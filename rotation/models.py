"""Installations, resources, their credential versions, rotations and the audit trail."""

from __future__ import annotations

import json
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from rotation import crypto


class Installation(models.Model):
    """A Vercel integration configuration (`icfg_...`) of one customer team."""

    class Endpoint(models.TextChoices):
        CURRENT = "current", "Current: /v1/installations/{id}/resources/{id}/secrets"
        DEPRECATED = "deprecated", "Deprecated: …/products/{product}/resources/{id}/secrets"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        REMOVED = "removed", "Removed on Vercel"

    vercel_id = models.CharField("integration configuration id", max_length=64, unique=True)
    name = models.CharField(max_length=200, blank=True)
    team_id = models.CharField("team id", max_length=64, blank=True)
    contact_email = models.EmailField(blank=True)
    endpoint = models.CharField(
        "secrets endpoint", max_length=16, choices=Endpoint, default=Endpoint.CURRENT
    )
    status = models.CharField(max_length=16, choices=Status, default=Status.ACTIVE)
    access_token_encrypted = models.BinaryField(default=b"", editable=False)
    access_token_key_id = models.CharField(max_length=32, blank=True, editable=False)
    access_token_set_at = models.DateTimeField(null=True, blank=True, editable=False)
    removed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["vercel_id"]
        indexes = [models.Index(fields=["team_id"]), models.Index(fields=["name"])]

    def __str__(self) -> str:
        return f"{self.name or self.vercel_id} ({self.vercel_id})"

    def _token_aad(self) -> bytes:
        return crypto.associated_data("rotation_installation", self.pk, "access_token")

    @property
    def has_access_token(self) -> bool:
        return bool(self.access_token_encrypted)

    def set_access_token(self, token: str) -> None:
        """Encrypt `token` into this (saved) row; the caller saves the three token fields."""
        if not token:
            raise ValueError("the access token must not be empty")
        self.access_token_encrypted = crypto.encrypt(token.encode(), aad=self._token_aad())
        self.access_token_key_id = crypto.key_id_of(self.access_token_encrypted)
        self.access_token_set_at = timezone.now()

    def access_token(self) -> str:
        """The decrypted bearer token; raises CryptoError when it cannot be read."""
        if not self.access_token_encrypted:
            raise crypto.CryptoError(f"installation {self.vercel_id} has no access token")
        return crypto.decrypt(self.access_token_encrypted, aad=self._token_aad()).decode()


class Resource(models.Model):
    """A Marketplace resource (e.g. one database) whose secrets we push to Vercel."""

    class Status(models.TextChoices):
        READY = "ready", "Ready"
        SUSPENDED = "suspended", "Suspended"
        REMOVED = "removed", "Removed"

    installation = models.ForeignKey(
        Installation, on_delete=models.PROTECT, related_name="resources"
    )
    vercel_id = models.CharField("resource id", max_length=128)
    product = models.CharField("product id or slug", max_length=128)
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status, default=Status.READY)
    # [{"name": "DATABASE_URL", "prefix": "", "environments": ["production", ...]}]
    secret_template = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["installation_id", "vercel_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["installation", "vercel_id"], name="resource_unique_per_installation"
            )
        ]
        indexes = [
            models.Index(fields=["vercel_id"]),
            models.Index(fields=["product"]),
            models.Index(fields=["status"]),
            models.Index(fields=["name"]),
        ]
        permissions = [
            ("rotate_resource", "Can rotate credentials and push them to Vercel"),
            ("rotate_resource_emergency", "Can run emergency rotations (expire old at once)"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.vercel_id})"


class ConnectedProject(models.Model):
    """A Vercel project that uses a resource; Vercel has no API to list them."""

    class Source(models.TextChoices):
        WEBHOOK = "webhook", "Vercel webhook"
        MANUAL = "manual", "Entered by staff"
        IMPORT = "import", "Import"

    resource = models.ForeignKey(
        Resource, on_delete=models.CASCADE, related_name="connected_projects"
    )
    project_id = models.CharField(max_length=64)
    source = models.CharField(max_length=16, choices=Source, default=Source.MANUAL)
    connected_at = models.DateTimeField(default=timezone.now)
    disconnected_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["resource_id", "project_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["resource", "project_id"], name="connected_project_unique"
            )
        ]

    def __str__(self) -> str:
        return self.project_id


class CredentialVersion(models.Model):
    """One encrypted secret set of a resource; stages follow AWS Secrets Manager."""

    class Stage(models.TextChoices):
        PENDING = "pending", "Pending"
        CURRENT = "current", "Current"
        PREVIOUS = "previous", "Previous (still valid)"
        EXPIRED = "expired", "Expired"

    # A UUID known before the insert lets the ciphertext be bound to its own row.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    resource = models.ForeignKey(
        Resource, on_delete=models.PROTECT, related_name="credential_versions"
    )
    rotation = models.ForeignKey(
        "Rotation",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="credential_versions",
    )
    stage = models.CharField(max_length=16, choices=Stage, default=Stage.PENDING)
    secrets_encrypted = models.BinaryField(default=b"", editable=False)
    key_id = models.CharField(max_length=32, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    stage_changed_at = models.DateTimeField(default=timezone.now)
    expired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["resource"],
                condition=Q(stage="pending"),
                name="credential_one_pending_per_resource",
            ),
            models.UniqueConstraint(
                fields=["resource"],
                condition=Q(stage="current"),
                name="credential_one_current_per_resource",
            ),
            models.UniqueConstraint(
                fields=["resource"],
                condition=Q(stage="previous"),
                name="credential_one_previous_per_resource",
            ),
        ]
        indexes = [models.Index(fields=["resource", "stage"])]

    def __str__(self) -> str:
        return f"{self.resource_id} {self.stage} {str(self.id)[:8]}"

    def _aad(self) -> bytes:
        return crypto.associated_data("rotation_credentialversion", self.pk, "secret_set")

    def seal(self, secrets: list[dict]) -> None:
        """Encrypt the secret set (Vercel's `secrets` list) into this row."""
        payload = json.dumps(secrets, separators=(",", ":"), sort_keys=True).encode()
        self.secrets_encrypted = crypto.encrypt(payload, aad=self._aad())
        self.key_id = crypto.key_id_of(self.secrets_encrypted)

    def secrets(self) -> list[dict]:
        """The decrypted secret set; raises CryptoError when it cannot be read."""
        if not self.secrets_encrypted:
            raise crypto.CryptoError(f"credential version {self.pk} holds no secrets (wiped)")
        return json.loads(crypto.decrypt(self.secrets_encrypted, aad=self._aad()))

    def wipe(self) -> None:
        """Forget the ciphertext (after the credentials were expired at the provider)."""
        self.secrets_encrypted = b""
        self.key_id = ""


class RotationBatch(models.Model):
    """One request by staff (or Vercel) to rotate one or many resources."""

    class Source(models.TextChoices):
        ADMIN = "admin", "Admin action"
        CLI = "cli", "Command line"
        VERCEL = "vercel", "Vercel request"

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

    batch = models.ForeignKey(RotationBatch, on_delete=models.PROTECT, related_name="rotations")
    resource = models.ForeignKey(Resource, on_delete=models.PROTECT, related_name="rotations")
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
    expired_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

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
        ]
        permissions = [
            ("cancel_rotation", "Can cancel a rotation"),
            ("retry_rotation", "Can retry a failed rotation"),
            ("confirm_redeploy", "Can record a customer-confirmed redeploy"),
            ("rollback_rotation", "Can roll back a rotation"),
        ]

    def __str__(self) -> str:
        return f"Rotation #{self.pk}"


def audit_action_choices() -> list[tuple[str, str]]:
    """Callable choices, so adding an action needs no migration."""
    from rotation.audit import AuditAction

    return AuditAction.choices


class AuditEventImmutable(Exception):
    """An audit event was about to be changed or deleted; the trail is append-only."""


class AuditEventQuerySet(models.QuerySet):
    """Refuses every bulk write except inserts made by `rotation.audit.audit_record`."""

    def _refuse(self, *args, **kwargs):
        raise AuditEventImmutable("audit events are append-only: no update or delete")

    update = delete = bulk_update = bulk_create = _update = _raw_delete = _refuse


class AuditEvent(models.Model):
    """Append-only, hash-chained record of what happened; never holds a secret value."""

    class Outcome(models.TextChoices):
        SUCCESS = "success", "Success"
        FAILURE = "failure", "Failure"
        DENIED = "denied", "Denied"

    class ActorType(models.TextChoices):
        USER = "user", "User"
        SYSTEM = "system", "System (task)"
        VERCEL = "vercel", "Vercel (webhook or request)"
        ANONYMOUS = "anonymous", "Anonymous"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_type = models.CharField(max_length=16, choices=ActorType)
    actor_user_id = models.BigIntegerField(null=True, blank=True)
    actor_username = models.CharField(max_length=150, blank=True, db_index=True)
    action = models.CharField(max_length=64, choices=audit_action_choices, db_index=True)
    outcome = models.CharField(max_length=16, choices=Outcome, default=Outcome.SUCCESS)
    # Plain references (no foreign keys) so events outlive the rows they describe.
    installation_ref = models.CharField("installation", max_length=64, blank=True)
    resource_ref = models.CharField("resource", max_length=128, blank=True)
    rotation_ref = models.BigIntegerField("rotation", null=True, blank=True)
    batch_ref = models.BigIntegerField("batch", null=True, blank=True)
    reason = models.TextField(blank=True)
    ticket = models.CharField(max_length=100, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, blank=True)
    # Unique: two events can never claim the same predecessor, so the chain cannot fork.
    prev_hash = models.CharField(max_length=64, unique=True)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["installation_ref"]),
            models.Index(fields=["resource_ref"]),
            models.Index(fields=["rotation_ref"]),
            models.Index(fields=["batch_ref"]),
            models.Index(fields=["ticket"]),
            # Failures and denials are few but what reviewers look for first.
            models.Index(
                fields=["outcome", "created_at"],
                condition=~Q(outcome="success"),
                name="auditevent_unsuccessful_idx",
            ),
        ]
        permissions = [("export_auditevent", "Can export audit events")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} {self.outcome}"

    def save(self, *args, **kwargs) -> None:
        """Insert once, through `audit_record`; an existing event is never rewritten."""
        if not self._state.adding:
            raise AuditEventImmutable(f"audit event #{self.pk} is append-only")
        if not self.hash:
            raise AuditEventImmutable("write audit events with rotation.audit.audit_record")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditEventImmutable(f"audit event #{self.pk} is append-only")


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

    class Status(models.TextChoices):
        PROCESSED = "processed", "Processed"
        IGNORED = "ignored", "Ignored"
        FAILED = "failed", "Failed"

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
