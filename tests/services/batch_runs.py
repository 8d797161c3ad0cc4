"""Running a batch the way the cluster does, in this process, and reading secret sets."""

from __future__ import annotations

from rotation import services, tasks
from rotation.models import Rotation, RotationBatch

State = Rotation.State


def run_batch(batch: RotationBatch) -> None:
    """What the cluster does: fan out, then process each chunk (synchronously, in-process)."""
    ids = list(batch.rotations.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(ids), services.CHUNK_SIZE):
        tasks.rotations_process(ids[start : start + services.CHUNK_SIZE])


def all_values(secrets: list[dict]) -> list[str]:
    """Every value of a secret set, overrides included."""
    values = []
    for secret in secrets:
        values.append(secret["value"])
        values.extend((secret.get("environmentOverrides") or {}).values())
    return values
