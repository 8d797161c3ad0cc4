"""Rotate and push: request, prepare, push, cancel and retry rotations. The rules live here.

Lifecycle: requested -> preparing (pending version sealed) -> pushing -> awaiting_redeploy,
or failed (pending version kept, retry is one call). Every step writes its audit event in
the same transaction; refusals are audited in their own transaction and then raised as
`RotationRefused`, so callers must not wrap these functions in a transaction they roll back.

Heartbeat: `state_changed_at` is also touched when a push attempt starts and when the sweeper
re-queues a rotation, so "stuck" means "nobody touched it for longer than a task may live".
A rotation waiting for a transient error to pass stays `pushing` with `next_attempt_at` set.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from rotation import vercel
from rotation.audit import AuditAction, audit_record
from rotation.credentials import CredentialProviderError, get_provider
from rotation.crypto import CryptoError
from rotation.models import CredentialVersion, Installation, Resource, Rotation, RotationBatch
from rotation.selectors import (
    IN_CHUNK,
    Candidate,
    batch_progress,
    chunked,
    resource_ids_of,
    resources_classify,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    import requests
    from django.http import HttpRequest

__all__ = [
    "RotationPreview",
    "RotationRefused",
    "batch_cancel",
    "batch_dispatch",
    "batch_progress",
    "batch_retry_failed",
    "rotation_cancel",
    "rotation_prepare",
    "rotation_push",
    "rotation_request",
    "rotation_request_preview",
    "rotation_retry",
    "rotations_enqueue",
    "rotations_requeue_stuck",
]

logger = logging.getLogger(__name__)

State = Rotation.State
Stage = CredentialVersion.Stage
CHUNK_SIZE = 50  # rotations per task: per-task overhead is several ms (ARCHITECTURE.md)
BULK_SIZE = 500
PREVIEW_SAMPLE = 20
PREVIEW_REFUSED_CAP = 200
CANCELLABLE_STATES = (State.REQUESTED, State.PREPARING, State.FAILED)
PROCESS_TASK = "rotation.tasks.rotations_process"
FAN_OUT_TASK = "rotation.tasks.batch_fan_out"


class RotationRefused(Exception):
    """A request was refused; `message` is safe to show to staff."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


@dataclass
class RotationPreview:
    """What `rotation_request` would do, for the confirmation page."""

    count: int
    will_rotate: int
    refused: list[dict] = field(default_factory=list)  # capped at PREVIEW_REFUSED_CAP
    refused_count: int = 0
    sample: list[dict] = field(default_factory=list)  # capped at PREVIEW_SAMPLE
    emergency_allowed: bool = False


# Settings (read at call time) -------------------------------------------------------------


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def _max_attempts() -> int:
    return int(_setting("ROTATION_PUSH_MAX_ATTEMPTS", 8))


def _inline_wait_max() -> float:
    return float(_setting("ROTATION_PUSH_INLINE_WAIT_MAX", 10.0))


def _backoff_base() -> float:
    return float(_setting("ROTATION_PUSH_BACKOFF_BASE", 0.5))


def stuck_after() -> timedelta:
    """How long a rotation may sit in preparing/pushing untouched: longer than a task lives."""
    default = int(settings.Q_CLUSTER.get("timeout") or 300) + 60
    return timedelta(seconds=float(_setting("ROTATION_STUCK_AFTER_SECONDS", default)))


def chunk_budget() -> float:
    """Seconds a chunk task works before handing the rest to a new task (half the timeout)."""
    return float(settings.Q_CLUSTER.get("timeout") or 300) / 2


# Helpers --------------------------------------------------------------------------------


def rotations_enqueue(*, rotation_ids: list[int], group: str) -> None:
    """Enqueue chunk tasks of CHUNK_SIZE rotation ids (ids only)."""
    from django_q.tasks import async_task

    for chunk in chunked(rotation_ids, CHUNK_SIZE):
        async_task(PROCESS_TASK, chunk, group=group, task_name=f"{group}-{chunk[0]}")


