"""The audit trail: append-only, hash-chained events of everything staff, Vercel and the
system do, and the one way refusals are recorded.

Modules: `chain` (canonical bytes, keyed hashes, fingerprints), `trail` (appending events),
`refusals` (the refusal helper), `origin` (actor and origin values), `verify` (walking the
chain), `checkpoints` (signed checkpoints of the head) and `anchors` (where they are kept),
`signals` (sign-in events). The model, `AuditEvent`, and `AuditAction` live in
`rotation.models`.
"""

from rotation.audit.chain import fingerprint
from rotation.audit.origin import Actor, MaybeActor, Origin, VercelActor, actor_may
from rotation.audit.refusals import RotationRefused, refusal_record, refuse
from rotation.audit.trail import audit_batch, audit_context, audit_record, audit_record_many
from rotation.models import AuditAction

__all__ = [
    "Actor",
    "AuditAction",
    "MaybeActor",
    "Origin",
    "RotationRefused",
    "VercelActor",
    "actor_may",
    "audit_batch",
    "audit_context",
    "audit_record",
    "audit_record_many",
    "fingerprint",
    "refusal_record",
    "refuse",
]
