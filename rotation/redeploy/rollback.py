"""Roll back: re-push the previous credentials while they still work."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from rotation.audit import AuditAction, audit_record
from rotation.models import (
    AuditEvent,
    CredentialVersion,
    Reminder,
    Rotation,
)

if TYPE_CHECKING:
    from django.http import HttpRequest

from rotation.redeploy.tracking import (
    WAITING_STATES,
    RedeployRefused,
    State,
    short_error,
)
from rotation.services.common import refuse


def rotation_rollback(
    *, rotation: Rotation, actor: Any, reason: str, request: HttpRequest | None = None
) -> Rotation:
    """Re-push the previous (still valid) credentials, make them current, expire the newer."""
    from rotation import vercel
    from rotation.credentials import get_provider

    reason = (reason or "").strip()
    if not actor.has_perm("rotation.rollback_rotation"):
        refuse(
            message="You may not roll back rotations.",
            action=AuditAction.ROTATION_ROLLED_BACK,
            actor=actor,
            request=request,
            resource=rotation.resource,
            rotation=rotation,
            error=RedeployRefused,
        )
    if not reason:
        raise RedeployRefused("A reason is required to roll back.")
    failure = ""
    with transaction.atomic():
        # The row lock keeps the expiry task away until the rollback is done.
        rotation = (
            Rotation.objects.select_for_update()
            .select_related("resource__installation")
            .get(pk=rotation.pk)
        )
        resource = rotation.resource
        installation = resource.installation
        if rotation.state not in WAITING_STATES:
            raise RedeployRefused(
                f"Rotation #{rotation.pk} is {rotation.get_state_display().lower()}; only a "
                "rotation waiting for redeploys can be rolled back (the old credentials must "
                "still work)."
            )
        versions = CredentialVersion.objects.select_for_update().filter(resource=resource)
        previous = versions.filter(stage=CredentialVersion.Stage.PREVIOUS).first()
        newer = versions.filter(stage=CredentialVersion.Stage.CURRENT).first()
        if previous is None or not previous.secrets_encrypted:
            raise RedeployRefused(
                f"Rotation #{rotation.pk} has no previous credentials to restore."
            )
        try:
            # Reference: https://vercel.com/docs/rest-api/reference/endpoints/marketplace/update-resource-secrets
            vercel.update_resource_secrets(
                installation_id=installation.vercel_id,
                resource_id=resource.vercel_id,
                token=installation.access_token(),
                secrets=previous.secrets(),
                endpoint=installation.endpoint,
                product=resource.product,
            )
        except Exception as exc:  # VercelError or CryptoError: refuse, nothing changed
            failure = short_error(exc)
        if not failure:
            now = timezone.now()
            expiry_error = ""
            if newer is not None:
                newer.stage = CredentialVersion.Stage.EXPIRED
                newer.stage_changed_at = now
                newer.save(update_fields=["stage", "stage_changed_at"])
            previous.stage = CredentialVersion.Stage.CURRENT
            previous.stage_changed_at = now
            previous.save(update_fields=["stage", "stage_changed_at"])
            if newer is not None:
                try:
                    get_provider().expire(resource=resource, version=newer)
                    newer.expired_at = now
                    newer.wipe()
                    newer.save(update_fields=["expired_at", "secrets_encrypted", "key_id"])
                except Exception as exc:  # keep the newer set valid and visible
                    expiry_error = short_error(exc)
                    newer.stage = CredentialVersion.Stage.PREVIOUS
                    newer.save(update_fields=["stage"])
            rotation.state = State.ROLLED_BACK
            rotation.state_changed_at = now
            rotation.next_attempt_at = None
            rotation.last_error = (
                f"Rolled back; expiring the newer credentials failed: {expiry_error}"
                if expiry_error
                else ""
            )
            rotation.save(
                update_fields=["state", "state_changed_at", "next_attempt_at", "last_error"]
            )
            Reminder.objects.filter(
                rotation=rotation, status__in=[Reminder.Status.SCHEDULED, Reminder.Status.FAILED]
            ).update(status=Reminder.Status.CANCELLED)
            audit_record(
                action=AuditAction.ROTATION_ROLLED_BACK,
                actor=actor,
                request=request,
                resource=resource,
                rotation=rotation,
                reason=reason,
                details={
                    "restored_version": str(previous.pk),
                    "newer_version": str(newer.pk) if newer else None,
                    "newer_expired": bool(newer) and not expiry_error,
                    "expiry_error": expiry_error,
                },
            )
            return rotation
    with transaction.atomic():
        audit_record(
            action=AuditAction.ROTATION_ROLLED_BACK,
            outcome=AuditEvent.Outcome.FAILURE,
            actor=actor,
            request=request,
            resource=rotation.resource,
            rotation=rotation,
            reason=reason,
            details={"error": failure},
        )
    raise RedeployRefused(f"Roll back failed, nothing changed: {failure}")