def _enqueue_after_commit(rotation_ids: list[int], *, group: str) -> None:
    if rotation_ids:
        transaction.on_commit(
            lambda: rotations_enqueue(rotation_ids=list(rotation_ids), group=group)
        )


def _refuse(
    *,
    message: str,
    action: str,
    actor: Any,
    request: HttpRequest | None,
    outcome: str = "denied",
    **fields: Any,
) -> NoReturn:
    """Audit the refusal in its own transaction, then raise it."""
    with transaction.atomic():
        audit_record(
            action=action,
            outcome=outcome,
            actor=actor,
            request=request,
            details={"message": message, **fields.pop("details", {})},
            **fields,
        )
    raise RotationRefused(message)


def _has_perm(actor: Any, perm: str) -> bool:
    return bool(actor is not None and getattr(actor, "is_active", False) and actor.has_perm(perm))


def _locked(rotation_id: int) -> Rotation:
    return (
        Rotation.objects.select_for_update(of=("self",))
        .select_related("resource__installation", "batch")
        .get(pk=rotation_id)
    )


def _context(rotation: Rotation) -> dict[str, Any]:
    """Reason and ticket of the batch, so every system event of a rotation carries them."""
    return {"reason": rotation.batch.reason, "ticket": rotation.batch.ticket}


def _version_expire(
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


# Request ----------------------------------------------------------------------------------


def _check_request(
    *,
    actor: Any,
    reason: str,
    ticket: str,
    emergency: bool,
    count: int,
    source: str,
    request: HttpRequest | None,
) -> None:
    fields = {
        "actor": actor,
        "request": request,
        "action": AuditAction.ROTATION_REQUEST_DENIED,
        "reason": reason,
        "ticket": ticket[:100],
        "details": {"requested": count, "emergency": emergency, "source": source},
    }
    if not _has_perm(actor, "rotation.rotate_resource"):
        _refuse(message="You do not have permission to rotate credentials.", **fields)
    if emergency and not _has_perm(actor, "rotation.rotate_resource_emergency"):
        _refuse(message="You do not have permission to run emergency rotations.", **fields)
    if not reason:
        _refuse(message="A reason is required.", outcome="failure", **fields)
    if len(ticket) > 100:
        _refuse(message="The ticket may be at most 100 characters.", outcome="failure", **fields)
    if count == 0:
        _refuse(message="No resources were selected.", outcome="failure", **fields)


def rotation_request_preview(
    *,
    resource_ids: Iterable[int] | QuerySet,
    actor: Any,
    emergency: bool = False,
    request: HttpRequest | None = None,
) -> RotationPreview:
    """Which resources a request would rotate and which it would refuse (and why)."""
    ids = resource_ids_of(resource_ids)
    if not _has_perm(actor, "rotation.rotate_resource"):
        _refuse(
            message="You do not have permission to rotate credentials.",
            action=AuditAction.ROTATION_REQUEST_DENIED,
            actor=actor,
            request=request,
            details={"requested": len(ids), "preview": True},
        )
    candidates, refused = resources_classify(resource_ids=ids)
    sample_ids = [candidate.pk for candidate in candidates[:PREVIEW_SAMPLE]]
    names = dict(Resource.objects.filter(pk__in=sample_ids).values_list("pk", "name"))
    sample = [
        {
            "resource": candidate.pk,
            "vercel_id": candidate.vercel_id,
            "name": names.get(candidate.pk, ""),
            "installation": candidate.installation_vercel_id,
        }
        for candidate in candidates[:PREVIEW_SAMPLE]
    ]
    return RotationPreview(
        count=len(ids),
        will_rotate=len(candidates),
        refused=refused[:PREVIEW_REFUSED_CAP],
        refused_count=len(refused),
        sample=sample,
        emergency_allowed=_has_perm(actor, "rotation.rotate_resource_emergency"),
    )


def _rotations_insert(*, template: Rotation, candidates: list[Candidate]) -> None:
    """Rows like `template`, one per candidate, by one prepared INSERT run with executemany.

    `bulk_create` prepares every field of every row in Python, which costs seconds at 10,000
    rows; here the fields are prepared once and only `resource_id` changes.
    """
    fields = [field for field in Rotation._meta.concrete_fields if not field.primary_key]
    values = [
        field.get_db_prep_save(field.pre_save(template, add=True), connection) for field in fields
    ]
    resource_at = fields.index(Rotation._meta.get_field("resource"))
    quote = connection.ops.quote_name
    sql = "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608 (names from the model)
        quote(Rotation._meta.db_table),
        ", ".join(quote(field.column) for field in fields),
        ", ".join(["%s"] * len(fields)),
    )
    rows = []
    for candidate in candidates:
        row = list(values)
        row[resource_at] = candidate.pk
        rows.append(row)
    with connection.cursor() as cursor:
        for chunk in chunked(rows, BULK_SIZE * 4):
            cursor.executemany(sql, chunk)


