"""Requesting rotations: permission checks, the preview, and recording a batch in bulk."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from rotation.audit import Actor, AuditAction, MaybeActor, Origin, actor_may, audit_record, refuse
from rotation.models import Resource, Rotation, RotationBatch
from rotation.selectors import Candidate, chunked, resource_ids_of, resources_classify
from rotation.services.enqueue import (
    CHUNK_SIZE,
    batch_fan_out_enqueue,
    rotations_enqueue_after_commit,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

logger = logging.getLogger(__name__)

BULK_SIZE = 500
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


def _rotations_insert(*, template: Rotation, candidates: list[Candidate]) -> None:
    """Rows like `template`, one per candidate, in one statement (PostgreSQL) or one executemany.

    `bulk_create` prepares every field of every row in Python, which costs seconds at 10,000
    rows; here the fields are prepared once and only `resource_id` changes.
    """
    fields = [field for field in Rotation._meta.concrete_fields if not field.primary_key]
    values = [
        field.get_db_prep_save(field.pre_save(template, add=True), connection) for field in fields
    ]
    resource_at = fields.index(Rotation._meta.get_field("resource"))
    quote = connection.ops.quote_name
    table = quote(Rotation._meta.db_table)
    columns = ", ".join(quote(str(field.column)) for field in fields)
    resource_ids = [candidate.pk for candidate in candidates]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Constants typed by cast; the resource ids come in as one array.
            select = ", ".join(
                "ids.id" if index == resource_at else f"%s::{field.db_type(connection)}"
                for index, field in enumerate(fields)
            )
            constants = [value for index, value in enumerate(values) if index != resource_at]
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT {select} "  # noqa: S608 (model names)
                "FROM unnest(%s::bigint[]) AS ids(id)",
                [*constants, resource_ids],
            )
            return
        sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"  # noqa: S608
        rows = []
        for resource_id in resource_ids:
            row = list(values)
            row[resource_at] = resource_id
            rows.append(row)
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
    ids = resource_ids_of(resource_ids)
    user = _check_request(
        actor=actor,
        reason=reason,
        ticket=ticket,
        emergency=emergency,
        count=len(ids),
        source=source,
        origin=origin,
    )
    candidates, refused = resources_classify(resource_ids=ids)
    with transaction.atomic():
        batch = RotationBatch.objects.create(
            requested_by=user,
            requested_by_username=user.get_username() if user else "system",
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
            actor=user,
            origin=origin,
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
        if len(created) > INLINE_FAN_OUT_MAX:
            batch_id = batch.pk
            transaction.on_commit(lambda: batch_fan_out_enqueue(batch_id))
        elif created:
            # A few chunk tasks are cheap to enqueue here and save the fan-out task's hop.
            rotation_ids = list(batch.rotations.order_by("pk").values_list("pk", flat=True))
            rotations_enqueue_after_commit(rotation_ids, group=f"batch-{batch.pk}")
    return batch
