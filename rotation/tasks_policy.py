"""django-q2 task of the rotation policies: one daily schedule (created by migration 0012)."""

from __future__ import annotations

from rotation.services.policy import rotations_request_overdue

# Same name as in migration 0012 (migrations must not import app code).
POLICY_SCHEDULE_NAME = "rotation: rotate credentials past their policy age"


def rotations_request_overdue_task() -> dict[str, int]:
    """Request rotations for resources past their policy age (at most the per-run cap)."""
    run = rotations_request_overdue()
    return {"overdue": run.overdue, "requested": len(run.requested), "batches": len(run.batches)}
