"""Signed checkpoints of the audit chain's head, appended to the anchor (`AUDIT_ANCHOR_URL`).

A checkpoint says "at `created_at` the chain's newest event was #`last_id` with `hash`, and
`count` events reached it". It is one line of canonical JSON (sorted keys, no spaces, ASCII):

    {"count":1234,"created_at":"2026-11-28T05:00:00.123456Z","hash":"<64 hex>",
     "last_id":1234,"signature":"hmac-sha256:<64 hex>","type":"partnerportal.audit_checkpoint",
     "v":1}

`signature` is HMAC-SHA256 over the same JSON without `signature`, under a key derived from
`AUDIT_CHAIN_KEY` (HMAC-SHA256 of `CHECKPOINT_KEY_LABEL` under it), so a checkpoint and an
event hash are never computed under the same key. Someone who can write the database but
does not hold the key can neither forge a checkpoint nor make a shortened chain match one.

Writing a checkpoint is itself audited (`audit.checkpointed`, success or failure): the event
follows the head it records, so the next checkpoint covers it, and compliance sees in the
trail when anchoring stopped working.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from rotation.audit.anchors import AnchorError, AnchorSink, anchor_label, anchor_sink
from rotation.audit.chain import GENESIS_HASH, audit_chain_key
from rotation.audit.trail import audit_record
from rotation.models import AuditAction, AuditEvent

CHECKPOINT_TYPE = "partnerportal.audit_checkpoint"
CHECKPOINT_KEY_LABEL = b"partnerportal audit checkpoint v1"
SIGNATURE_PREFIX = "hmac-sha256:"


class CheckpointInvalid(Exception):
    """An anchor line is not a checkpoint this key signed; the message names the line."""


@dataclass(frozen=True)
class Checkpoint:
    """The chain's head at `created_at` (ISO 8601 UTC); `last_id` None for an empty chain."""

    last_id: int | None
    hash: str
    count: int
    created_at: str
    signature: str = ""

    def signed_json(self) -> str:
        fields = {**asdict(self), "type": CHECKPOINT_TYPE, "v": 1}
        fields.pop("signature")
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    def line(self) -> str:
        fields = {**json.loads(self.signed_json()), "signature": self.signature}
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def checkpoint_key(chain_key: bytes | None = None) -> bytes:
    """The signing key: HMAC-SHA256 of CHECKPOINT_KEY_LABEL under AUDIT_CHAIN_KEY."""
    return hmac.new(chain_key or audit_chain_key(), CHECKPOINT_KEY_LABEL, hashlib.sha256).digest()


