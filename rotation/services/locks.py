"""Row locks on rotations, for the short claim and record transactions of the services.

Callers hold these locks only inside `transaction.atomic()` blocks that make no network or
provider call.
"""

from __future__ import annotations

from rotation.models import Rotation


def rotation_lock(rotation_id: int) -> Rotation:
    """The rotation, locked, with its resource, installation and batch."""
    return (
        Rotation.objects.select_for_update(of=("self",))
        .select_related("resource__installation", "batch")
        .get(pk=rotation_id)
    )


def rotations_lock(rotation_ids: list[int]) -> list[Rotation]:
    """The rotations, locked in id order (so two workers never deadlock)."""
    return list(
        Rotation.objects.select_for_update(of=("self",))
        .select_related("resource__installation", "batch")
        .filter(pk__in=rotation_ids)
        .order_by("pk")
    )
