"""Reads for rotations: which resources a request would rotate or refuse, and batch progress."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from django.db.models import Count, Max, QuerySet
from django.utils import timezone

from rotation.models import Installation, PushPace, Resource, Rotation, RotationBatch

# SQLite allows 999 parameters per statement; stay below it for `IN (...)` lists.
IN_CHUNK = 900
# Work in progress: a rotation leaves these states by itself. Any other state is settled.
IN_FLIGHT_STATES = (
    Rotation.State.REQUESTED,
    Rotation.State.PREPARING,
    Rotation.State.PUSHING,
)
# Settled states counted as pushed: the new credentials are on Vercel.
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


T = TypeVar("T")


def chunked(items: list[T], size: int) -> Iterator[list[T]]:
    """`items` in consecutive slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def resource_ids_of(resource_ids: Iterable[int] | QuerySet[Any]) -> list[int]:
    """Distinct resource ids, in the order given, from ids or a queryset of resources."""
    if isinstance(resource_ids, QuerySet):
        if resource_ids.model is Resource:
            resource_ids = resource_ids.order_by().values_list("pk", flat=True)
        return list(dict.fromkeys(int(pk) for pk in resource_ids))
    return list(dict.fromkeys(int(pk) for pk in resource_ids))


def refusal_reason(
    *,
    status: str,
    installation_vercel_id: str,
    installation_status: str,
    open_rotation: tuple[int, str] | None,
) -> str:
    """Why a resource may not be rotated now ("" when it may); `open_rotation` is (pk, state)."""
    if installation_status == Installation.Status.REMOVED:
        return f"Its installation {installation_vercel_id} was removed on Vercel."
    if status == Resource.Status.REMOVED:
        return "The resource was removed."
    if open_rotation is not None:
        rotation_pk, state = open_rotation
        label = Rotation.State(state).label.lower()
        return f"Rotation #{rotation_pk} of this resource is still open ({label})."
    return ""


def resources_classify(*, resource_ids: list[int]) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """Split requested ids into candidates and refusals `{resource, vercel_id, reason}`."""
    found: dict[int, tuple[int, str, str, str, str]] = {}
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
    refused: list[dict[str, Any]] = []
    for pk in resource_ids:
        row = found.get(pk)
        if row is None:
            refused.append(
                {"resource": pk, "vercel_id": "", "reason": "The resource does not exist."}
            )
            continue
        _, vercel_id, status, installation_vercel_id, installation_status = row
        reason = refusal_reason(
            status=status,
            installation_vercel_id=installation_vercel_id,
            installation_status=installation_status,
            open_rotation=open_rotations.get(pk),
        )
        if reason:
            refused.append({"resource": pk, "vercel_id": vercel_id, "reason": reason})
        else:
            candidates.append(Candidate(pk, vercel_id, installation_vercel_id))
    return candidates, refused


@dataclass(frozen=True)
class BatchProgress:
    """How far a batch got, counted from our own rows.

    `counts` holds every state, zeros included. A rotation is settled once it left the
    in-flight states (pushed, failed or cancelled alike); the batch is finished when every
    rotation is settled.
    """

    batch_id: int
    counts: dict[str, int]
    refused: int
    # Until when Vercel's rate limit pauses pushes of the batch's installations (None: not).
    rate_limited_until: datetime | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def in_flight(self) -> int:
        return sum(self.counts[state] for state in IN_FLIGHT_STATES)

    @property
    def settled(self) -> int:
        return self.total - self.in_flight

    @property
    def pushed(self) -> int:
        return sum(self.counts[state] for state in PUSHED_STATES)

    @property
    def failed(self) -> int:
        return self.counts[Rotation.State.FAILED]

    @property
    def cancelled(self) -> int:
        return self.counts[Rotation.State.CANCELLED]

    @property
    def percent(self) -> int:
        """Settled rotations in percent, rounded down (100 for an empty batch)."""
        total = self.total
        return 100 if total == 0 else int(100 * self.settled / total)

    @property
    def finished(self) -> bool:
        return self.in_flight == 0


def batch_progress(*, batch: RotationBatch) -> BatchProgress:
    """Counts per state from our own rows, for the batch page and `rotate_resources --wait`."""
    rows = (
        Rotation.objects.filter(batch_id=batch.pk)
        .order_by()
        .values_list("state")
        .annotate(n=Count("id"))
    )
    counts = {state.value: 0 for state in Rotation.State}
    counts.update(dict(rows))
    progress = BatchProgress(batch_id=batch.pk, counts=counts, refused=len(batch.refused or []))
    if progress.finished:
        return progress
    waiting = PushPace.objects.filter(
        paused_until__gt=timezone.now(),
        installation__resources__rotations__batch_id=batch.pk,
        installation__resources__rotations__state__in=IN_FLIGHT_STATES,
    ).aggregate(until=Max("paused_until"))["until"]
    return replace(progress, rate_limited_until=waiting)