def _rotations_create(
    *, batch: RotationBatch, candidates: list[Candidate], emergency: bool
) -> tuple[list[Candidate], list[dict]]:
    """Insert in bulk; on a conflict (a concurrent request) fall back to one savepoint per row."""
    now = timezone.now()

    def build(candidate: Candidate) -> Rotation:
        return Rotation(
            batch=batch, resource_id=candidate.pk, emergency=emergency, state_changed_at=now
        )

    try:
        with transaction.atomic():
            _rotations_insert(template=build(Candidate(0, "", "")), candidates=candidates)
        return candidates, []
    except IntegrityError:
        logger.info("batch %s: conflicting open rotations, inserting one by one", batch.pk)
    created: list[Candidate] = []
    refused: list[dict] = []
    for candidate in candidates:
        try:
            with transaction.atomic():
                build(candidate).save(force_insert=True)
            created.append(candidate)
        except IntegrityError:
            refused.append(
                {
                    "resource": candidate.pk,
                    "vercel_id": candidate.vercel_id,
                    "reason": "Another rotation of this resource was requested at the same time.",
                }
            )
    return created, refused


def rotation_request(
    *,
    resource_ids: Iterable[int] | QuerySet,
    actor: Any,
    reason: str,
    ticket: str = "",
    emergency: bool = False,
    source: str = RotationBatch.Source.ADMIN,
    request: HttpRequest | None = None,
) -> RotationBatch:
    """Record one batch and its rotations in bulk; the work fans out in a task after commit."""
    reason = (reason or "").strip()
    ticket = (ticket or "").strip()
    ids = resource_ids_of(resource_ids)
    _check_request(
        actor=actor,
        reason=reason,
        ticket=ticket,
        emergency=emergency,
        count=len(ids),
        source=source,
        request=request,
    )
    candidates, refused = resources_classify(resource_ids=ids)
    with transaction.atomic():
        batch = RotationBatch.objects.create(
            requested_by=actor,
            requested_by_username=actor.get_username(),
            source=source,
            reason=reason,
            ticket=ticket,
            emergency=emergency,
        )
        created, conflicts = _rotations_create(
            batch=batch, candidates=candidates, emergency=emergency
        )
        refused.extend(conflicts)
        batch.refused = refused
        batch.save(update_fields=["refused"])
        audit_record(
            action=AuditAction.ROTATION_REQUESTED,
            outcome="success" if created else "failure",
            actor=actor,
            request=request,
            batch=batch,
            reason=reason,
            ticket=ticket,
            details={
                "source": source,
                "emergency": emergency,
                "requested": len(ids),
                "rotations": len(created),
                "refused": len(refused),
                # Compliance can find every resource of the batch from this one event.
                "resources": [candidate.vercel_id for candidate in created],
            },
        )
        if created:
            batch_id = batch.pk
            transaction.on_commit(lambda: _enqueue_fan_out(batch_id))
    return batch


def _enqueue_fan_out(batch_id: int) -> None:
    from django_q.tasks import async_task

    async_task(FAN_OUT_TASK, batch_id, group=f"batch-{batch_id}", task_name=f"batch-{batch_id}")


