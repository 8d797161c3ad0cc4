"""Prepare: the credential provider makes new credentials, sealed as the pending version.

A chunk of rotations is prepared in one transaction; audit events stay per rotation.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from rotation.audit import AuditAction, audit_context, audit_record, audit_record_many
from rotation.models import CredentialVersion, Rotation
from rotation.providers import CredentialProviderError, get_provider
from rotation.providers.retirement import version_expire
from rotation.services.enqueue import rotations_enqueue
from rotation.services.locks import rotations_lock

logger = logging.getLogger(__name__)
State = Rotation.State
Stage = CredentialVersion.Stage


def batch_dispatch(*, batch_id: int) -> int:
    """Enqueue the batch's waiting rotations in chunks (the fan-out task); returns the count."""
    ids = list(
        Rotation.objects.filter(batch_id=batch_id, state__in=[State.REQUESTED, State.PREPARING])
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    rotations_enqueue(rotation_ids=ids, group=f"batch-{batch_id}")
    return len(ids)


def rotations_prepare(*, rotation_ids: list[int]) -> dict[int, str]:
    """Seal a pending version for each rotation that lacks one (idempotent); returns states.

    `preparing` means "ready to push"; other states are left as they are.
    """
    provider = get_provider()
    with transaction.atomic():
        rotations = rotations_lock(rotation_ids)
        states = {rotation.pk: rotation.state for rotation in rotations}
        todo = [r for r in rotations if r.state in (State.REQUESTED, State.PREPARING)]
        if not todo:
            return states
        pendings = {
            version.resource_id: version
            for version in CredentialVersion.objects.filter(
                resource_id__in=[rotation.resource_id for rotation in todo], stage=Stage.PENDING
            )
        }
        created: list[tuple[Rotation, CredentialVersion]] = []
        for rotation in todo:
            pending = pendings.get(rotation.resource_id)
            if pending is not None and pending.rotation_id != rotation.pk:
                # Left by an earlier rotation that ended without it: never reuse another's.
                version_expire(
                    provider=provider,
                    resource=rotation.resource,
                    version=pending,
                    rotation=rotation,
                    why="stale pending version",
                )
                pending = None
            if pending is None:
                version = _create_version(provider, rotation)
                if version is None:
                    states[rotation.pk] = State.FAILED
                    continue
                created.append((rotation, version))
            states[rotation.pk] = State.PREPARING
        CredentialVersion.objects.bulk_create([version for _, version in created])
        started = [
            r.pk for r in todo if r.state == State.REQUESTED and states[r.pk] == State.PREPARING
        ]
        Rotation.objects.filter(pk__in=started).update(
            state=State.PREPARING, state_changed_at=timezone.now()
        )
        # Last: on PostgreSQL the audit chain's lock is held from here to the commit.
        audit_record_many(
            {
                "action": AuditAction.ROTATION_PREPARED,
                "resource": rotation.resource,
                "rotation": rotation,
                "details": {"version": str(version.pk)},
                **audit_context(rotation),
            }
            for rotation, version in created
        )
    return states


def _create_version(provider: Any, rotation: Rotation) -> CredentialVersion | None:
    """A sealed, unsaved pending version; None after recording the provider's failure."""
    resource = rotation.resource
    try:
        secrets = provider.create(resource=resource)
        verify = getattr(provider, "verify", None)
        if verify is not None and not verify(resource=resource, secrets=secrets):
            raise CredentialProviderError("the new credentials did not pass the check")
    except Exception as exc:
        _prepare_fail(rotation, exc)
        return None
    version = CredentialVersion(resource=resource, rotation=rotation, stage=Stage.PENDING)
    version.seal(secrets)
    return version


def _prepare_fail(rotation: Rotation, exc: Exception) -> None:
    message = f"Credential provider: {exc}"[:500]
    logger.warning("rotation %s: provider failed (%s)", rotation.pk, type(exc).__name__)
    rotation.state = State.FAILED
    rotation.last_error = message
    rotation.last_error_code = "provider_error"
    rotation.last_error_status = None
    rotation.state_changed_at = timezone.now()
    rotation.save(
        update_fields=[
            "state",
            "last_error",
            "last_error_code",
            "last_error_status",
            "state_changed_at",
        ]
    )
    audit_record(
        action=AuditAction.ROTATION_PREPARE_FAILED,
        outcome="failure",
        resource=rotation.resource,
        rotation=rotation,
        details={"error": message},
        **audit_context(rotation),
    )


def rotation_prepare(*, rotation_id: int) -> str:
    """`rotations_prepare` for one rotation; returns its state afterwards."""
    states = rotations_prepare(rotation_ids=[rotation_id])
    if rotation_id not in states:
        raise Rotation.DoesNotExist(f"rotation {rotation_id} does not exist")
    return states[rotation_id]
