"""The audit event: append-only and hash-chained; written only by `rotation.audit`."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


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
