"""Rotate and push: request, prepare, push, cancel, retry and roll back rotations. The rules
live here.

Lifecycle: requested -> preparing (pending version sealed) -> pushing -> awaiting_redeploy,
or failed (pending version kept, retry is one call). Every step writes its audit event in
the same transaction as its change; refusals go through `rotation.audit.refuse`, which
audits them in a transaction of their own. Each service owns its transactions: callers must
not wrap them in one. Services never call Vercel or a provider while holding row locks.

Heartbeat: `state_changed_at` is also touched when a push attempt starts and when the sweeper
re-queues a rotation, so "stuck" means "nobody touched it for longer than a task may live".
A rotation waiting for a transient error to pass stays `pushing` with `next_attempt_at` set.

Modules: `request` (permission checks, preview, the batch), `prepare` and `push` (a chunk
of rotations at a time), `staff` (cancel, retry), `rollback` (requested by staff, run by a
task), `sweeper`, `enqueue` (chunk tasks), `locks` (row locks for the short transactions),
`timing` (task time limits), `backoff` (when to retry a Vercel call), `endpoints` (switching
installations off the deprecated secrets endpoint, by staff or by a push's fallback),
`policy` (maximum credential age), `task_results` (pruning django-q2's kept results).
Credential versions taken out of use are retired through `rotation.providers.retirement`,
after the commit. `chunk` streams a chunk task's prepare into its push.
"""

from rotation.audit import RotationRefused
from rotation.services.chunk import rotations_prepare_and_push
from rotation.services.enqueue import CHUNK_SIZE, rotations_enqueue
from rotation.services.prepare import batch_dispatch, rotation_prepare, rotations_prepare
from rotation.services.push import rotation_push, rotations_push
from rotation.services.request import RotationPreview, rotation_request, rotation_request_preview
from rotation.services.rollback import rotation_rollback, rotation_rollback_run
from rotation.services.staff import (
    CANCELLABLE_STATES,
    batch_cancel,
    batch_retry_failed,
    rotation_cancel,
    rotation_retry,
)
from rotation.services.sweeper import marketplace_requeue_due, rotations_requeue_stuck
from rotation.services.timing import chunk_budget, stuck_after

__all__ = [
    "CANCELLABLE_STATES",
    "CHUNK_SIZE",
    "RotationPreview",
    "RotationRefused",
    "batch_cancel",
    "batch_dispatch",
    "batch_retry_failed",
    "chunk_budget",
    "marketplace_requeue_due",
    "rotation_cancel",
    "rotation_prepare",
    "rotation_push",
    "rotation_request",
    "rotation_request_preview",
    "rotation_retry",
    "rotation_rollback",
    "rotation_rollback_run",
    "rotations_enqueue",
    "rotations_prepare",
    "rotations_prepare_and_push",
    "rotations_push",
    "rotations_requeue_stuck",
    "stuck_after",
]
