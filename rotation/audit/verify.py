"""Walk the audit hash chain in id order, in bounded memory, and name the first bad event.

Besides each event's hash and link, the walk checks the hash schemes (unkeyed events only
before the `audit.chain_keyed` marker, keyed ones from it or from the first event on, a
keyed head) and the signed checkpoints of the anchor: the event each names must still be
there with the same hash and count, so deleting the newest events is noticed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from django.db.models import TextField
from django.db.models.functions import Cast

from rotation.audit.chain import GENESIS_HASH, audit_chain_key
from rotation.audit.checkpoints import Checkpoint, checkpoints_sorted
from rotation.audit.pages import ACTION, COLUMNS, fast_verify, recomputed_hash
from rotation.models import AuditAction, AuditEvent

KEYED = AuditEvent.HashScheme.HMAC_SHA256
RAW_COLUMNS = tuple("details_json" if name == "details" else name for name in COLUMNS)


@dataclass(frozen=True)
class ChainReport:
    """What `audit_log_verify` found; `bad_event_id` is None when the chain is intact."""

    count: int
    head_hash: str
    last_id: int | None
    bad_event_id: int | None = None
    # modified, inserted, reordered, deleted, anchor_missing, unkeyed, truncated,
    # checkpoint_mismatch
    problem: str = ""
    message: str = ""
    checkpoints: int = 0  # checkpoints the chain was checked against

    @property
    def intact(self) -> bool:
        return self.bad_event_id is None and not self.problem


def _rows(chunk_size: int, page_size: int) -> Iterator[dict]:
    """Events as dicts in id order: keyset pages, each streamed through a server-side cursor
    on PostgreSQL, so memory holds one fetch whatever the table size."""
    last_id = 0
    while True:
        page = (
            AuditEvent.objects.filter(id__gt=last_id)
            .annotate(details_json=Cast("details", TextField()))  # as stored, not yet parsed
            .order_by("id")
            .values_list(*RAW_COLUMNS)[:page_size]
            .iterator(chunk_size=chunk_size)
        )
        seen = 0
        while batch := list(itertools.islice(page, chunk_size)):
            yield from _checked(batch)
            seen += len(batch)
            last_id = batch[-1][0]
        if seen < page_size:
            return


def _checked(batch: Sequence[tuple]) -> list[dict]:
    """The rows of one fetch, each with `computed`: its hash recomputed ("" when it cannot be)."""
    key = audit_chain_key()
    return [
        {
            "id": row[0],
            "hash": row[1],
            "hash_scheme": row[2],
            "action": row[ACTION],
            "prev_hash": row[-1],
            "computed": recomputed_hash(row, key),
        }
        for row in batch
    ]


def _link_problem(
    row: dict, previous: dict | None, before_previous_hash: str | None, nxt: dict | None
) -> tuple[int, str, str]:
    """Classify a row whose prev_hash is not its predecessor's hash."""
    previous_label = f"event #{previous['id']}" if previous else "the start of the log"
    if previous and row["prev_hash"] == before_previous_hash:
        return (
            previous["id"],
            "inserted",
            (
                f"event #{previous['id']} was inserted: event #{row['id']} is chained to the "
                f"event before it"
            ),
        )
    if nxt is not None and nxt["hash"] == row["prev_hash"]:
        return (
            row["id"],
            "reordered",
            (f"event #{row['id']} is out of order: it is chained after event #{nxt['id']}"),
        )
    if nxt is not None and previous is not None and nxt["prev_hash"] == previous["hash"]:
        return (
            row["id"],
            "inserted",
            (f"event #{row['id']} was inserted: event #{nxt['id']} is chained to {previous_label}"),
        )
    return (
        row["id"],
        "deleted",
        (
            f"event #{row['id']} does not follow {previous_label}: the event it was chained to "
            f"is missing (deleted, or replaced together with its hash)"
        ),
    )


def _scheme_problem(row: dict, previous: dict | None, keyed_from: int | None) -> str:
    """Why the event's hash scheme is out of place ("" when it fits)."""
    if row["hash_scheme"] == KEYED:
        if (
            keyed_from is None
            and previous is not None
            and row["action"] != (AuditAction.AUDIT_CHAIN_KEYED)
        ):
            return (
                f"event #{row['id']} is keyed but follows unkeyed events without the "
                f"{AuditAction.AUDIT_CHAIN_KEYED.value} marker"
            )
        return ""
    if keyed_from is not None:
        return (
            f"event #{row['id']} claims the unkeyed scheme, but the chain is keyed from "
            f"event #{keyed_from} on"
        )
    return ""