def batch_dispatch(*, batch_id: int) -> int:
    """Enqueue the batch's waiting rotations in chunks (the fan-out task); returns the count."""
    ids = list(
        Rotation.objects.filter(batch_id=batch_id, state__in=[State.REQUESTED, State.PREPARING])
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    rotations_enqueue(rotation_ids=ids, group=f"batch-{batch_id}")
    return len(ids)


# Prepare ----------------------------------------------------------------------------------


def rotation_prepare(*, rotation_id: int) -> str:
    """Have the provider make new credentials and seal them as the pending version (idempotent).

    Returns the rotation's state afterwards; only `preparing` means "ready to push".
    """
    provider = get_provider()
    with transaction.atomic():
        rotation = _locked(rotation_id)
        if rotation.state not in (State.REQUESTED, State.PREPARING):
            return rotation.state
        resource = rotation.resource
        pending = CredentialVersion.objects.filter(resource=resource, stage=Stage.PENDING).first()
        if pending is not None and pending.rotation_id != rotation.pk:
            # Left by an earlier rotation that ended without it: never reuse another's secrets.
            _version_expire(
                provider=provider,
                resource=resource,
                version=pending,
                rotation=rotation,
                why="stale pending version",
            )
            pending = None
        if pending is None:
            try:
                secrets = provider.create(resource=resource)
                verify = getattr(provider, "verify", None)
                if verify is not None and not verify(resource=resource, secrets=secrets):
                    raise CredentialProviderError("the new credentials did not pass the check")
            except Exception as exc:
                return _prepare_fail(rotation, exc)
            pending = CredentialVersion(resource=resource, rotation=rotation, stage=Stage.PENDING)
            pending.seal(secrets)
            del secrets
            pending.save(force_insert=True)
            audit_record(
                action=AuditAction.ROTATION_PREPARED,
                resource=resource,
                rotation=rotation,
                details={"version": str(pending.pk)},
                **_context(rotation),
            )
        if rotation.state == State.REQUESTED:
            rotation.state = State.PREPARING
            rotation.state_changed_at = timezone.now()
            rotation.save(update_fields=["state", "state_changed_at"])
    return State.PREPARING


def _prepare_fail(rotation: Rotation, exc: Exception) -> str:
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
        **_context(rotation),
    )
    return State.FAILED


# Push -------------------------------------------------------------------------------------


@dataclass
class _Push:
    rotation_id: int
    pending_id: Any
    attempts: int
    installation: Installation
    resource: Resource


def _push_begin(rotation_id: int) -> _Push | None:
    """Claim the rotation for one push attempt, or None when it must not be pushed now."""
    with transaction.atomic():
        rotation = _locked(rotation_id)
        now = timezone.now()
        if rotation.state == State.PUSHING:
            due = rotation.next_attempt_at
            if due is not None and due > now:
                return None  # waiting out a transient error
            if due is None and rotation.state_changed_at > now - stuck_after():
                return None  # another worker is pushing it right now
        elif rotation.state != State.PREPARING:
            return None  # cancelled, failed, superseded or already pushed: never push
        resource = rotation.resource
        installation = resource.installation
        pending = CredentialVersion.objects.filter(
            resource=resource, stage=Stage.PENDING, rotation=rotation
        ).first()
        gone = ""
        if installation.status == Installation.Status.REMOVED:
            gone = f"Installation {installation.vercel_id} was removed on Vercel."
        elif resource.status == Resource.Status.REMOVED:
            gone = "The resource was removed."
        elif pending is None:
            gone = "The pending credentials are missing; request a new rotation."
        rotation.state = State.PUSHING
        rotation.state_changed_at = now
        rotation.next_attempt_at = None
        if gone:
            _fail_locked(rotation, status=None, code="not_pushable", message=gone)
            return None
        rotation.attempts += 1
        rotation.save(update_fields=["state", "state_changed_at", "next_attempt_at", "attempts"])
        return _Push(rotation.pk, pending.pk, rotation.attempts, installation, resource)


