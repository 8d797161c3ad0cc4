"""Requesting rotations: permission checks, the preview, and recording a batch in bulk."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, QuerySet, Subquery
from django.utils import timezone

from rotation.audit import Actor, AuditAction, MaybeActor, Origin, actor_may, audit_record, refuse
from rotation.models import Installation, Resource, Rotation, RotationBatch
from rotation.selectors import (
    IN_CHUNK,
    chunked,
    refusal_reason,
    resource_ids_of,
    resources_classify,
)
from rotation.services.enqueue import (
    CHUNK_SIZE,
    batch_fan_out_enqueue,
    rotations_enqueue_after_commit,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

# Batches up to this size enqueue their chunk tasks (at most 20) from the request itself;
# larger ones leave that to one fan-out task, so a request never enqueues hundreds of tasks.
INLINE_FAN_OUT_MAX = 20 * CHUNK_SIZE
PREVIEW_SAMPLE = 20
PREVIEW_REFUSED_CAP = 200
# Sources whose requests the system makes itself (actor None, audited as the system).
SYSTEM_SOURCES = (RotationBatch.Source.POLICY,)


@dataclass
class RotationPreview:
    """What `rotation_request` would do, for the confirmation page."""

    count: int
    will_rotate: int
    refused: list[dict] = field(default_factory=list)  # capped at PREVIEW_REFUSED_CAP
    refused_count: int = 0
    sample: list[dict] = field(default_factory=list)  # capped at PREVIEW_SAMPLE
    emergency_allowed: bool = False


def _check_request(
    *,
    actor: MaybeActor,
    reason: str,
    ticket: str,
    emergency: bool,
    count: int,
    source: str,
    origin: Origin | None,
) -> Actor | None:
    """The actor (None: the system, for its own sources), once allowed; otherwise the
    refusal is audited and raised."""
    fields: dict[str, Any] = {
        "actor": actor,
        "origin": origin,
        "action": AuditAction.ROTATION_REQUEST_DENIED,
        "reason": reason,
        "ticket": ticket[:100],
        "details": {"requested": count, "emergency": emergency, "source": source},
    }
    system = actor is None and source in SYSTEM_SOURCES and not emergency
    if not system and not actor_may(actor, "rotation.rotate_resource"):
        refuse(message="You do not have permission to rotate credentials.", **fields)
    if emergency and not actor_may(actor, "rotation.rotate_resource_emergency"):
        refuse(message="You do not have permission to run emergency rotations.", **fields)
    if not reason:
        refuse(message="A reason is required.", outcome="failure", **fields)
    if len(ticket) > 100:
        refuse(message="The ticket may be at most 100 characters.", outcome="failure", **fields)
    if count == 0:
        refuse(message="No resources were selected.", outcome="failure", **fields)
    return None if system else cast("Actor", actor)


def rotation_request_preview(
    *,
    resource_ids: Iterable[int] | QuerySet,
    actor: MaybeActor,
    origin: Origin | None = None,
) -> RotationPreview:
    """Which resources a request would rotate and which it would refuse (and why)."""
    ids = resource_ids_of(resource_ids)
    if not actor_may(actor, "rotation.rotate_resource"):
        refuse(
            message="You do not have permission to rotate credentials.",
            action=AuditAction.ROTATION_REQUEST_DENIED,
            actor=actor,
            origin=origin,
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
        emergency_allowed=actor_may(actor, "rotation.rotate_resource_emergency"),
    )


@dataclass
class _Selection:
    """The requested resources: querysets of at most `size` rows each to insert from."""

    parts: list[tuple[QuerySet[Resource], int]]
    count: int
    ids: list[int] | None  # None: a queryset, whose resources all exist


def _selection_of(resource_ids: Iterable[int] | QuerySet) -> _Selection:
    """A queryset of resources (the admin's "select all N") stays one subquery, never loaded
    into Python; a list of ids is split into IN_CHUNK slices (SQLite's parameter cap)."""
    if isinstance(resource_ids, QuerySet) and resource_ids.model is Resource:
        selection = resource_ids.order_by()
        count = selection.count()
        return _Selection(parts=[(selection, count)], count=count, ids=None)
    ids = resource_ids_of(resource_ids)
    parts = [
        (Resource.objects.filter(pk__in=chunk), len(chunk)) for chunk in chunked(ids, IN_CHUNK)
    ]
    return _Selection(parts=parts, count=len(ids), ids=ids)


def _rotations_insert(*, template: Rotation, selection: QuerySet[Resource]) -> int:
    """Rows like `template` for every rotatable resource of `selection`, in one INSERT ... SELECT.

    Resources removed, of a removed installation or with an open rotation are left out; a
    concurrent request's row makes ours skip that resource (ON CONFLICT on the one-open-
    rotation constraint), so each resource still has at most one open rotation. Rows go in
    resource order, so two overlapping requests wait on each other without deadlocking.
    """
    open_rotation = Rotation.objects.filter(resource=OuterRef("pk"), state__in=Rotation.OPEN_STATES)
    eligible = (
        selection.exclude(status=Resource.Status.REMOVED)
        .exclude(installation__status=Installation.Status.REMOVED)
        .exclude(Exists(open_rotation))
        .order_by()
        .values(selected_id=F("pk"))
    )
    select_sql, select_params = eligible.query.sql_with_params()
    fields = [column for column in Rotation._meta.concrete_fields if not column.primary_key]
    resource_at = fields.index(Rotation._meta.get_field("resource"))
    postgres = connection.vendor == "postgresql"
    constants = []
    params: list[Any] = []
    for index, column in enumerate(fields):
        if index == resource_at:
            constants.append("e.selected_id")
            continue
        # PostgreSQL needs the constants' types; SQLite takes them as they are.
        constants.append(f"%s::{column.db_type(connection)}" if postgres else "%s")
        params.append(column.get_db_prep_save(column.pre_save(template, add=True), connection))
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(column.column)) for column in fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(Rotation._meta.db_table)} ({columns}) "  # noqa: S608 (model names)
            f"SELECT {', '.join(constants)} FROM ({select_sql}) AS e "
            "WHERE true ORDER BY e.selected_id ON CONFLICT DO NOTHING",
            [*params, *select_params],
        )
        return cursor.rowcount