def _hash_problem(row: dict) -> str:
    if row["computed"] == row["hash"]:
        return ""
    return f"event #{row['id']} was modified: its contents do not match its hash"


def _checkpoint_problem(checkpoint: Checkpoint, row: dict | None, count: int) -> tuple[str, str]:
    """Compare the checkpoint with the chain's event at or after its id (None: chain ended)."""
    if row is None or row["id"] != checkpoint.last_id:
        if row is None:
            return (
                "truncated",
                f"the chain ends after {count} events, but the checkpoint of "
                f"{checkpoint.created_at} names event #{checkpoint.last_id} ({checkpoint.count} "
                f"events): the newest events were deleted",
            )
        return (
            "truncated",
            f"event #{checkpoint.last_id}, the head at the checkpoint of "
            f"{checkpoint.created_at}, is no longer in the chain: events were deleted",
        )
    if row["hash"] != checkpoint.hash or count != checkpoint.count:
        return (
            "checkpoint_mismatch",
            f"event #{row['id']} (hash {row['hash'][:16]}…, {count} events) does not match the "
            f"checkpoint of {checkpoint.created_at} (hash {checkpoint.hash[:16]}…, "
            f"{checkpoint.count} events)",
        )
    return "", ""


def audit_log_verify(
    *,
    chunk_size: int = 5000,
    page_size: int = 100_000,
    anchor: str = "",
    checkpoints: Sequence[Checkpoint] = (),
    processes: int = 1,
) -> ChainReport:
    """Recompute every hash and link; stop at the first event or checkpoint that does not fit.

    Keyset pages of `page_size` events are checked first, in `processes` processes on
    PostgreSQL (see `rotation.audit.pages`); only when they find something is the chain walked
    event by event. `checkpoints` come from `rotation.audit.checkpoints.checkpoints_read`
    (signatures checked).
    """
    pending = checkpoints_sorted(checkpoints)
    checked = len(checkpoints) - len(pending)  # those of the empty chain hold at any length
    fast = fast_verify(
        page_size=max(page_size, chunk_size),
        chunk_size=chunk_size,
        checkpoint_ids=[checkpoint.last_id for checkpoint in pending if checkpoint.last_id],
        anchor=anchor,
        processes=processes,
    )
    if (
        fast is not None
        and fast.anchor_seen
        and all(
            fast.checkpoint_hits.get(checkpoint.last_id or 0) == (checkpoint.hash, checkpoint.count)
            for checkpoint in pending
        )
    ):
        return ChainReport(fast.count, fast.head_hash, fast.last_id, checkpoints=len(checkpoints))
    # Something does not fit: walk event by event to name the first bad one exactly.
    rows = _rows(chunk_size, max(page_size, chunk_size))
    count = 0
    previous: dict | None = None
    before_previous_hash: str | None = None
    expected_prev = GENESIS_HASH
    keyed_from: int | None = None
    anchor_seen = not anchor
    row = next(rows, None)

    def report(bad_id: int | None, problem: str, message: str) -> ChainReport:
        last_id = previous["id"] if previous else None
        return ChainReport(count, expected_prev, last_id, bad_id, problem, message, checked)

    while row is not None:
        nxt = next(rows, None)
        if message := _scheme_problem(row, previous, keyed_from) or _hash_problem(row):
            return report(row["id"], "modified", message)
        if row["prev_hash"] != expected_prev:
            bad_id, problem, message = _link_problem(row, previous, before_previous_hash, nxt)
            return report(bad_id, problem, message)
        anchor_seen = anchor_seen or row["hash"] == anchor
        if keyed_from is None and row["hash_scheme"] == KEYED:
            keyed_from = row["id"]
        count += 1
        while pending and (pending[0].last_id or 0) <= row["id"]:
            problem, message = _checkpoint_problem(pending.pop(0), row, count)
            if problem:
                return report(
                    row["id"] if problem == "checkpoint_mismatch" else None, problem, message
                )
            checked += 1
        before_previous_hash = expected_prev
        expected_prev = row["hash"]
        previous = {"id": row["id"], "hash": row["hash"]}
        row = nxt
    if pending:
        return report(None, *_checkpoint_problem(pending[0], None, count))
    if not anchor_seen:
        return report(
            None,
            "anchor_missing",
            f"no event has the anchored hash {anchor}: events at or before it were removed",
        )
    if count and keyed_from is None:
        return report(
            None,
            "unkeyed",
            "no event is keyed: the chain predates AUDIT_CHAIN_KEY and has not been continued "
            "since (run manage.py audit_checkpoint to start its keyed segment), or it was "
            "rewritten without the key",
        )
    return report(None, "", "")
