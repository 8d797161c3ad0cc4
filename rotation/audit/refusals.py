"""Refusals: every refused request, from the admin, a command, a view or a service, is
recorded by `refusal_record` with one event shape, then raised as `RotationRefused`.

The shape: the action that was refused, outcome `denied` (not allowed) or `failure` (not
possible now), the actor, the origin, the objects concerned, and `details.message`, the
text staff see. It is written in its own transaction, so the refusal that follows cannot
roll it back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from django.db import transaction

from rotation.audit.trail import audit_record
from rotation.models import AuditEvent

if TYPE_CHECKING:
    from rotation.audit.origin import MaybeActor, Origin

PERMISSION_DENIED = "You do not have permission to do this."


class RotationRefused(Exception):
    """A request was refused; `message` is safe to show to staff."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


def refusal_record(
    *,
    action: str,
    message: str,
    actor: MaybeActor,
    origin: Origin | None,
    outcome: str = AuditEvent.Outcome.DENIED,
    details: dict[str, Any] | None = None,
    actor_type: str | None = None,
    **refs: Any,
) -> AuditEvent:
    """Audit a refusal in its own transaction. `refs`: installation, resource, rotation,
    batch, reason, ticket, actor_username. `actor_type` names a caller that is not a user
    (Vercel); by default a signed-in user, else anonymous."""
    with transaction.atomic():
        return audit_record(
            action=action,
            outcome=outcome,
            actor=actor,
            # Nobody signed in: say so rather than blame the system.
            actor_type=actor_type
            or (
                None
                if getattr(actor, "is_authenticated", False)
                else AuditEvent.ActorType.ANONYMOUS
            ),
            origin=origin,
            details={"message": message, **(details or {})},
            **refs,
        )


def refuse(
    *,
    action: str,
    message: str,
    actor: MaybeActor,
    origin: Origin | None,
    outcome: str = AuditEvent.Outcome.DENIED,
    details: dict[str, Any] | None = None,
    actor_type: str | None = None,
    **refs: Any,
) -> NoReturn:
    """Audit the refusal (`refusal_record`), then raise it as `RotationRefused`."""
    refusal_record(
        action=action,
        message=message,
        actor=actor,
        origin=origin,
        outcome=outcome,
        details=details,
        actor_type=actor_type,
        **refs,
    )
    raise RotationRefused(message)
