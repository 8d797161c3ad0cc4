"""What the rotation services share: the refusal, settings, locking, enqueueing, expiry."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from rotation.audit import AuditAction, audit_record
from rotation.models import CredentialVersion, Resource, Rotation
from rotation.selectors import chunked

if TYPE_CHECKING:
    from django.http import HttpRequest

logger = logging.getLogger("rotation.services")

State = Rotation.State
Stage = CredentialVersion.Stage
CHUNK_SIZE = 50  # rotations per task: per-task overhead is several ms (ARCHITECTURE.md)
BULK_SIZE = 500
PROCESS_TASK = "rotation.tasks.rotations_process"
FAN_OUT_TASK = "rotation.tasks.batch_fan_out"


class RotationRefused(Exception):
    """A request was refused; `message` is safe to show to staff."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


# Settings (read at call time) -------------------------------------------------------------


def setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def max_attempts() -> int:
    return int(setting("ROTATION_PUSH_MAX_ATTEMPTS", 8))


def inline_wait_max() -> float:
    return float(setting("ROTATION_PUSH_INLINE_WAIT_MAX", 10.0))


def backoff_base() -> float:
    return float(setting("ROTATION_PUSH_BACKOFF_BASE", 0.5))


def stuck_after() -> timedelta:
    """How long a rotation may sit in preparing/pushing untouched: longer than a task lives."""
    default = int(settings.Q_CLUSTER.get("timeout") or 300) + 60
    return timedelta(seconds=float(setting("ROTATION_STUCK_AFTER_SECONDS", default)))


def chunk_budget() -> float:
    """Seconds a chunk task works before handing the rest to a new task (half the timeout)."""
    return float(settings.Q_CLUSTER.get("timeout") or 300) / 2


# Helpers --------------------------------------------------------------------------------


def rotations_enqueue(*, rotation_ids: list[int], group: str) -> None:
    """Enqueue chunk tasks of CHUNK_SIZE rotation ids (ids only)."""
    from django_q.tasks import async_task

    for chunk in chunked(rotation_ids, CHUNK_SIZE):
        async_task(PROCESS_TASK, chunk, group=group, task_name=f"{group}-{chunk[0]}")


def enqueue_after_commit(rotation_ids: list[int], *, group: str) -> None:
    if rotation_ids:
        transaction.on_commit(
            lambda: rotations_enqueue(rotation_ids=list(rotation_ids), group=group)
        )


def refuse(
    *,
    message: str,
    action: str,
    actor: Any,
    request: HttpRequest | None,
    outcome: str = "denied",
    error: type[RotationRefused] = RotationRefused,
    **fields: Any,
) -> NoReturn:
    """Audit the refusal in its own transaction, then raise it (as `error`)."""
    with transaction.atomic():
        audit_record(
            action=action,
            outcome=outcome,
            actor=actor,
            request=request,
            details={"message": message, **fields.pop("details", {})},
            **fields,
        )
    raise error(message)


def has_perm(actor: Any, perm: str) -> bool:
    return bool(actor is not None and getattr(actor, "is_active", False) and actor.has_perm(perm))


def locked(rotation_id: int) -> Rotation:
    return (
        Rotation.objects.select_for_update(of=("self",))
        .select_related("resource__installation", "batch")
        .get(pk=rotation_id)
    )


def locked_many(rotation_ids: list[int]) -> list[Rotation]:
    return list(
        Rotation.objects.select_for_update(of=("self",))
        .select_related("resource__installation", "batch")
        .filter(pk__in=rotation_ids)
        .order_by("pk")
    )


def context(rotation: Rotation) -> dict[str, Any]:
    """Reason and ticket of the batch, so every system event of a rotation carries them."""
    return {"reason": rotation.batch.reason, "ticket": rotation.batch.ticket}


def version_expire(
    *, provider: Any, resource: Resource, version: CredentialVersion, rotation: Any, why: str
) -> None:
    """Revoke a version at the provider, then forget its ciphertext."""
    provider.expire(resource=resource, version=version)
    now = timezone.now()
    version.stage = Stage.EXPIRED
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
