"""Running a batch the way the cluster does, in this process, and reading secret sets."""

from __future__ import annotations

from rotation import services, tasks
from rotation.models import Rotation, RotationBatch
from rotation.redaction import secret_values

State = Rotation.State


def run_batch(batch: RotationBatch) -> None:
    """What the cluster does: fan out, then process each chunk (synchronously, in-process)."""
    ids = list(batch.rotations.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(ids), services.CHUNK_SIZE):
        tasks.rotations_process(ids[start : start + services.CHUNK_SIZE])


# Every value of a secret set, overrides included.
all_values = secret_values
