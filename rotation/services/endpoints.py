"""Moving installations off Vercel's deprecated secrets endpoint: staff switch them (admin
action, `manage.py switch_endpoint`), or a push switches one by itself when the deprecated
endpoint answered 410/404 and the current one took the same secret set.

Each switch is a conditional update (`endpoint` still the old value) in a short transaction,
audited in it, so two workers that fall back at once switch and audit an installation once.
No Vercel call is made while a row is locked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from rotation import vercel
from rotation.audit import AuditAction, MaybeActor, Origin, actor_may, audit_record, refuse
from rotation.models import AuditEvent, Installation
from rotation.vercel import endpoints

if TYPE_CHECKING:
    from collections.abc import Iterable

    from rotation.models import Resource

Endpoint = Installation.Endpoint
SWITCH_PERMISSION = "rotation.switch_endpoint"


@dataclass
class EndpointSwitchResult:
    """What `installations_switch_endpoint` did, by Vercel installation id."""

    to: str
    switched: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def push_endpoint(installation: Installation) -> str:
    """The endpoint a push for `installation` calls now (its own, or current after sunset).

    Re-read from the database while it says deprecated: another push may have switched it.
    """
    endpoint = installation.endpoint
    if endpoint == Endpoint.DEPRECATED and not endpoints.deprecated_retired():
        endpoint = (
            Installation.objects.filter(pk=installation.pk)
            .values_list("endpoint", flat=True)
            .first()
            or endpoint
        )
    return endpoints.endpoint_in_effect(endpoint)


def installation_endpoint_fall_back(
    *,
    installation: Installation,
    resource: Resource,
    rotation_id: int | None,
    deprecated_answer: dict[str, Any],
    current_answer: dict[str, Any],
) -> bool:
    """Switch an installation to the current endpoint after a push landed there instead of
    on the deprecated one; True when this call switched it (and audited the evidence)."""
    with transaction.atomic():
        switched = Installation.objects.filter(
            pk=installation.pk, endpoint=Endpoint.DEPRECATED
        ).update(endpoint=Endpoint.CURRENT, updated_at=timezone.now())
        if switched:
            audit_record(
                action=AuditAction.INSTALLATION_ENDPOINT_FELL_BACK,
                installation=installation,
                resource=resource,
                rotation=rotation_id,
                details={
                    "from": Endpoint.DEPRECATED,
                    "to": Endpoint.CURRENT,
                    "automatic": True,
                    "deprecated_answer": deprecated_answer,
                    "current_answer": current_answer,
                },
            )
    installation.endpoint = Endpoint.CURRENT
    return bool(switched)


def current_endpoint_check(*, installation: Installation) -> str:
    """Why the current API cannot be trusted for `installation` ("" = fine): a staff switch
    first lists the installation's resources through it (CONTRACT.md section 8), so a switch
    never moves pushes to an API that refuses this installation. Called outside any
    transaction."""
    if not installation.has_access_token:
        return "no Vercel access token is stored, so the current endpoint cannot be checked."
    try:
        # Reference: https://vercel.com/docs/rest-api/marketplace/get-integration-resources
        vercel.list_resources(
            installation_id=installation.vercel_id, token=installation.access_token()
        )
    except vercel.VercelError as exc:
        again = "" if exc.permanent else " Try again later."
        return f"Vercel's current API refused a check call ({exc.status} {exc.code}).{again}"
    return ""


def installations_switch_endpoint(
    *,
    installation_ids: Iterable[int],
    to: str,
    actor: MaybeActor,
    origin: Origin | None = None,
    source: str = "admin",
) -> EndpointSwitchResult:
    """Set the installations' secrets endpoint to `to`, auditing each one switched."""
    ids = list(dict.fromkeys(installation_ids))
    refusal: dict[str, Any] = {
        "action": AuditAction.INSTALLATION_ENDPOINT_SWITCHED,
        "actor": actor,
        "origin": origin,
        "details": {"to": to, "installations": len(ids), "source": source},
    }
    if not actor_may(actor, SWITCH_PERMISSION):
        refuse(message="You do not have permission to switch secrets endpoints.", **refusal)
    failure = AuditEvent.Outcome.FAILURE
    if to not in Endpoint.values:
        refuse(
            message="The endpoint must be 'current' or 'deprecated'.", outcome=failure, **refusal
        )
    if not ids:
        refuse(message="No installations were selected.", outcome=failure, **refusal)
    sunset = endpoints.deprecated_sunset()
    if to == Endpoint.DEPRECATED and endpoints.deprecated_retired():
        refuse(
            message=(
                f"Vercel's deprecated endpoint is retired here since {sunset}: every push "
                "goes through the current endpoint, so switching back is refused."
            ),
            outcome=failure,
            **refusal,
        )
    installations = list(Installation.objects.filter(pk__in=ids))
    if to == Endpoint.CURRENT:
        for installation in installations:
            if installation.endpoint == to:
                continue  # nothing to switch, nothing to check
            problem = current_endpoint_check(installation=installation)
            if problem:
                refuse(
                    message=f"{installation.vercel_id}: {problem}",
                    outcome=failure,
                    installation=installation,
                    **refusal,
                )
    result = EndpointSwitchResult(to=to)
    with transaction.atomic():
        previous = Endpoint.DEPRECATED if to == Endpoint.CURRENT else Endpoint.CURRENT
        for installation in installations:
            changed = (
                Installation.objects.filter(pk=installation.pk)
                .exclude(endpoint=to)
                .update(endpoint=to, updated_at=timezone.now())
            )
            if not changed:
                result.unchanged.append(installation.vercel_id)
                continue
            result.switched.append(installation.vercel_id)
            audit_record(
                action=AuditAction.INSTALLATION_ENDPOINT_SWITCHED,
                actor=actor,
                origin=origin,
                installation=installation,
                details={
                    "from": previous,
                    "to": to,
                    "automatic": False,
                    "source": source,
                    # To current only after a read call through Vercel's current API answered.
                    "checked": to == Endpoint.CURRENT,
                },
            )
    return result
