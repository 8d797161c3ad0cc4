"""Retiring a credential version: revoke it at the provider, then forget its ciphertext."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from rotation.audit import AuditAction, audit_record
from rotation.models import CredentialVersion, Resource
from rotation.providers import CredentialProvider


def version_expire(
    *,
    provider: CredentialProvider,
    resource: Resource,
    version: CredentialVersion,
    rotation: Any,
    why: str,
) -> None:
    """Revoke a version at the provider, then forget its ciphertext."""
    provider.expire(resource=resource, version=version)
    now = timezone.now()
    version.stage = CredentialVersion.Stage.EXPIRED
    version.stage_changed_at = now
    version.expired_at = now
    version.wipe()
    version.save(
        update_fields=["stage", "stage_changed_at", "expired_at", "secrets_encrypted", "key_id"]
    )
    audit_record(
        action=AuditAction.CREDENTIALS_EXPIRED,
        resource=resource,
        rotation=rotation,
        details={"version": str(version.pk), "why": why},
    )
