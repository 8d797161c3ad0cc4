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

import json
import multiprocessing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from django.db import connection, connections

from rotation.audit.chain import (
    GENESIS_HASH,
    HASHED_FIELDS,
    INT_FIELDS,
    SORTED_FIELDS,
    audit_chain_key,
    fields_hash,
    text_fields_hash,
)
from rotation.models import AuditAction, AuditEvent

COLUMNS = ("id", "hash", "hash_scheme", *HASHED_FIELDS)
ACTION = COLUMNS.index("action")
PREV_HASH = COLUMNS.index("prev_hash")
DETAILS_FIELD = HASHED_FIELDS.index("details")


def _as_text(name: str) -> str:
    """PostgreSQL's expression for a hashed field in `text_fields_hash`'s form."""
    # A NULL sends the event to the typed path.
    if name == "created_at":  # NULL for years strftime does not pad
        return (
            "CASE WHEN created_at >= '1000-01-01' THEN to_char(created_at AT TIME ZONE 'UTC', "
            """'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') END"""
        )
    if name == "source_ip":  # NULL for one with a netmask: the typed path reads no address
        return (
            "CASE WHEN source_ip IS NULL THEN '' WHEN masklen(source_ip) = "
            "CASE family(source_ip) WHEN 4 THEN 32 ELSE 128 END THEN host(source_ip) END"
        )
    if name == "details":
        return "details::text"
    if name in INT_FIELDS:
        return f"coalesce({name}::text, 'null')"
    return f"coalesce({name}, '')"


TEXT_FIELDS = 3  # where the hashed fields begin in a TEXT_COLUMNS row
TEXT_COLUMNS = ("id", "hash", "hash_scheme", *(_as_text(name) for name in SORTED_FIELDS))
TEXT_ACTION = TEXT_FIELDS + SORTED_FIELDS.index("action")
TEXT_PREV_HASH = TEXT_FIELDS + SORTED_FIELDS.index("prev_hash")
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
    summary = PageSummary()
    expected_prev = None
    keyed_seen = False
    for event_id, event_hash, scheme, action, prev_hash, computed in _checked_rows(
        bounds, chunk_size
    ):
        if (expected_prev is not None and prev_hash != expected_prev) or computed != event_hash:
            summary.broken = True
            return summary
        if expected_prev is None:
            summary.first_prev_hash = prev_hash
        if scheme == KEYED:
            if not keyed_seen:
                keyed_seen = True
                summary.first_keyed_index = summary.count
                summary.first_keyed_is_marker = action == MARKER
        elif keyed_seen:
            summary.unkeyed_after_keyed = True
        if event_id in checkpoint_ids:
            summary.checkpoint_hits[event_id] = (event_hash, summary.count)
        if event_hash == anchor:
            summary.anchor_seen = True
        summary.count += 1
        expected_prev = event_hash
        summary.last_id = event_id
    summary.last_hash = expected_prev or ""
    return summary


def _checked_rows(
    bounds: tuple[int, int | None], chunk_size: int
) -> Iterator[tuple[int, str, int, str, str, str]]:
    """(id, hash, hash_scheme, action, prev_hash, recomputed hash) of a page's events in id
    order, read through a server-side cursor where there is one.

    PostgreSQL renders the hashed fields as text (`TEXT_COLUMNS`), which `text_fields_hash`
    hashes without building typed values; an event it leaves out is read again, typed."""
    after, upto = bounds
    key = audit_chain_key()
    text_path = connection.vendor == "postgresql"
    columns = TEXT_COLUMNS if text_path else COLUMNS
    sql = f"SELECT {', '.join(columns)} FROM {TABLE} WHERE id > %s"  # noqa: S608 (model names)
    params: list[int] = [after]
    if upto is not None:
        sql += " AND id <= %s"
        params.append(upto)
    server_side = not connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
    with connection.chunked_cursor() if server_side else connection.cursor() as cursor:
        cursor.execute(sql + " ORDER BY id", params)
        while rows := cursor.fetchmany(chunk_size):
            for row in rows:
                if not text_path:
                    yield (
                        row[0],
                        row[1],
                        row[2],
                        row[ACTION],
                        row[PREV_HASH],
                        recomputed_hash(row, key),
                    )
                    continue
                scheme, fields = row[2], row[TEXT_FIELDS:]
                computed = ""  # an unknown scheme never recomputes
                if scheme in SCHEMES:
                    text_hash = (
                        text_fields_hash(fields, scheme, key) if None not in fields else None
                    )
                    computed = text_hash or _typed_recomputed_hash(row[0], key)
                yield row[0], row[1], scheme, row[TEXT_ACTION], row[TEXT_PREV_HASH], computed


def _typed_recomputed_hash(event_id: int, key: bytes) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE id = %s",  # noqa: S608
            [event_id],
        )
        row = cursor.fetchone()
    return recomputed_hash(row, key) if row else ""


def recomputed_hash(row: tuple, key: bytes) -> str:
    """The hash of a COLUMNS row as SQL returns it (details as JSON text) recomputed, or ""
    when it cannot be (an unknown scheme, details that are not JSON, or that could never have
    been written, such as a plain secret)."""
    if row[2] not in SCHEMES:
        return ""
    fields = list(row[3:])
    details = fields[DETAILS_FIELD]
    try:
        fields[DETAILS_FIELD] = None if details is None else json.loads(details)
        return fields_hash(fields, row[2], key)
    except (TypeError, ValueError):
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
