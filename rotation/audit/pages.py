"""The audit chain checked page by page, pages hashed in parallel: the fast path of
`audit_log_verify`.

Each page (a keyset range of ids) is read through a server-side cursor and summarised: its
ends, whether every event in it recomputes to its hash and links to the one before, where
its keyed segment starts, and the checkpoints and anchor it holds. Pages are independent, so
on PostgreSQL several processes hash them at once; stitching the summaries checks what
crosses page boundaries. The fast path only ever answers "intact": on anything else the
caller runs the exact walk, which names the first bad event.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from django.db import connection, connections

from rotation.audit.chain import GENESIS_HASH, HASHED_FIELDS, audit_chain_key, fields_hash
from rotation.models import AuditAction, AuditEvent

COLUMNS = ("id", "hash", "hash_scheme", *HASHED_FIELDS)
ACTION = COLUMNS.index("action")
PREV_HASH = COLUMNS.index("prev_hash")
KEYED = int(AuditEvent.HashScheme.HMAC_SHA256)
SCHEMES = frozenset(int(value) for value in AuditEvent.HashScheme.values)
MARKER = AuditAction.AUDIT_CHAIN_KEYED.value
TABLE = AuditEvent._meta.db_table


@dataclass
class PageSummary:
    """What one page holds, as far as the chain's rules can be checked inside it."""

    count: int = 0
    first_prev_hash: str = ""
    last_id: int | None = None
    last_hash: str = ""
    broken: bool = False  # a hash that does not recompute, or a link inside the page
    first_keyed_index: int | None = None
    first_keyed_is_marker: bool = False
    unkeyed_after_keyed: bool = False
    checkpoint_hits: dict[int, tuple[str, int]] = field(default_factory=dict)  # id: hash, index
    anchor_seen: bool = False


@dataclass(frozen=True)
class FastResult:
    """An intact chain as the pages saw it."""

    count: int
    head_hash: str
    last_id: int | None
    checkpoint_hits: dict[int, tuple[str, int]]  # id: hash, count up to and including it
    anchor_seen: bool


def page_summary(
    bounds: tuple[int, int | None], checkpoint_ids: frozenset[int], anchor: str, chunk_size: int
) -> PageSummary:
    """Summarise the events with `after < id <= upto` (to the end when `upto` is None)."""
    after, upto = bounds
    key = audit_chain_key()
    summary = PageSummary()
    sql = f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE id > %s"  # noqa: S608 (model names)
    params: list[int] = [after]
    if upto is not None:
        sql += " AND id <= %s"
        params.append(upto)
    expected_prev = None
    keyed_seen = False
    server_side = not connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
    with connection.chunked_cursor() if server_side else connection.cursor() as cursor:
        cursor.execute(sql + " ORDER BY id", params)
        while rows := cursor.fetchmany(chunk_size):
            for row in rows:
                scheme = row[2]
                if (
                    expected_prev is not None and row[PREV_HASH] != expected_prev
                ) or recomputed_hash(row, key) != row[1]:
                    summary.broken = True
                    return summary
                if expected_prev is None:
                    summary.first_prev_hash = row[PREV_HASH]
                if scheme == KEYED:
                    if not keyed_seen:
                        keyed_seen = True
                        summary.first_keyed_index = summary.count
                        summary.first_keyed_is_marker = row[ACTION] == MARKER
                elif keyed_seen:
                    summary.unkeyed_after_keyed = True
                if row[0] in checkpoint_ids:
                    summary.checkpoint_hits[row[0]] = (row[1], summary.count)
                if row[1] == anchor:
                    summary.anchor_seen = True
                summary.count += 1
                expected_prev = row[1]
                summary.last_id = row[0]
        summary.last_hash = expected_prev or ""
    return summary


def recomputed_hash(row: tuple, key: bytes) -> str:
    """The hash of a COLUMNS row recomputed, or "" when it cannot be (an unknown scheme, or
    details that could never have been written, such as a plain secret)."""
    if row[2] not in SCHEMES:
        return ""
    try:
        return fields_hash(row[3:], row[2], key)
    except ValueError:
        return ""


def page_bounds(page_size: int) -> Iterator[tuple[int, int | None]]:
    """Keyset pages of `page_size` ids: each bound found by one index-only step."""
    after = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id FROM {TABLE} WHERE id > %s ORDER BY id LIMIT 1 OFFSET %s",  # noqa: S608
                [after, page_size - 1],
            )
            row = cursor.fetchone()
        if row is None:
            yield after, None
            return
        yield after, row[0]
        after = row[0]


def fast_verify(
    *,
    page_size: int,
    chunk_size: int,
    checkpoint_ids: Sequence[int],
    anchor: str,
    processes: int,
) -> FastResult | None:
    """The chain's count, head and checkpoint positions when every rule holds; None when
    anything does not (the exact walk then finds and names it)."""
    wanted = frozenset(checkpoint_ids)
    jobs = [(bounds, wanted, anchor, chunk_size) for bounds in page_bounds(page_size)]
    summaries = _summaries(jobs, processes)
    count = 0
    head = GENESIS_HASH
    last_id: int | None = None
    keyed = False
    hits: dict[int, tuple[str, int]] = {}
    anchor_seen = not anchor
    for summary in summaries:
        if summary.broken:
            return None
        if not summary.count:
            continue
        if summary.first_prev_hash != head:
            return None
        if keyed and (summary.first_keyed_index != 0 or summary.unkeyed_after_keyed):
            return None  # an unkeyed event after the keyed segment began
        if not keyed and summary.first_keyed_index is not None:
            at_start = count == 0 and summary.first_keyed_index == 0
            if summary.unkeyed_after_keyed or not (at_start or summary.first_keyed_is_marker):
                return None
            keyed = True
        for event_id, (event_hash, index) in summary.checkpoint_hits.items():
            hits[event_id] = (event_hash, count + index + 1)
        anchor_seen = anchor_seen or summary.anchor_seen
        count += summary.count
        head = summary.last_hash
        last_id = summary.last_id
    if count and not keyed:
        return None
    return FastResult(count, head, last_id, hits, anchor_seen)


def _summaries(jobs: list[tuple], processes: int) -> Iterator[PageSummary]:
    if (
        processes <= 1
        or len(jobs) == 1
        or connection.vendor != "postgresql"
        or connection.in_atomic_block  # other processes would not see this transaction's rows
    ):
        # SQLite has one writer and no server to share the work with; in-process is as fast.
        yield from (page_summary(*job) for job in jobs)
        return
    connections.close_all()  # each process opens its own connection
    context = multiprocessing.get_context("fork")
    with context.Pool(processes, initializer=connections.close_all) as pool:
        yield from pool.starmap(page_summary, jobs, chunksize=1)