def _push_again(push: _Push) -> bool:
    """Start the next inline attempt, unless the rotation changed meanwhile."""
    with transaction.atomic():
        rotation = _locked(push.rotation_id)
        if rotation.state != State.PUSHING:
            return False
        rotation.attempts += 1
        rotation.state_changed_at = timezone.now()
        rotation.next_attempt_at = None
        rotation.save(update_fields=["attempts", "state_changed_at", "next_attempt_at"])
        push.attempts = rotation.attempts
        return True


def _fail_locked(rotation: Rotation, *, status: int | None, code: str, message: str) -> str:
    rotation.state = State.FAILED
    rotation.last_error = message[:1000]
    rotation.last_error_code = code[:64]
    rotation.last_error_status = status
    rotation.next_attempt_at = None
    rotation.state_changed_at = timezone.now()
    rotation.save()
    audit_record(
        action=AuditAction.ROTATION_PUSH_FAILED,
        outcome="failure",
        resource=rotation.resource,
        rotation=rotation,
        details={
            "status": status,
            "code": code,
            "error": rotation.last_error,
            "attempts": rotation.attempts,
        },
        **_context(rotation),
    )
    return State.FAILED


def _push_fail(push: _Push, *, status: int | None, code: str, message: str) -> str:
    with transaction.atomic():
        rotation = _locked(push.rotation_id)
        if rotation.state != State.PUSHING:
            return rotation.state
        return _fail_locked(rotation, status=status, code=code, message=message)


def _push_note_transient(push: _Push, exc: vercel.VercelError, *, wait: float, defer: bool) -> str:
    """Record a transient failure; when deferring, free the worker until `next_attempt_at`."""
    with transaction.atomic():
        rotation = _locked(push.rotation_id)
        if rotation.state != State.PUSHING:
            return rotation.state
        rotation.last_error = exc.message[:1000]
        rotation.last_error_code = exc.code[:64]
        rotation.last_error_status = exc.status
        fields = ["last_error", "last_error_code", "last_error_status"]
        if defer:
            rotation.next_attempt_at = timezone.now() + timedelta(seconds=wait)
            rotation.state_changed_at = timezone.now()
            fields += ["next_attempt_at", "state_changed_at"]
        rotation.save(update_fields=fields)
        audit_record(
            action=AuditAction.ROTATION_PUSH_DEFERRED,
            outcome="failure",
            resource=rotation.resource,
            rotation=rotation,
            details={
                "status": exc.status,
                "code": exc.code,
                "error": rotation.last_error,
                "attempt": rotation.attempts,
                "wait_seconds": round(wait, 3),
                "in_worker": not defer,
            },
            **_context(rotation),
        )
        return rotation.state


def _push_succeed(push: _Push) -> str:
    """pending -> current, current -> previous; then redeploy tracking begins."""
    from rotation.redeploy import rotation_redeploy_begin

    with transaction.atomic():
        rotation = _locked(push.rotation_id)
        if rotation.state != State.PUSHING:
            return rotation.state
        resource = rotation.resource
        now = timezone.now()
        versions = {
            version.stage: version
            for version in CredentialVersion.objects.select_for_update().filter(
                resource=resource, stage__in=[Stage.PENDING, Stage.CURRENT, Stage.PREVIOUS]
            )
        }
        pending = versions.get(Stage.PENDING)
        if pending is None or pending.pk != push.pending_id:
            return _fail_locked(
                rotation,
                status=None,
                code="pending_changed",
                message="The pending credentials changed during the push; retry.",
            )
        previous = versions.get(Stage.PREVIOUS)
        if previous is not None:
            # Two generations old: nothing may use it once the new set is live.
            _version_expire(
                provider=get_provider(),
                resource=resource,
                version=previous,
                rotation=rotation,
                why="superseded twice",
            )
        current = versions.get(Stage.CURRENT)
        if current is not None:
            current.stage = Stage.PREVIOUS
            current.stage_changed_at = now
            current.save(update_fields=["stage", "stage_changed_at"])
        pending.stage = Stage.CURRENT
        pending.stage_changed_at = now
        pending.save(update_fields=["stage", "stage_changed_at"])
        rotation.state = State.AWAITING_REDEPLOY
        rotation.pushed_at = now
        rotation.state_changed_at = now
        rotation.next_attempt_at = None
        rotation.last_error = ""
        rotation.last_error_code = ""
        rotation.last_error_status = None
        rotation.save()
        audit_record(
            action=AuditAction.ROTATION_PUSHED,
            resource=resource,
            rotation=rotation,
            details={
                "version": str(pending.pk),
                "previous_version": str(current.pk) if current else None,
                "attempts": rotation.attempts,
                "endpoint": resource.installation.endpoint,
            },
            **_context(rotation),
        )
        rotation_redeploy_begin(rotation=rotation)
        return rotation.state


