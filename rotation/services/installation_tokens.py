"""Rotating an installation's Vercel access token (CONTRACT §7), crash-safe at every step.

Steps, each recorded (and audited) in its own short transaction, the Vercel call between
them outside any transaction: `requested` → rotate on Vercel → `rotated` (the new token is
stored encrypted as the current one, the old one kept encrypted as the previous) → one call
with the new token (list resources) → `verified` → revoke the old token, authenticated by
the new one → done (the previous token wiped). Both tokens stay stored until Vercel confirms
the revocation, so a crash anywhere leaves a working token stored; the task and the sweeper
resume at the recorded step.

A worker holds an installation's rotation under a lease (`token_rotation_lease_until`); a
worker that dies lets the lease run out and the sweeper hands the rotation to a new task.
A transient error waits (`token_rotation_next_attempt_at`); a permanent one stops with the
reason shown to staff, who may ask again to resume from the same step.

A crash between Vercel issuing a new token and our storing it leaves that token unknown to
us: it cannot be revoked by us, the stored (old) token keeps working, and the next attempt
rotates again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from rotation import vercel
from rotation.audit import AuditAction, actor_may, audit_record, refuse
from rotation.crypto import CryptoError
from rotation.models import AuditEvent, Installation, TokenRotationStep
from rotation.services.backoff import attempts_exhausted, backoff_wait
from rotation.services.timing import stuck_after

if TYPE_CHECKING:
    import requests

    from rotation.audit import MaybeActor, Origin

logger = logging.getLogger(__name__)
Step = TokenRotationStep
PERMISSION = "rotation.rotate_installation_token"
TASK = "rotation.tasks_marketplace.installation_token_rotate"
UNCONFIGURED_MESSAGE = (
    "VERCEL_CLIENT_SECRET is not set: Vercel rotates an installation's token only with the "
    "integration's client secret."
)


@dataclass
class TokenRotationRequest:
    """What a request did: installations started (or resumed) and those refused, with why."""

    started: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


def _enqueue(installation_id: int) -> None:
    async_task(TASK, installation_id, task_name=f"installation-token-{installation_id}")


def installation_tokens_rotate_request(
    *, installation_ids: list[int], actor: MaybeActor, origin: Origin | None
) -> TokenRotationRequest:
    """Start (or resume a stopped) token rotation of each installation; a task does the work."""
    if not actor_may(actor, PERMISSION):
        refuse(
            action=AuditAction.TOKEN_ROTATION_REQUESTED,
            message="You do not have permission to rotate Vercel access tokens.",
            actor=actor,
            origin=origin,
        )
    if not settings.VERCEL_CLIENT_SECRET:
        refuse(
            action=AuditAction.TOKEN_ROTATION_REQUESTED,
            message=UNCONFIGURED_MESSAGE,
            actor=actor,
            origin=origin,
            outcome=AuditEvent.Outcome.FAILURE,
        )
    result = TokenRotationRequest()
    now = timezone.now()
    username = actor.get_username() if actor is not None else ""
    with transaction.atomic():
        installations = Installation.objects.select_for_update().filter(pk__in=installation_ids)
        for installation in installations.order_by("pk"):
            reason = _why_not(installation)
            if reason:
                result.refused.append((installation.vercel_id, reason))
                continue
            resumed = installation.token_rotation_step or ""
            if not resumed:
                installation.token_rotation_step = Step.REQUESTED
            installation.token_rotation_requested_by = username
            installation.token_rotation_attempts = 0
            installation.token_rotation_error = ""
            installation.token_rotation_lease_until = None
            installation.token_rotation_next_attempt_at = now + stuck_after()
            installation.save(update_fields=_STATE_FIELDS)
            audit_record(
                action=AuditAction.TOKEN_ROTATION_REQUESTED,
                actor=actor,
                origin=origin,
                installation=installation,
                details={"resumed_at_step": resumed} if resumed else {},
            )
            transaction.on_commit(partial(_enqueue, installation.pk))
            result.started.append(installation.vercel_id)
        for vercel_id, reason in result.refused:
            audit_record(
                action=AuditAction.TOKEN_ROTATION_REQUESTED,
                outcome=AuditEvent.Outcome.FAILURE,
                actor=actor,
                origin=origin,
                installation=vercel_id,
                details={"message": reason},
            )
    return result


def _why_not(installation: Installation) -> str:
    if installation.status == Installation.Status.REMOVED:
        return "the installation was removed on Vercel"
    if not installation.has_access_token:
        return "the installation has no access token"
    if installation.token_rotation_step and installation.token_rotation_next_attempt_at:
        return "a token rotation is already running"
    return ""


_STATE_FIELDS = [
    "token_rotation_step",
    "token_rotation_requested_by",
    "token_rotation_attempts",
    "token_rotation_error",
    "token_rotation_lease_until",
    "token_rotation_next_attempt_at",
]
_TOKEN_FIELDS = [
    "access_token_encrypted",
    "access_token_key_id",
    "access_token_set_at",
    "previous_access_token_encrypted",
    "previous_access_token_key_id",
]


def _locked(installation_id: int) -> Installation:
    return Installation.objects.select_for_update().get(pk=installation_id)


def _claim(installation_id: int) -> Installation | None:
    """Take the lease, or None when nothing is due or another worker holds it."""
    now = timezone.now()
    with transaction.atomic():
        installation = _locked(installation_id)
        lease = installation.token_rotation_lease_until
        if (
            not installation.token_rotation_step
            or installation.token_rotation_next_attempt_at is None  # stopped: staff resume it
            or (lease is not None and lease > now)
        ):
            return None
        installation.token_rotation_lease_until = now + stuck_after()
        # A worker that dies is noticed by the sweeper once the lease has run out.
        installation.token_rotation_next_attempt_at = now + stuck_after()
        installation.save(update_fields=_STATE_FIELDS)
    return installation


def _audit_step(installation: Installation, action: str, details: dict | None = None) -> None:
    audit_record(
        action=action,
        installation=installation,
        actor_username=installation.token_rotation_requested_by,
        details={"step": installation.token_rotation_step, **(details or {})},
    )


def _client_secret() -> str:
    return str(settings.VERCEL_CLIENT_SECRET)


def _rotate_on_vercel(
    installation: Installation, session: requests.Session | None
) -> vercel.NewToken:
    return vercel.rotate_installation_credential(
        installation_id=installation.vercel_id,
        token=installation.access_token(),
        client_secret=_client_secret(),
        client_id=settings.VERCEL_CLIENT_ID,  # optional in Vercel's body; sent when known
        session=session,
    )


def _record_rotated(installation_id: int, new: vercel.NewToken) -> Installation:
    with transaction.atomic():
        installation = _locked(installation_id)
        if installation.token_rotation_step != Step.REQUESTED:
            raise _Superseded
        installation.keep_previous_access_token(installation.access_token())
        installation.set_access_token(new.access_token)
        installation.token_rotation_step = Step.ROTATED
        installation.save(update_fields=_TOKEN_FIELDS + _STATE_FIELDS)
        _audit_step(
            installation,
            AuditAction.TOKEN_ROTATED,
            {"key_id": installation.access_token_key_id, "expires_in": new.expires_in},
        )
    return installation


def _check_new_token(installation: Installation, session: requests.Session | None) -> int:
    listed = vercel.list_resources(
        installation_id=installation.vercel_id, token=installation.access_token(), session=session
    )
    return len(listed)


def _record_verified(installation_id: int, resources: int) -> Installation:
    with transaction.atomic():
        installation = _locked(installation_id)
        if installation.token_rotation_step != Step.ROTATED:
            raise _Superseded
        installation.token_rotation_step = Step.VERIFIED
        installation.save(update_fields=_STATE_FIELDS)
        _audit_step(installation, AuditAction.TOKEN_VERIFIED, {"resources_listed": resources})
    return installation


def _revoke_old(installation: Installation, session: requests.Session | None) -> bool:
    return vercel.revoke_installation_credential(
        installation_id=installation.vercel_id,
        token=installation.access_token(),
        revoke=installation.previous_access_token(),
        client_secret=_client_secret(),
        client_id=settings.VERCEL_CLIENT_ID,  # optional in Vercel's body; sent when known
        session=session,
    )


def _record_revoked(installation_id: int, already: bool) -> Installation:
    with transaction.atomic():
        installation = _locked(installation_id)
        if installation.token_rotation_step != Step.VERIFIED:
            raise _Superseded
        installation.forget_previous_access_token()
        installation.token_rotation_step = Step.NONE
        installation.token_rotation_attempts = 0
        installation.token_rotation_error = ""
        installation.token_rotation_lease_until = None
        installation.token_rotation_next_attempt_at = None
        installation.save(update_fields=_TOKEN_FIELDS + _STATE_FIELDS)
        audit_record(
            action=AuditAction.TOKEN_OLD_REVOKED,
            installation=installation,
            actor_username=installation.token_rotation_requested_by,
            details={"already_revoked": already},
        )
    return installation


class _Superseded(Exception):
    """Another copy of the task moved the rotation on meanwhile."""


def _record_failure(installation_id: int, *, step: str, message: str, error: Exception) -> None:
    """Release the lease; wait and retry a transient error, stop on a permanent one."""
    transient = isinstance(error, vercel.VercelError) and not error.permanent
    now = timezone.now()
    with transaction.atomic():
        installation = _locked(installation_id)
        installation.token_rotation_attempts += 1
        installation.token_rotation_lease_until = None
        installation.token_rotation_error = message[:1000]
        stop = not transient or attempts_exhausted(installation.token_rotation_attempts)
        retry_after = getattr(error, "retry_after", None)
        wait = backoff_wait(installation.token_rotation_attempts, retry_after)
        installation.token_rotation_next_attempt_at = (
            None if stop else now + timedelta(seconds=wait)
        )
        installation.save(update_fields=_STATE_FIELDS)
        details: dict = {"step": step, "message": message[:500], "stopped": stop}
        if isinstance(error, vercel.VercelError):
            details.update(status=error.status, code=error.code, permanent=error.permanent)
        audit_record(
            action=AuditAction.TOKEN_ROTATION_FAILED,
            outcome=AuditEvent.Outcome.FAILURE,
            installation=installation,
            actor_username=installation.token_rotation_requested_by,
            details=details,
        )


def installation_token_advance(
    *, installation_id: int, session: requests.Session | None = None
) -> str:
    """Run the rotation's remaining steps; returns the step it stands at (empty when done)."""
    installation = _claim(installation_id)
    if installation is None:
        return Installation.objects.values_list("token_rotation_step", flat=True).get(
            pk=installation_id
        )
    step = installation.token_rotation_step
    try:
        if step == Step.REQUESTED:
            new = _rotate_on_vercel(installation, session)
            installation = _record_rotated(installation_id, new)
            step = installation.token_rotation_step
        if step == Step.ROTATED:
            resources = _check_new_token(installation, session)
            installation = _record_verified(installation_id, resources)
            step = installation.token_rotation_step
        if step == Step.VERIFIED:
            already = _revoke_old(installation, session)
            installation = _record_revoked(installation_id, already)
            step = installation.token_rotation_step
    except _Superseded:
        logger.info("token rotation of installation %s moved on meanwhile", installation_id)
    except (vercel.VercelError, CryptoError) as exc:
        message = _failure_text(step, exc)
        logger.warning("token rotation of installation %s: %s", installation_id, message)
        _record_failure(installation_id, step=step, message=message, error=exc)
    return Installation.objects.values_list("token_rotation_step", flat=True).get(
        pk=installation_id
    )


