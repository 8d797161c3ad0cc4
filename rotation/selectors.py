"""Reads for rotations: which resources a request would rotate or refuse, and batch progress."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, QuerySet

from rotation.models import Installation, Resource, Rotation, RotationBatch

# SQLite allows 999 parameters per statement; stay below it for `IN (...)` lists.
IN_CHUNK = 900
# States a rotation leaves only by itself (work in progress) versus finished for the batch.
IN_FLIGHT_STATES = (
    Rotation.State.REQUESTED,
    Rotation.State.PREPARING,
    Rotation.State.PUSHING,
)
PUSHED_STATES = (
    Rotation.State.AWAITING_REDEPLOY,
    Rotation.State.EXPIRING,
    Rotation.State.COMPLETED,
    Rotation.State.ESCALATED,
)


@dataclass(frozen=True)
class Candidate:
    """A requested resource that may be rotated."""

    pk: int
    vercel_id: str
    installation_vercel_id: str


def chunked(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def resource_ids_of(resource_ids: Iterable[int] | QuerySet) -> list[int]:
    """Distinct resource ids, in the order given, from ids or a queryset of resources."""
    if isinstance(resource_ids, QuerySet):
        if resource_ids.model is Resource:
            resource_ids = resource_ids.order_by().values_list("pk", flat=True)
        return list(dict.fromkeys(int(pk) for pk in resource_ids))
    return list(dict.fromkeys(int(pk) for pk in resource_ids))


def resources_classify(*, resource_ids: list[int]) -> tuple[list[Candidate], list[dict]]:
    """Split requested ids into candidates and refusals `{resource, vercel_id, reason}`."""
    found: dict[int, tuple] = {}
    open_rotations: dict[int, tuple[int, str]] = {}
    for chunk in chunked(resource_ids, IN_CHUNK):
        found.update(
            (row[0], row)
            for row in Resource.objects.filter(pk__in=chunk)
            .order_by()
            .values_list(
                "pk", "vercel_id", "status", "installation__vercel_id", "installation__status"
            )
        )
        open_rotations.update(
            (resource_id, (pk, state))
            for resource_id, pk, state in Rotation.objects.filter(
                resource_id__in=chunk, state__in=Rotation.OPEN_STATES
            )
            .order_by()
            .values_list("resource_id", "pk", "state")
        )
    candidates: list[Candidate] = []
    refused: list[dict] = []
    for pk in resource_ids:
        row = found.get(pk)
        if row is None:
            refused.append(
                {"resource": pk, "vercel_id": "", "reason": "The resource does not exist."}
            )
            continue
        _, vercel_id, status, installation_vercel_id, installation_status = row
        reason = ""
        if installation_status == Installation.Status.REMOVED:
            reason = f"Its installation {installation_vercel_id} was removed on Vercel."
        elif status == Resource.Status.REMOVED:
            reason = "The resource was removed."
        elif pk in open_rotations:
            rotation_pk, state = open_rotations[pk]
            label = Rotation.State(state).label.lower()
            reason = f"Rotation #{rotation_pk} of this resource is still open ({label})."
        if reason:
            refused.append({"resource": pk, "vercel_id": vercel_id, "reason": reason})
        else:
            candidates.append(Candidate(pk, vercel_id, installation_vercel_id))
    return candidates, refused


def batch_progress(*, batch: RotationBatch) -> dict[str, Any]:
    """Counts per state from our own rows, for the batch page's progress bar (JSON-ready)."""
    rows = (
        Rotation.objects.filter(batch_id=batch.pk)
        .order_by()
        .values_list("state")
        .annotate(n=Count("id"))
    )
    counts = {state.value: 0 for state in Rotation.State}
    counts.update(dict(rows))
    total = sum(counts.values())
    in_flight = sum(counts[state] for state in IN_FLIGHT_STATES)
    finished = total - in_flight
    return {
        "batch": batch.pk,
        "total": total,
        "counts": counts,
        "in_flight": in_flight,
        "pushed": sum(counts[state] for state in PUSHED_STATES),
        "failed": counts[Rotation.State.FAILED],
        "cancelled": counts[Rotation.State.CANCELLED],
        "finished": finished,
        "percent": 100 if total == 0 else int(100 * finished / total),
        "done": in_flight == 0,
        "refused": len(batch.refused or []),
    }