def _refusals(*, batch: RotationBatch, selection: QuerySet[Resource]) -> list[dict]:
    """Why each resource of `selection` that got no rotation in `batch` was refused."""
    open_rotations = Rotation.objects.filter(
        resource=OuterRef("pk"), state__in=Rotation.OPEN_STATES
    ).exclude(batch=batch)
    rows = (
        selection.exclude(Exists(Rotation.objects.filter(batch=batch, resource=OuterRef("pk"))))
        .annotate(
            open_pk=Subquery(open_rotations.values("pk")[:1]),
            open_state=Subquery(open_rotations.values("state")[:1]),
        )
        .order_by("pk")
        .values_list(
            "pk",
            "vercel_id",
            "status",
            "installation__vercel_id",
            "installation__status",
            "open_pk",
            "open_state",
        )
    )
    refused = []
    for pk, vercel_id, status, installation_vercel_id, installation_status, *rotation in rows:
        reason = refusal_reason(
            status=status,
            installation_vercel_id=installation_vercel_id,
            installation_status=installation_status,
            open_rotation=(rotation[0], rotation[1]) if rotation[0] is not None else None,
        )
        # Rotatable when we looked, yet another request's rotation came and went meanwhile.
        reason = reason or "Another rotation of this resource was requested at the same time."
        refused.append({"resource": pk, "vercel_id": vercel_id, "reason": reason})
    return refused


def rotation_request(
    *,
    resource_ids: Iterable[int] | QuerySet,
    actor: MaybeActor,
    reason: str,
    ticket: str = "",
    emergency: bool = False,
    source: str = RotationBatch.Source.ADMIN,
    origin: Origin | None = None,
) -> RotationBatch:
    """Record one batch and its rotations in bulk; the work fans out in a task after commit."""
    reason = (reason or "").strip()
    ticket = (ticket or "").strip()
    selection = _selection_of(resource_ids)
    user = _check_request(
        actor=actor,
        reason=reason,
        ticket=ticket,
        emergency=emergency,
        count=selection.count,
        source=source,
        origin=origin,
    )
    with transaction.atomic():
        batch = RotationBatch.objects.create(
            requested_by=user,
            requested_by_username=user.get_username() if user else "system",
            source=source,
            reason=reason,
            ticket=ticket,
            emergency=emergency,
        )
        template = Rotation(
            batch=batch, resource_id=0, emergency=emergency, state_changed_at=timezone.now()
        )
        refused: list[dict] = []
        for part, size in selection.parts:
            if _rotations_insert(template=template, selection=part) < size:
                refused.extend(_refusals(batch=batch, selection=part))
        created = list(
            batch.rotations.order_by("pk").values_list("pk", "resource_id", "resource__vercel_id")
        )
        if selection.ids is not None:
            seen = {row[1] for row in created} | {entry["resource"] for entry in refused}
            refused.extend(
                {"resource": pk, "vercel_id": "", "reason": "The resource does not exist."}
                for pk in selection.ids
                if pk not in seen
            )
        batch.refused = refused
        batch.save(update_fields=["refused"])
        audit_record(
            action=AuditAction.ROTATION_REQUESTED,
            outcome="success" if created else "failure",
            actor=user,
            origin=origin,
            batch=batch,
            reason=reason,
            ticket=ticket,
            details={
                "source": source,
                "emergency": emergency,
                "requested": selection.count,
                "rotations": len(created),
                "refused": len(refused),
                # Compliance can find every resource of the batch from this one event.
                "resources": [vercel_id for _, _, vercel_id in created],
            },
        )
        if len(created) > INLINE_FAN_OUT_MAX:
            batch_id = batch.pk
            transaction.on_commit(lambda: batch_fan_out_enqueue(batch_id))
        elif created:
            # A few chunk tasks are cheap to enqueue here and save the fan-out task's hop.
            rotations_enqueue_after_commit([row[0] for row in created], group=f"batch-{batch.pk}")
    return batch