def _wait_for(attempt: int, retry_after: float | None) -> float:
    """Honour Vercel's wait when given; else exponential backoff with jitter."""
    if retry_after is not None:
        return max(0.0, retry_after) * random.uniform(1.0, 1.1)
    return min(_backoff_base() * 2 ** (attempt - 1), 60.0) * random.uniform(0.5, 1.0)


def rotation_push(
    *,
    rotation_id: int,
    session: requests.Session | None = None,
    deadline: float | None = None,
) -> str:
    """Push the pending version to Vercel, retrying transient errors; returns the new state.

    `deadline` (a `time.monotonic()` value) bounds waiting in this worker; a longer wait is
    left to the sweeper through `next_attempt_at`.
    """
    push = _push_begin(rotation_id)
    if push is None:
        return Rotation.objects.values_list("state", flat=True).get(pk=rotation_id)
    try:
        secrets = (
            CredentialVersion.objects.select_related("resource").get(pk=push.pending_id).secrets()
        )
        token = push.installation.access_token()
    except CryptoError as exc:
        return _push_fail(push, status=None, code="decrypt_failed", message=str(exc))
    while True:
        try:
            vercel.update_resource_secrets(
                installation_id=push.installation.vercel_id,
                resource_id=push.resource.vercel_id,
                token=token,
                secrets=secrets,
                endpoint=push.installation.endpoint,
                product=push.resource.product,
                session=session,
            )
        except vercel.VercelError as exc:
            if exc.permanent:
                return _push_fail(push, status=exc.status, code=exc.code, message=exc.message)
            if push.attempts >= _max_attempts():
                message = f"Gave up after {push.attempts} attempts; last error: {exc.message}"
                return _push_fail(push, status=exc.status, code=exc.code, message=message)
            wait = _wait_for(push.attempts, exc.retry_after)
            inline = wait <= _inline_wait_max() and (
                deadline is None or time.monotonic() + wait < deadline
            )
            state = _push_note_transient(push, exc, wait=wait, defer=not inline)
            if not inline or state != State.PUSHING:
                return state
            time.sleep(wait)
            if not _push_again(push):
                return Rotation.objects.values_list("state", flat=True).get(pk=rotation_id)
        else:
            return _push_succeed(push)


# Cancel and retry -------------------------------------------------------------------------


def rotation_cancel(
    *, rotation: Rotation, actor: Any, request: HttpRequest | None = None
) -> Rotation:
    """Cancel before the push starts or after a failure; the pending version is expired."""
    if not _has_perm(actor, "rotation.cancel_rotation"):
        _refuse(
            message="You do not have permission to cancel rotations.",
            action=AuditAction.ROTATION_CANCELLED,
            actor=actor,
            request=request,
            rotation=rotation,
            resource=rotation.resource,
        )
    provider = get_provider()
    refusal = ""
    with transaction.atomic():
        locked = _locked(rotation.pk)
        if locked.state in CANCELLABLE_STATES:
            from_state = locked.state
            _cancel_locked(locked, provider=provider)
            outcome, details = "success", {"from_state": from_state}
        else:
            label = State(locked.state).label.lower()
            refusal = (
                f"Rotation #{locked.pk} is {label}; only requested, preparing or failed "
                "rotations can be cancelled."
            )
            outcome, details = "failure", {"state": locked.state, "message": refusal}
        audit_record(
            action=AuditAction.ROTATION_CANCELLED,
            outcome=outcome,
            actor=actor,
            request=request,
            resource=locked.resource,
            rotation=locked,
            details=details,
            **_context(locked),
        )
    if refusal:
        raise RotationRefused(refusal)
    return locked


