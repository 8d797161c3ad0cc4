"""Roll back: re-push the previous credentials while they still work."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from rotation import vercel
from rotation.audit import (
    AuditAction,
    MaybeActor,
    Origin,
    RotationRefused,
    actor_may,
    audit_record,
    refuse,
)
from rotation.error_text import error_text
from rotation.models import AuditEvent, CredentialVersion, Rotation
from rotation.providers import get_provider
from rotation.redeploy.reminders import reminders_cancel_open

State = Rotation.State


def rotation_rollback(
    *, rotation: Rotation, actor: MaybeActor, reason: str, origin: Origin | None = None
) -> Rotation:
    """Re-push the previous (still valid) credentials, make them current, expire the newer."""
    reason = (reason or "").strip()
    if not actor_may(actor, "rotation.rollback_rotation"):
        refuse(
            message="You may not roll back rotations.",
            action=AuditAction.ROTATION_ROLLED_BACK,
            actor=actor,
            origin=origin,
            resource=rotation.resource,
            rotation=rotation,
        )
    if not reason:
        refuse(
            message="A reason is required to roll back.",
            action=AuditAction.ROTATION_ROLLED_BACK,
            outcome="failure",
            actor=actor,
            origin=origin,
            resource=rotation.resource,
            rotation=rotation,
        )
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
        if rotation.state not in Rotation.WAITING_STATES:
            raise RotationRefused(
                f"Rotation #{rotation.pk} is {rotation.get_state_display().lower()}; only a "
                "rotation waiting for redeploys can be rolled back (the old credentials must "
                "still work)."
            )
        versions = CredentialVersion.objects.select_for_update().filter(resource=resource)
        previous = versions.filter(stage=CredentialVersion.Stage.PREVIOUS).first()
        newer = versions.filter(stage=CredentialVersion.Stage.CURRENT).first()
        if previous is None or not previous.secrets_encrypted:
            raise RotationRefused(
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
            failure = error_text(exc)
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
                    expiry_error = error_text(exc)
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
            reminders_cancel_open(rotation_ids=[rotation.pk])
            audit_record(
                action=AuditAction.ROTATION_ROLLED_BACK,
                actor=actor,
                origin=origin,
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
            origin=origin,
            resource=rotation.resource,
            rotation=rotation,
            reason=reason,
            details={"error": failure},
        )
    raise RotationRefused(f"Roll back failed, nothing changed: {failure}")
