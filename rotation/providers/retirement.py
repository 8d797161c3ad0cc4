"""Retiring a credential version: expire it at the provider, then forget its ciphertext.

The one implementation that prepare, push, cancel, rollback and expiry share. A state change
takes a version out of use by marking it `retiring` inside its own short transaction
(`versions_mark_retiring`). After the commit, `versions_retire` claims each retiring version
with a lease (so two workers never call the provider for the same version at once), calls
the provider outside any transaction, and records the outcome in another short transaction.
A failure leaves the version retiring, visible and audited; `versions_retire_due` (run by
the redeploy tick) tries again, as it does for a worker that died after the provider call.
Providers' `expire` is idempotent, so calling it again for the same version is safe.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from rotation.audit import AuditAction, audit_record
from rotation.crypto import CryptoError
from rotation.error_text import error_text
from rotation.models import AuditEvent, CredentialVersion, Rotation
from rotation.providers import CredentialProvider, get_provider
from rotation.redaction import secret_values

logger = logging.getLogger(__name__)
Stage = CredentialVersion.Stage
State = Rotation.State

# Prefix of the retiring rotation's `last_error` while the provider keeps failing.
RETIRE_FAILED = "Expiring old credentials at the provider failed"
# In these states `last_error` tells staff why the push failed or waits: never overwrite it.
PIPELINE_STATES = (State.REQUESTED, State.PREPARING, State.PUSHING, State.FAILED)
# Versions retried per tick: a partner backend that is down costs one timeout per version.
RETIRE_DUE_MAX = 100
RETIRE_TASK = "rotation.tasks_redeploy.versions_retire_task"
_MARK_FIELDS = ["stage", "stage_changed_at", "retire_reason", "retired_by", "retire_lease_until"]


@dataclass
class Retirement:
    """What `versions_retire` did with each version it was given."""

    expired: list[uuid.UUID] = field(default_factory=list)
    failed: dict[uuid.UUID, str] = field(default_factory=dict)  # version -> error text
    skipped: list[uuid.UUID] = field(default_factory=list)  # done already, or another's lease


def versions_mark_retiring(
    *, by_rotation: Mapping[int, CredentialVersion], why: str
) -> list[uuid.UUID]:
    """Take versions out of use inside the caller's (locking) transaction; returns their ids.

    `by_rotation` maps the rotation whose change retires a version to that version. Hand the
    ids to `versions_retire_after_commit` in the same transaction.
    """
    now = timezone.now()
    versions = list(by_rotation.values())
    for rotation_id, version in by_rotation.items():
        version.stage = Stage.RETIRING
        version.stage_changed_at = now
        version.retire_reason = why[:64]
        version.retired_by_id = rotation_id
        version.retire_lease_until = None
    CredentialVersion.objects.bulk_update(versions, _MARK_FIELDS)
    return [version.pk for version in versions]


def versions_retire_after_commit(version_ids: list[uuid.UUID]) -> None:
    """`versions_retire` once the caller's transaction commits: never under its locks."""
    if version_ids:
        transaction.on_commit(partial(versions_retire, version_ids=list(version_ids)))


def versions_retire_queue_after_commit(version_ids: list[uuid.UUID]) -> None:
    """`versions_retire` in a task once the caller's transaction commits: for staff requests,
    which must not wait for one provider call per version (the task takes ids only)."""
    if version_ids:
        ids = [str(version_id) for version_id in version_ids]
        transaction.on_commit(partial(async_task, RETIRE_TASK, ids, group="retire"))


def versions_retire(*, version_ids: Iterable[uuid.UUID]) -> Retirement:
    """Expire retiring versions at the provider and wipe them. Call outside any transaction."""
    outcome = Retirement()
    providers: dict[str, CredentialProvider] = {}
    for version_id in version_ids:
        version = _claim(version_id)
        if version is None:
            outcome.skipped.append(version_id)
            continue
        product = version.resource.product
        try:
            provider = providers.get(product) or providers.setdefault(
                product, get_provider(product)
            )
            provider.expire(resource=version.resource, version=version)
        except Exception as exc:  # the partner's backend: stays visible, tried again later
            outcome.failed[version.pk] = _record_failure(version, exc)
            continue
        if _record_expired(version):
            outcome.expired.append(version.pk)
        else:
            outcome.skipped.append(version.pk)
    return outcome


