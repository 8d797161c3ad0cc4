"""The audit event and its actions: append-only, hash-chained, written only by `rotation.audit`."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


class AuditAction(models.TextChoices):
    INSTALLATION_IMPORTED = "installation.imported", "Installation imported"
    INSTALLATION_TOKEN_REPLACED = "installation.token_replaced", "Installation token replaced"
    INSTALLATION_CHANGED = "installation.changed", "Installation changed"
    # The secrets endpoint (rotation.services.endpoints): staff or the push's fallback.
    INSTALLATION_ENDPOINT_SWITCHED = "installation.endpoint_switched", "Secrets endpoint switched"
    INSTALLATION_ENDPOINT_FELL_BACK = (
        "installation.endpoint_fallback",
        "Switched to the current endpoint after the deprecated one answered 410/404",
    )
    RESOURCE_CHANGED = "resource.changed", "Resource changed"
    POLICY_CHANGED = "policy.changed", "Rotation policy changed"
    CREDENTIAL_AGES_EXPORTED = "policy.ages_exported", "Credential ages exported"
    SECRETS_REENCRYPTED = "secrets.reencrypted", "Secrets re-encrypted"
    # Sign-in and the audit trail itself (rotation.audit.signals, rotation.admin.audit).
    AUTH_LOGIN = "auth.login", "Signed in"
    AUTH_LOGOUT = "auth.logout", "Signed out"
    AUTH_LOGIN_FAILED = "auth.login_failed", "Sign-in failed"
    AUDIT_VIEWED = "audit.viewed", "Audit trail viewed"
    AUDIT_EXPORTED = "audit.exported", "Audit trail exported"
    AUDIT_CHANGE_REFUSED = "audit.change_refused", "Change of an audit event refused"
    AUDIT_FINGERPRINTED = "audit.fingerprinted", "Fingerprint computed for an investigation"
    # Refusals and sign-in throttling (rotation.admin.refusals, rotation.audit.signals).
    ACCESS_DENIED = "admin.access_denied", "Admin page refused"
    AUTH_LOGIN_DENIED = "auth.login_denied", "Sign-in refused (account may not use the admin)"
    AUTH_LOCKED_OUT = "auth.locked_out", "Sign-in locked out after repeated failures"
    AUTH_UNLOCKED = "auth.unlocked", "Sign-in lockout lifted by a superuser"
    AUDIT_CHAIN_KEYED = "audit.chain_keyed", "Audit chain keyed (HMAC) from this event on"
    AUDIT_CHECKPOINTED = "audit.checkpointed", "Signed checkpoint of the audit chain anchored"
    # Rotate and push (rotation.services).
    ROTATION_REQUESTED = "rotation.requested", "Rotation requested"
    ROTATION_REQUEST_DENIED = "rotation.request_denied", "Rotation request refused"
    ROTATION_REQUEST_REPLAYED = (
        "rotation.request_replayed",
        "Repeated Vercel request answered again (Idempotency-Key)",
    )
    ROTATION_PREPARED = "rotation.prepared", "New credentials prepared (pending)"
    ROTATION_PREPARE_FAILED = "rotation.prepare_failed", "Preparing new credentials failed"
    ROTATION_PUSHED = "rotation.pushed", "New credentials pushed to Vercel"
    ROTATION_PUSH_DEFERRED = "rotation.push_deferred", "Push failed transiently; will retry"
    ROTATION_PUSH_FAILED = "rotation.push_failed", "Push to Vercel failed"
    ROTATION_PUSH_SKIPPED = "rotation.push_skipped", "Push skipped (rotation no longer due)"
    ROTATION_CANCELLED = "rotation.cancelled", "Rotation cancelled"
    ROTATION_RETRIED = "rotation.retried", "Failed rotation retried"
    ROTATION_REQUEUED = "rotation.requeued", "Stuck rotations re-queued by the sweeper"
    CREDENTIALS_EXPIRED = "credentials.expired", "Credential version expired at the provider"
    BATCH_RETRIED = "batch.retry_failed", "Failed rotations of a batch retried"
    BATCH_CANCELLED = "batch.cancelled", "Open rotations of a batch cancelled"
    # Redeploy tracking (rotation.redeploy, rotation.webhooks).
    WEBHOOK_RECEIVED = "webhook.received", "Vercel webhook handled"
    WEBHOOK_REFUSED = "webhook.refused", "Signed Vercel webhook refused"
    PROJECT_CONNECTED = "project.connected", "Project connected to a resource"
    PROJECT_DISCONNECTED = "project.disconnected", "Project disconnected from a resource"
    INSTALLATION_REMOVED = "installation.removed", "Installation removed on Vercel"
    REDEPLOY_STARTED = "rotation.redeploy_started", "Waiting for redeploys"
    PROJECT_REDEPLOYED = "rotation.project_redeployed", "Project redeployed after the push"
    REDEPLOY_DONE = "rotation.redeployed", "All projects redeployed"
    REDEPLOY_CONFIRMED = "rotation.redeploy_confirmed", "Customer-confirmed redeploy recorded"
    REMINDER_SENT = "rotation.reminder_sent", "Redeploy reminder sent"
    ROTATION_ESCALATED = "rotation.escalated", "Redeploy deadline passed"
    OLD_CREDENTIALS_EXPIRED = "rotation.old_expired", "Old credentials expired"
    ROTATION_STOPPED = "rotation.stopped", "Rotation stopped (installation removed)"
    ROLLBACK_REQUESTED = "rotation.rollback_requested", "Rollback requested"
    ROTATION_ROLLED_BACK = "rotation.rolled_back", "Rotation rolled back"
    # Installation access tokens (rotation.services.installation_tokens).
    TOKEN_ROTATION_REQUESTED = "installation.token_rotation_requested", "Token rotation requested"
    TOKEN_ROTATED = "installation.token_rotated", "New access token stored"
    TOKEN_VERIFIED = "installation.token_verified", "New access token checked on Vercel"
    TOKEN_OLD_REVOKED = "installation.token_old_revoked", "Old access token revoked"
    TOKEN_ROTATION_FAILED = "installation.token_rotation_failed", "Token rotation step failed"
    # Inventory check (rotation.services.inventory).
    INVENTORY_CHECKED = "inventory.checked", "Resources checked against Vercel"
    INVENTORY_RESOURCE_UPDATED = "inventory.resource_updated", "Resource updated from Vercel"
    INVENTORY_INSTALLATION_FAILED = "inventory.installation_failed", "Installation not checked"
    # Dashboard notification (rotation.services.notifications).
    NOTIFICATION_SET = "rotation.notification_set", "Dashboard notification set"
    NOTIFICATION_CLEARED = "rotation.notification_cleared", "Dashboard notification cleared"
    NOTIFICATION_FAILED = "rotation.notification_failed", "Dashboard notification failed"


def audit_action_choices() -> list[tuple[str, str]]:
    """Callable choices, so adding an action needs no migration."""
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

    class HashScheme(models.IntegerChoices):
        # Also the "v" of the hashed JSON, so an event's scheme is bound into its hash.
        SHA256 = 1, "SHA-256, unkeyed (events before the chain was keyed)"
        HMAC_SHA256 = 2, "HMAC-SHA256 under AUDIT_CHAIN_KEY"

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
    hash_scheme = models.PositiveSmallIntegerField(
        choices=HashScheme, default=HashScheme.HMAC_SHA256
    )

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