def checkpoint_signature(checkpoint: Checkpoint, *, key: bytes) -> str:
    digest = hmac.new(key, checkpoint.signed_json().encode("ascii"), hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def checkpoint_parse(line: str, *, key: bytes, number: int = 0) -> Checkpoint:
    """A signed checkpoint from one anchor line; CheckpointInvalid unless well formed and signed."""
    where = f"anchor line {number}" if number else "anchor line"
    try:
        fields: Any = json.loads(line)
    except (ValueError, RecursionError):
        raise CheckpointInvalid(f"{where} is not JSON") from None
    if (
        not isinstance(fields, dict)
        or fields.get("type") != CHECKPOINT_TYPE
        or fields.get("v") != 1
    ):
        raise CheckpointInvalid(f"{where} is not a version 1 audit checkpoint")
    last_id, count = fields.get("last_id"), fields.get("count")
    text_fields = [fields.get(name) for name in ("hash", "created_at", "signature")]
    if (
        not (last_id is None or (type(last_id) is int and last_id > 0))
        or type(count) is not int
        or count < 0
        or not all(isinstance(value, str) for value in text_fields)
        or set(fields) != {"v", "type", "last_id", "hash", "count", "created_at", "signature"}
    ):
        raise CheckpointInvalid(f"{where} has missing, extra or mistyped fields")
    checkpoint = Checkpoint(
        last_id, fields["hash"], count, fields["created_at"], fields["signature"]
    )
    expected = checkpoint_signature(checkpoint, key=key)
    if not hmac.compare_digest(expected.encode(), checkpoint.signature.encode("ascii", "replace")):
        raise CheckpointInvalid(
            f"{where} (checkpoint of {checkpoint.created_at[:40]}, event #{last_id}) has a "
            f"signature that does not match: forged, altered, or signed with another "
            f"AUDIT_CHAIN_KEY"
        )
    return checkpoint


def checkpoints_read(
    sink: AnchorSink | None = None, *, key: bytes | None = None
) -> list[Checkpoint]:
    """Every checkpoint in the anchor, oldest first; CheckpointInvalid at the first bad line.

    Held in memory: one line per hour is about 9,000 a year, independent of the event count.
    """
    sink = sink or anchor_sink()
    key = key or checkpoint_key()
    return [
        checkpoint_parse(line, key=key, number=number)
        for number, line in enumerate(sink.lines(), 1)
        if line.strip()
    ]


def chain_head() -> Checkpoint:
    """The unsigned checkpoint of the chain as committed now."""
    head = AuditEvent.objects.order_by("-id").values("id", "hash").first()
    created_at = timezone.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if head is None:
        return Checkpoint(None, GENESIS_HASH, 0, created_at)
    # Ids grow in chain order (appends are serialized), so this counts the chain up to the head.
    count = AuditEvent.objects.filter(id__lte=head["id"]).count()
    return Checkpoint(head["id"], head["hash"], count, created_at)


def checkpoint_mismatch(checkpoint: Checkpoint) -> str:
    """Why the chain no longer agrees with `checkpoint` ("" when it does); one indexed lookup."""
    if checkpoint.last_id is None:
        return ""
    stored = AuditEvent.objects.filter(id=checkpoint.last_id).values_list("hash", flat=True).first()
    if stored is None:
        return (
            f"event #{checkpoint.last_id}, the head at the checkpoint of {checkpoint.created_at}, "
            f"is no longer in the chain: events were deleted"
        )
    if stored != checkpoint.hash:
        return (
            f"event #{checkpoint.last_id} no longer has the hash the checkpoint of "
            f"{checkpoint.created_at} recorded"
        )
    count = AuditEvent.objects.filter(id__lte=checkpoint.last_id).count()
    if count != checkpoint.count:
        return (
            f"{count} events reach event #{checkpoint.last_id}, but the checkpoint of "
            f"{checkpoint.created_at} counted {checkpoint.count}"
        )
    return ""


def _record(*, outcome: str, via: str, details: dict[str, Any]) -> None:
    with transaction.atomic():
        audit_record(
            action=AuditAction.AUDIT_CHECKPOINTED,
            outcome=outcome,
            details={"via": via, "anchor": anchor_label(), **details},
        )


def audit_checkpoint_write(*, via: str) -> Checkpoint:
    """Sign the chain's head and append it to the anchor; audited either way.

    Refuses (AnchorError, audited as a failure) when the newest earlier checkpoint no longer
    matches the chain, so a truncated chain is reported within the hour instead of being
    signed. `via` says who asked: "schedule" or "command".
    """
    try:
        key = checkpoint_key()
        sink = anchor_sink()
        earlier = checkpoints_read(sink, key=key)
        if earlier and (problem := checkpoint_mismatch(earlier[-1])):
            raise AnchorError(f"not signing the chain's head: {problem}")
        head = chain_head()
        checkpoint = Checkpoint(
            head.last_id,
            head.hash,
            head.count,
            head.created_at,
            checkpoint_signature(head, key=key),
        )
        sink.append(checkpoint.line())  # outside any transaction: the anchor may be remote
    except (AnchorError, CheckpointInvalid) as exc:
        _record(outcome=AuditEvent.Outcome.FAILURE, via=via, details={"message": str(exc)})
        raise AnchorError(str(exc)) from None
    _record(
        outcome=AuditEvent.Outcome.SUCCESS,
        via=via,
        details={"last_id": checkpoint.last_id, "hash": checkpoint.hash, "count": checkpoint.count},
    )
    return checkpoint


def checkpoints_sorted(checkpoints: Iterable[Checkpoint]) -> list[Checkpoint]:
    """Checkpoints of a non-empty chain, by the event they name."""
    return sorted(
        (checkpoint for checkpoint in checkpoints if checkpoint.last_id is not None),
        key=lambda checkpoint: checkpoint.last_id or 0,
    )
