"""Vercel webhook events applied to our data, each event id at most once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from rotation.audit import AuditAction, Origin, audit_record
from rotation.models import AuditEvent, Installation, Resource, WebhookEvent
from rotation.redeploy.progress import rotation_mark_project_redeployed
from rotation.redeploy.projects import (
    installation_removed,
    project_connected,
    project_disconnected,
)


class WebhookInvalid(Exception):
    """The event is not a Vercel webhook envelope we can read (answer 400)."""


class WebhookOutcome(StrEnum):
    """What became of a delivery; the endpoint answers it as `{"outcome": ...}`."""

    PROCESSED = "processed"
    IGNORED = "ignored"  # a type we do not handle: recorded only
    DUPLICATE = "duplicate"  # an event id seen before: nothing done


@dataclass(frozen=True)
class WebhookResult:
    """The outcome of a delivery and, once processed, what its handler did."""

    outcome: WebhookOutcome
    result: str = ""


def _event_time(event: dict) -> datetime | None:
    created = event.get("createdAt")
    if isinstance(created, bool) or not isinstance(created, int | float):
        return None
    try:
        return datetime.fromtimestamp(created / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _event_resources(payload: dict) -> list[Resource]:
    """Resources named by the event: integrations[].resources[] or payload.resource.id."""
    pairs: list[tuple[str, str]] = []
    for integration in _list(payload.get("integrations")):
        integration = _dict(integration)
        installation_id = _str(integration.get("installationId"))
        for item in _list(integration.get("resources")):
            resource_id = _str(_dict(item).get("externalResourceId"))
            if installation_id and resource_id:
                pairs.append((installation_id, resource_id))
    resource_id = _str(_dict(payload.get("resource")).get("id")) or _str(payload.get("resourceId"))
    if resource_id and not pairs:
        installation_id = (
            _str(_dict(payload.get("configuration")).get("id"))
            or _str(payload.get("installationId"))
            or next(
                (
                    _str(_dict(i).get("installationId"))
                    for i in _list(payload.get("integrations"))
                    if _str(_dict(i).get("installationId"))
                ),
                "",
            )
        )
        pairs.append((installation_id, resource_id))
    found: list[Resource] = []
    for installation_id, resource_id in pairs:
        matches = Resource.objects.filter(vercel_id=resource_id).select_related("installation")
        if installation_id:
            matches = matches.filter(installation__vercel_id=installation_id)
        elif matches.count() > 1:
            continue  # ambiguous without the installation
        found.extend(r for r in matches if r not in found)
    return found


def _project_id(payload: dict) -> str:
    return _str(_dict(payload.get("project")).get("id")) or _str(payload.get("projectId"))


def _handle_deployment(event: dict, payload: dict, occurred_at: datetime | None) -> str:
    project_id = _project_id(payload)
    if not project_id:
        return "no project id"
    if occurred_at is None:
        return "no createdAt: cannot tell whether the deployment followed the push"
    resources = _event_resources(payload)
    if not resources:
        return "no resource of ours"
    outcomes: list[str] = []
    for resource in resources:
        outcomes += rotation_mark_project_redeployed(
            resource=resource,
            project_id=project_id,
            deployed_at=occurred_at,
            deployment_id=_str(_dict(payload.get("deployment")).get("id")),
            target=_str(payload.get("target")),
            event_id=_str(event.get("id")),
        )
    return "; ".join(outcomes)


def _handle_connection(event: dict, payload: dict, occurred_at: datetime | None) -> str:
    project_id = _project_id(payload)
    resources = _event_resources(payload)
    if not project_id or not resources:
        return "no project id or no resource of ours"
    service = (
        project_connected
        if event["type"] == "integration-resource.project-connected"
        else project_disconnected
    )
    return "; ".join(
        service(
            resource=resource,
            project_id=project_id,
            occurred_at=occurred_at,
            event_id=_str(event.get("id")),
        )
        for resource in resources
    )


def _handle_removed(event: dict, payload: dict, occurred_at: datetime | None) -> str:
    installation_id = _str(_dict(payload.get("configuration")).get("id"))
    installation = Installation.objects.filter(vercel_id=installation_id).first()
    if installation is None:
        return f"installation {installation_id or '?'} is not ours"
    return installation_removed(
        installation=installation, occurred_at=occurred_at, event_id=_str(event.get("id"))
    )


HANDLERS = {
    "deployment.succeeded": _handle_deployment,
    "deployment.ready": _handle_deployment,
    "integration-resource.project-connected": _handle_connection,
    "integration-resource.project-disconnected": _handle_connection,
    "integration-configuration.removed": _handle_removed,
}
# Any other type is only recorded and answered 200; a recorded `deployment.created` tells
# that a later `deployment.succeeded` was built from before the push.


def webhook_event_handle(*, event: Any, origin: Origin | None = None) -> WebhookResult:
    """Record a verified delivery once by event id and apply it."""
    if not isinstance(event, dict):
        raise WebhookInvalid("the body is not a JSON object")
    event_id, event_type = _str(event.get("id")), _str(event.get("type"))
    if not event_id or not event_type or len(event_id) > 128:
        raise WebhookInvalid("the event needs a string id and type")
    payload = _dict(event.get("payload"))
    occurred_at = _event_time(event)
    handler = HANDLERS.get(event_type)
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = WebhookEvent.objects.create(
                    event_id=event_id,
                    type=event_type[:64],
                    occurred_at=occurred_at,
                    deployment_id=_str(_dict(payload.get("deployment")).get("id"))[:64],
                    payload=event,
                    status=(
                        WebhookEvent.Status.PROCESSED if handler else WebhookEvent.Status.IGNORED
                    ),
                )
        except IntegrityError:
            return WebhookResult(WebhookOutcome.DUPLICATE)
        if handler is None:
            return WebhookResult(WebhookOutcome.IGNORED)
        # A failure rolls everything back (the event row too), so a redelivery retries it.
        result = handler(event, payload, occurred_at)
        record.result = result[:2000]
        record.save(update_fields=["result"])
        audit_record(
            action=AuditAction.WEBHOOK_RECEIVED,
            actor_type=AuditEvent.ActorType.VERCEL,
            origin=origin,
            details={"event": event_id, "type": event_type, "result": result[:2000]},
        )
    return WebhookResult(WebhookOutcome.PROCESSED, result)


# Deliveries deleted per statement and statements per call: the tick stays short, and a
# backlog (a first run after an upgrade) is worked off over a few ticks.
PRUNE_BATCH = 1000
PRUNE_BATCHES_PER_CALL = 10


def webhook_events_prune(*, now: datetime | None = None) -> int:
    """Delete stored deliveries older than `WEBHOOK_EVENT_RETENTION_DAYS`, a bounded number
    per call (run by the redeploy tick); returns how many. Vercel redelivers within hours, so
    older event ids no longer need remembering."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.WEBHOOK_EVENT_RETENTION_DAYS)
    deleted = 0
    for _ in range(PRUNE_BATCHES_PER_CALL):
        ids = list(
            WebhookEvent.objects.filter(received_at__lt=cutoff)
            .order_by("received_at")
            .values_list("pk", flat=True)[:PRUNE_BATCH]
        )
        if not ids:
            break
        deleted += WebhookEvent.objects.filter(pk__in=ids).delete()[0]
        if len(ids) < PRUNE_BATCH:
            break
    return deleted