def _cancel_locked(rotation: Rotation, *, provider: Any) -> None:
    pending = CredentialVersion.objects.filter(rotation=rotation, stage=Stage.PENDING).first()
    if pending is not None:
        _version_expire(
            provider=provider,
            resource=rotation.resource,
            version=pending,
            rotation=rotation,
            why="rotation cancelled",
        )
    rotation.state = State.CANCELLED
    rotation.state_changed_at = timezone.now()
    rotation.next_attempt_at = None
    rotation.save(update_fields=["state", "state_changed_at", "next_attempt_at"])


def rotation_retry(
    *, rotation: Rotation, actor: Any, request: HttpRequest | None = None
) -> Rotation:
    """Send a failed rotation round again, reusing its pending version."""
    if not _has_perm(actor, "rotation.retry_rotation"):
        _refuse(
            message="You do not have permission to retry rotations.",
            action=AuditAction.ROTATION_RETRIED,
            actor=actor,
            request=request,
            rotation=rotation,
            resource=rotation.resource,
        )
    refusal = ""
    with transaction.atomic():
        locked = _locked(rotation.pk)
        if locked.state == State.FAILED:
            _retry_locked([locked.pk])
            locked.refresh_from_db()
            outcome, details = "success", {"previous_error": rotation.last_error}
            _enqueue_after_commit([locked.pk], group=f"batch-{locked.batch_id}")
        else:
            label = State(locked.state).label.lower()
            refusal = f"Rotation #{locked.pk} is {label}; only failed rotations can be retried."
            outcome, details = "failure", {"state": locked.state, "message": refusal}
        audit_record(
            action=AuditAction.ROTATION_RETRIED,
            outcome=outcome,
            actor=actor,
            request=request,
            resource=locked.resource,
            rotation=locked,
            details=details,
            **_context(locked),
        )
    if refusal:
        raise RotationRefused(refusal)
    return locked


def _retry_locked(rotation_ids: list[int]) -> None:
    """failed -> preparing (pending kept) or requested (nothing prepared yet)."""
    with_pending = set(
        CredentialVersion.objects.filter(
            rotation_id__in=rotation_ids, stage=Stage.PENDING
        ).values_list("rotation_id", flat=True)
    )
    now = timezone.now()
    reset = {
        "attempts": 0,
        "next_attempt_at": None,
        "state_changed_at": now,
        "last_error": "",
        "last_error_code": "",
        "last_error_status": None,
    }
    Rotation.objects.filter(pk__in=[pk for pk in rotation_ids if pk in with_pending]).update(
        state=State.PREPARING, **reset
    )
    Rotation.objects.filter(pk__in=[pk for pk in rotation_ids if pk not in with_pending]).update(
        state=State.REQUESTED, **reset
    )


