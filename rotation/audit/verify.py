"""Walk the audit hash chain in id order, in bounded memory, and name the first bad event."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from rotation.audit.chain import GENESIS_HASH, HASHED_FIELDS, canonical_hash
from rotation.models import AuditEvent

COLUMNS = ("id", "hash", *HASHED_FIELDS)


@dataclass(frozen=True)
class ChainReport:
    """What `audit_log_verify` found; `bad_event_id` is None when the chain is intact."""

    count: int
    head_hash: str
    last_id: int | None
    bad_event_id: int | None = None
    problem: str = ""  # modified, inserted, reordered, deleted, anchor_missing
    message: str = ""

    @property
    def intact(self) -> bool:
        return self.bad_event_id is None and not self.problem


def _rows(chunk_size: int) -> Iterator[dict]:
    # Keyset pagination: each chunk is one indexed range scan, whatever the table size.
    last_id = 0
    while True:
        chunk = list(
            AuditEvent.objects.filter(id__gt=last_id).order_by("id").values(*COLUMNS)[:chunk_size]
        )
        yield from chunk
        if len(chunk) < chunk_size:
            return
        last_id = chunk[-1]["id"]


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


def audit_log_verify(*, chunk_size: int = 5000, anchor: str = "") -> ChainReport:
    """Recompute every hash and link; stop at the first event that does not fit."""
    rows = _rows(chunk_size)
    count = 0
    previous: dict | None = None
    before_previous_hash: str | None = None
    expected_prev = GENESIS_HASH
    anchor_seen = not anchor
    row = next(rows, None)
    while row is not None:
        nxt = next(rows, None)
        if canonical_hash(row) != row["hash"]:
            return ChainReport(
                count,
                expected_prev,
                previous["id"] if previous else None,
                row["id"],
                "modified",
                f"event #{row['id']} was modified: its contents do not match its hash",
            )
        if row["prev_hash"] != expected_prev:
            bad_id, problem, message = _link_problem(row, previous, before_previous_hash, nxt)
            last_id = previous["id"] if previous else None
            return ChainReport(count, expected_prev, last_id, bad_id, problem, message)
        anchor_seen = anchor_seen or row["hash"] == anchor
        count += 1
        before_previous_hash = expected_prev
        expected_prev = row["hash"]
        previous = {"id": row["id"], "hash": row["hash"]}
        row = nxt
    last_id = previous["id"] if previous else None
    if not anchor_seen:
        return ChainReport(
            count,
            expected_prev,
            last_id,
            None,
            "anchor_missing",
            f"no event has the anchored hash {anchor}: events at or before it were removed",
        )
    return ChainReport(count, expected_prev, last_id)