def versions_retire_due(*, limit: int = RETIRE_DUE_MAX) -> int:
    """Retry versions left retiring (a failure, or a worker that died); returns how many expired."""
    now = timezone.now()
    due = (
        CredentialVersion.objects.filter(stage=Stage.RETIRING)
        .filter(Q(retire_lease_until__isnull=True) | Q(retire_lease_until__lte=now))
        .order_by("stage_changed_at")
        .values_list("pk", flat=True)
    )
    return len(versions_retire(version_ids=list(due[:limit])).expired)


def _claim(version_id: uuid.UUID) -> CredentialVersion | None:
    """Lease one retiring version for the provider call (one autocommitted UPDATE)."""
    now = timezone.now()
    # Longer than a task may live (ROTATION_STUCK_AFTER_SECONDS): a holder past it is dead.
    lease = now + timedelta(seconds=settings.ROTATION_STUCK_AFTER_SECONDS)
    claimed = (
        CredentialVersion.objects.filter(pk=version_id, stage=Stage.RETIRING)
        .filter(Q(retire_lease_until__isnull=True) | Q(retire_lease_until__lte=now))
        .update(retire_lease_until=lease)
    )
    if not claimed:
        return None
    return CredentialVersion.objects.select_related(
        "resource__installation", "retired_by__batch"
    ).get(pk=version_id)


def _record_expired(version: CredentialVersion) -> bool:
    """Stage expired, ciphertext wiped, audited; False when another worker recorded it."""
    now = timezone.now()
    version.wipe()
    with transaction.atomic():
        done = CredentialVersion.objects.filter(pk=version.pk, stage=Stage.RETIRING).update(
            stage=Stage.EXPIRED,
            stage_changed_at=now,
            expired_at=now,
            secrets_encrypted=version.secrets_encrypted,
            key_id=version.key_id,
            retire_lease_until=None,
        )
        if not done:
            return False
        if version.retired_by_id is not None:
            Rotation.objects.filter(
                pk=version.retired_by_id, last_error__startswith=RETIRE_FAILED
            ).update(last_error="")
        audit_record(
            action=AuditAction.CREDENTIALS_EXPIRED,
            resource=version.resource,
            rotation=version.retired_by,
            details={"version": str(version.pk), "why": version.retire_reason},
        )
    return True


def _values_of(version: CredentialVersion) -> list[str]:
    """The version's values, masked in a provider's error that may echo them."""
    try:
        return secret_values(version.secrets())
    except CryptoError:
        return []


def _record_failure(version: CredentialVersion, exc: Exception) -> str:
    """Keep the version retiring until the retry time; show and audit why."""
    error = error_text(exc, secrets=_values_of(version))
    retry_at = timezone.now() + timedelta(minutes=settings.ROTATION_EXPIRE_RETRY_MINUTES)
    logger.warning("credential version %s: expiry failed (%s)", version.pk, type(exc).__name__)
    with transaction.atomic():
        CredentialVersion.objects.filter(pk=version.pk, stage=Stage.RETIRING).update(
            retire_lease_until=retry_at
        )
        if version.retired_by_id is not None:
            Rotation.objects.filter(pk=version.retired_by_id).exclude(
                state__in=PIPELINE_STATES
            ).exclude(state__in=Rotation.WAITING_STATES, rollback_queued_at__isnull=False).update(
                last_error=f"{RETIRE_FAILED}: {error}"[:1000]
            )
        audit_record(
            action=AuditAction.CREDENTIALS_EXPIRED,
            outcome=AuditEvent.Outcome.FAILURE,
            resource=version.resource,
            rotation=version.retired_by,
            details={
                "version": str(version.pk),
                "why": version.retire_reason,
                "error": error,
                "retry_at": retry_at.isoformat(),
            },
        )
    return error