def batch_retry_failed(
    *, batch: RotationBatch, actor: Any, request: HttpRequest | None = None
) -> int:
    """Retry every failed rotation of the batch; returns how many."""
    if not _has_perm(actor, "rotation.retry_rotation"):
        _refuse(
            message="You do not have permission to retry rotations.",
            action=AuditAction.BATCH_RETRIED,
            actor=actor,
            request=request,
            batch=batch,
        )
    with transaction.atomic():
        ids = list(
            Rotation.objects.select_for_update()
            .filter(batch=batch, state=State.FAILED)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        for chunk in chunked(ids, IN_CHUNK):
            _retry_locked(chunk)
        audit_record(
            action=AuditAction.BATCH_RETRIED,
            actor=actor,
            request=request,
            batch=batch,
            reason=batch.reason,
            ticket=batch.ticket,
            details={"rotations": ids},
        )
        _enqueue_after_commit(ids, group=f"batch-{batch.pk}")
    return len(ids)


def batch_cancel(*, batch: RotationBatch, actor: Any, request: HttpRequest | None = None) -> int:
    """Cancel every rotation of the batch that has not started pushing; returns how many."""
    if not _has_perm(actor, "rotation.cancel_rotation"):
        _refuse(
            message="You do not have permission to cancel rotations.",
            action=AuditAction.BATCH_CANCELLED,
            actor=actor,
            request=request,
            batch=batch,
        )
    provider = get_provider()
    with transaction.atomic():
        ids = list(
            Rotation.objects.select_for_update()
            .filter(batch=batch, state__in=CANCELLABLE_STATES)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        now = timezone.now()
        for chunk in chunked(ids, IN_CHUNK):
            pendings = CredentialVersion.objects.select_related("resource").filter(
                rotation_id__in=chunk, stage=Stage.PENDING
            )
            for version in pendings:
                provider.expire(resource=version.resource, version=version)
            CredentialVersion.objects.filter(rotation_id__in=chunk, stage=Stage.PENDING).update(
                stage=Stage.EXPIRED,
                stage_changed_at=now,
                expired_at=now,
                secrets_encrypted=b"",
                key_id="",
            )
            Rotation.objects.filter(pk__in=chunk).update(
                state=State.CANCELLED, state_changed_at=now, next_attempt_at=None
            )
        audit_record(
            action=AuditAction.BATCH_CANCELLED,
            actor=actor,
            request=request,
            batch=batch,
            reason=batch.reason,
            ticket=batch.ticket,
            details={"rotations": ids},
        )
    return len(ids)


# Sweeper ----------------------------------------------------------------------------------


def _queue_is_empty() -> bool:
    from django_q.brokers import get_broker

    try:
        return get_broker().queue_size() == 0
    except Exception:  # a broker that cannot count: assume tasks may be lost
        logger.warning("sweeper: cannot read the broker's queue size")
        return True


def rotations_requeue_stuck(*, now: Any = None) -> list[int]:
    """Re-queue rotations whose task was lost or whose retry is due; returns their ids.

    - pushing with `next_attempt_at` due: waiting out a transient error, now due (at most once
      per `stuck_after()` while the task waits in the queue);
    - preparing/pushing untouched for longer than a task may live: the worker died;
    - requested for longer than that while the queue is empty: the task was lost (a long
      queue may legitimately hold them, so then they are left alone).
    """
    now = now or timezone.now()
    stale = now - stuck_after()
    with transaction.atomic():
        # Deferring sets state_changed_at before next_attempt_at; re-queueing sets it after.
        due = Rotation.objects.filter(state=State.PUSHING, next_attempt_at__lte=now).filter(
            Q(state_changed_at__lt=F("next_attempt_at")) | Q(state_changed_at__lte=stale)
        )
        dead = Rotation.objects.filter(
            state__in=[State.PREPARING, State.PUSHING],
            next_attempt_at__isnull=True,
            state_changed_at__lte=stale,
        )
        ids = set(due.values_list("pk", flat=True)) | set(dead.values_list("pk", flat=True))
        if _queue_is_empty():
            ids |= set(
                Rotation.objects.filter(
                    state=State.REQUESTED, state_changed_at__lte=stale
                ).values_list("pk", flat=True)
            )
        ids_sorted = sorted(ids)
        for chunk in chunked(ids_sorted, IN_CHUNK):
            # Dead pushes become due now, so `_push_begin` accepts them.
            Rotation.objects.filter(
                pk__in=chunk, state=State.PUSHING, next_attempt_at__isnull=True
            ).update(next_attempt_at=now)
            Rotation.objects.filter(pk__in=chunk).update(state_changed_at=now)
        if ids_sorted:
            audit_record(
                action=AuditAction.ROTATION_REQUEUED,
                details={"rotations": ids_sorted},
            )
        _enqueue_after_commit(ids_sorted, group="sweeper")
    return ids_sorted