def _failure_text(step: str, exc: Exception) -> str:
    what = {
        Step.REQUESTED: "rotating the token on Vercel",
        Step.ROTATED: "checking the new token (list resources)",
        Step.VERIFIED: "revoking the old token",
    }.get(Step(step), step)
    if isinstance(exc, CryptoError):
        return f"{what}: a stored token cannot be decrypted"
    return f"{what}: {exc}"


def installation_tokens_requeue(*, now: datetime | None = None) -> list[int]:
    """Hand due or abandoned token rotations to new tasks (the sweeper calls this)."""
    now = now or timezone.now()
    with transaction.atomic():
        due = (
            Installation.objects.select_for_update(skip_locked=True)
            .exclude(token_rotation_step="")
            .filter(token_rotation_next_attempt_at__lte=now)
        )
        ids = [
            installation.pk
            for installation in due
            if installation.token_rotation_lease_until is None
            or installation.token_rotation_lease_until <= now
        ]
        # Not again before `stuck_after()`, unless a task claims it and fails.
        Installation.objects.filter(pk__in=ids).update(
            token_rotation_next_attempt_at=now + stuck_after(), token_rotation_lease_until=None
        )
        for installation_id in ids:
            transaction.on_commit(partial(_enqueue, installation_id))
    return ids
