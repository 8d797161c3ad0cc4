"""Vercel webhook events applied to our data, each event id at most once."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from rotation.audit import AuditAction, Origin, audit_batch, audit_record, refusal_record
from rotation.models import AuditEvent, Installation, Resource, Rotation, WebhookEvent
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
    # A deployment no rotation of ours waits for: neither recorded nor audited, since it
    # changes nothing; a redelivery, even after a push, predates the push and never counts.
    UNRELATED = "unrelated"


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


# A deployment names the resources of the integrations its project uses: a handful. Far more
# is no event of Vercel's, and would not fit in one query's parameters.
MAX_RESOURCES_PER_EVENT = 100


def _resource_pairs(payload: dict) -> list[tuple[str, str]]:
    """(installation id or "", resource id) named by integrations[].resources[] or
    payload.resource.id."""
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
    pairs = list(dict.fromkeys(pairs))
    if len(pairs) > MAX_RESOURCES_PER_EVENT:
        raise WebhookInvalid(f"the event names more than {MAX_RESOURCES_PER_EVENT} resources")
    return pairs


def _matches(pairs: list[tuple[str, str]], *, waiting_only: bool) -> list[tuple]:
    """(resource pk, resource id, installation pk, installation id) of the resources matching
    any pair, by resource id alone when the pair names no installation; with `waiting_only`,
    those with a rotation waiting for redeploys. Written out: every delivery runs it, and the
    ORM took longer to build this query than the database to answer it."""
    resources, installations = Resource._meta.db_table, Installation._meta.db_table
    params: list[str] = []
    waiting = ""
    if waiting_only:  # one open rotation per resource: the join repeats no resource
        states = Rotation.WAITING_STATES
        waiting = (
            f" JOIN {Rotation._meta.db_table} o ON o.resource_id = r.id"
            f" AND o.state IN ({', '.join(['%s'] * len(states))})"
        )
        params += states
    named: list[str] = []
    for installation_id, resource_id in pairs:
        if installation_id:
            named.append("(r.vercel_id = %s AND i.vercel_id = %s)")
            params += (resource_id, installation_id)
        else:
            named.append("r.vercel_id = %s")
            params.append(resource_id)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT r.id, r.vercel_id, i.id, i.vercel_id FROM {resources} r"  # noqa: S608 (model names, placeholders)
            f" JOIN {installations} i ON i.id = r.installation_id{waiting}"
            f" WHERE {' OR '.join(named)} ORDER BY r.id",
            params,
        )
        return cursor.fetchall()


def _event_resources(payload: dict, *, waiting_only: bool = False) -> list[Resource]:
    """Resources named by the event (with `waiting_only`, those with a rotation waiting for
    redeploys), in one indexed query; a resource id named without its installation counts
    only when no other installation has a resource with that id."""
    pairs = _resource_pairs(payload)
    if not pairs:
        return []
    found = _matches(pairs, waiting_only=waiting_only)
    explicit = {pair for pair in pairs if pair[0]}
    bare = {row[1] for row in found if (row[3], row[1]) not in explicit}
    if bare:
        counts = Counter(
            Resource.objects.filter(vercel_id__in=bare).values_list("vercel_id", flat=True)
        )
        found = [row for row in found if row[1] not in bare or counts[row[1]] == 1]
    if not waiting_only:
        return list(
            Resource.objects.select_related("installation")
            .filter(pk__in=[row[0] for row in found])
            .order_by("pk")
        )
    # What marking a redeploy and its audit read; any other field loads when first read.
    resources = []
    for resource_pk, resource_id, installation_pk, installation_id in found:
        resource = Resource.from_db(
            connection.alias,
            ["id", "vercel_id", "installation_id"],
            [resource_pk, resource_id, installation_pk],
        )
        resource.installation = Installation.from_db(
            connection.alias, ["id", "vercel_id"], [installation_pk, installation_id]
        )
        resources.append(resource)
    return resources


@dataclass
class Delivery:
    """A verified event as its handler reads it; resources are looked up once, when asked."""

    event: dict
    payload: dict
    occurred_at: datetime | None

    @property
    def event_id(self) -> str:
        return _str(self.event.get("id"))

    @property
    def project_id(self) -> str:
        project = _str(_dict(self.payload.get("project")).get("id"))
        return project or _str(self.payload.get("projectId"))

    @functools.cached_property
    def resources(self) -> list[Resource]:
        return _event_resources(self.payload)

    @functools.cached_property
    def waiting_resources(self) -> list[Resource]:
        """The named resources with a rotation waiting for redeploys; takes no lock."""
        return _event_resources(self.payload, waiting_only=True)


def _handle_deployment(delivery: Delivery) -> str:
    project_id = delivery.project_id
    if not project_id:
        return "no project id"
    if delivery.occurred_at is None:
        return "no createdAt: cannot tell whether the deployment followed the push"
    payload = delivery.payload
    outcomes: list[str] = []
    for resource in delivery.waiting_resources:
        outcomes += rotation_mark_project_redeployed(
            resource=resource,
            project_id=project_id,
            deployed_at=delivery.occurred_at,
            deployment_id=_str(_dict(payload.get("deployment")).get("id")),
            target=_str(payload.get("target")),
            event_id=delivery.event_id,
        )
    return "; ".join(outcomes) or "no rotation waiting for a redeploy"


def _handle_connection(delivery: Delivery) -> str:
    project_id, resources = delivery.project_id, delivery.resources
    if not project_id or not resources:
        return "no project id or no resource of ours"
    service = (
        project_connected
        if delivery.event["type"] == "integration-resource.project-connected"
        else project_disconnected
    )
    return "; ".join(
        service(
            resource=resource,
            project_id=project_id,
            occurred_at=delivery.occurred_at,
            event_id=delivery.event_id,
        )
        for resource in resources
    )


def _handle_removed(delivery: Delivery) -> str:
    installation_id = _str(_dict(delivery.payload.get("configuration")).get("id"))
    installation = Installation.objects.filter(vercel_id=installation_id).first()
    if installation is None:
        return f"installation {installation_id or '?'} is not ours"
    return installation_removed(
        installation=installation, occurred_at=delivery.occurred_at, event_id=delivery.event_id
    )


DEPLOYMENT_TYPES = frozenset({"deployment.succeeded", "deployment.ready"})
HANDLERS: dict[str, Callable[[Delivery], str]] = {
    **dict.fromkeys(DEPLOYMENT_TYPES, _handle_deployment),
    "integration-resource.project-connected": _handle_connection,
    "integration-resource.project-disconnected": _handle_connection,
    "integration-configuration.removed": _handle_removed,
}
# Any other type is only recorded and answered 200; a recorded `deployment.created` tells
# that a later `deployment.succeeded` was built from before the push.


class _Duplicate(Exception):
    """The event id was recorded meanwhile: roll back what its handler did."""


def webhook_refusal_record(*, reason: str, origin: Origin | None = None) -> None:
    """Audit a signed delivery refused as invalid: Vercel sent it, so it is Vercel's action
    (unsigned ones are only logged: anybody can send those, and each append takes the
    chain's lock)."""
    refusal_record(
        action=AuditAction.WEBHOOK_REFUSED,
        message=reason,
        actor=None,
        origin=origin,
        outcome=AuditEvent.Outcome.FAILURE,
        actor_type=AuditEvent.ActorType.VERCEL,
    )


def webhook_event_handle(*, event: Any, origin: Origin | None = None) -> WebhookResult:
    """Record a verified delivery once by event id and apply it."""
    if not isinstance(event, dict):
        raise WebhookInvalid("the body is not a JSON object")
    event_id, event_type = _str(event.get("id")), _str(event.get("type"))
    if not event_id or not event_type or len(event_id) > 128:
        raise WebhookInvalid("the event needs a string id and type")
    payload = _dict(event.get("payload"))
    occurred_at = _event_time(event)
    delivery = Delivery(event=event, payload=payload, occurred_at=occurred_at)
    if event_type in DEPLOYMENT_TYPES and not delivery.waiting_resources:
        # Nothing can change: one indexed lookup, no lock, no row written.
        return WebhookResult(WebhookOutcome.UNRELATED)
    handler = HANDLERS.get(event_type)
    record = WebhookEvent(
        event_id=event_id,
        type=event_type[:64],
        occurred_at=occurred_at,
        deployment_id=_str(_dict(payload.get("deployment")).get("id"))[:64],
        payload=event,
        status=WebhookEvent.Status.PROCESSED if handler else WebhookEvent.Status.IGNORED,
    )
    try:
        # One append for the handler's events and ours, taking the chain lock only at the end.
        with transaction.atomic(), audit_batch():
            # A failure rolls everything back, so a redelivery retries it. The event row is
            # written last, with the result: a redelivery (or the same event delivered twice
            # at once) fails on its unique id and rolls back what its handler did.
            result = handler(delivery)[:2000] if handler else ""
            record.result = result
            try:
                record.save(force_insert=True)
            except IntegrityError:
                raise _Duplicate from None
            if handler is None:
                return WebhookResult(WebhookOutcome.IGNORED)
            audit_record(
                action=AuditAction.WEBHOOK_RECEIVED,
                actor_type=AuditEvent.ActorType.VERCEL,
                origin=origin,
                details={"event": event_id, "type": event_type, "result": result},
            )
    except _Duplicate:
        return WebhookResult(WebhookOutcome.DUPLICATE)
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
