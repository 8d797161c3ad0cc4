"""Row locks on rotations, for the short claim and record transactions of the services.

Callers hold these locks only inside `transaction.atomic()` blocks that make no network or
provider call. The batch comes without `refused` (the resources its request turned away,
which can run to many thousands): nothing that locks a rotation reads it.
"""

from __future__ import annotations

from rotation.models import Installation, Rotation, RotationBatch


def rotation_lock(rotation_id: int) -> Rotation:
    """The rotation, locked, with its resource, installation and batch."""
    return (
        Rotation.objects.select_for_update(of=("self",))
        .select_related("resource__installation", "batch")
        .defer("batch__refused")
        .get(pk=rotation_id)
    )


def rotations_lock(rotation_ids: list[int]) -> list[Rotation]:
    """The rotations, locked in id order (so two workers never deadlock), with resource,
    installation and batch; rotations of one installation (or batch) share its instance."""
    rotations = list(
        Rotation.objects.select_for_update(of=("self",))
        .select_related("resource")
        .filter(pk__in=rotation_ids)
        .order_by("pk")
    )
    # One row each, not one per rotation: a chunk is mostly one installation and one batch.
    installations = Installation.objects.in_bulk({r.resource.installation_id for r in rotations})
    batches = RotationBatch.objects.defer("refused").in_bulk({r.batch_id for r in rotations})
    for rotation in rotations:
        rotation.resource.installation = installations[rotation.resource.installation_id]
        rotation.batch = batches[rotation.batch_id]
    return rotations


def rotations_relock(rotations: list[Rotation]) -> list[Rotation]:
    """These claimed rotations re-read and locked in id order, carrying over the resource,
    installation and batch instances of the claim: a record transaction re-checks the
    rotation rows, which others change (cancel), not the rows around them that it only names
    in its audit events."""
    carried = {rotation.pk: rotation for rotation in rotations}
    fresh = list(
        Rotation.objects.select_for_update(of=("self",)).filter(pk__in=carried).order_by("pk")
    )
    for rotation in fresh:
        rotation.resource = carried[rotation.pk].resource
        rotation.batch = carried[rotation.pk].batch
    return fresh
