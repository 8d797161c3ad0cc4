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

import gc
import itertools
import json
import multiprocessing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast

from django.db import connection, connections

from rotation.audit.chain import (
    GENESIS_HASH,
    HASHED_FIELDS,
    INT_FIELDS,
    SORTED_FIELDS,
    audit_chain_key,
    details_canonical_all,
    fields_hash,
    spliced_hashes,
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


def _canonical_sql() -> tuple[str, str, int]:
    """PostgreSQL's expressions for an event's canonical JSON before and after its details,
    and the double quotes they hold when no text holds one (an address adds two).

    Text goes in raw: that is its JSON only for printable ASCII without `"` or `\\`, which
    `_plain` checks by counting what else is left. A NULL sends the event elsewhere: a
    year strftime does not pad, or an address the typed path reads otherwise (one with a
    netmask reads as none there) or Python prints otherwise (IPv4 embedded in IPv6).
    """
    parts: list[list[str]] = [[]]
    literal = "{"
    for name in SORTED_FIELDS:
        literal += f'"{name}":'
        if name == "details":
            parts[-1].append(literal)
            parts.append([])
            literal = ","
            continue
        if name == "created_at":
            value = "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        elif name == "source_ip":
            value = (
                "CASE WHEN source_ip IS NULL THEN 'null' ELSE '\"' || host(source_ip) || '\"' END"
            )
        elif name in INT_FIELDS:
            value = f"coalesce({name}::text, 'null')"
        else:
            value = name  # NULL (no column allows it) makes the part NULL: the text path
        quoted = name != "source_ip" and name not in INT_FIELDS
        parts[-1] += [literal + '"' if quoted else literal, value]
        literal = '",' if quoted else ","
    parts[-1] += [literal + '"v":', "hash_scheme", "}"]
    before, after = (  # || costs PostgreSQL less than concat()
        " || ".join(f"'{piece}'" if n % 2 == 0 else piece for n, piece in enumerate(part))
        for part in parts
    )
    quotes = sum(piece.count('"') for part in parts for piece in part[::2])
    full_mask = "masklen(source_ip) = CASE family(source_ip) WHEN 4 THEN 32 ELSE 128 END"
    return (
        f"CASE WHEN created_at >= '1000-01-01' AND created_at < '10000-01-01' THEN {before} END",
        f"CASE WHEN source_ip IS NULL OR {full_mask} AND (family(source_ip) = 4 OR "
        f"strpos(host(source_ip), '.') = 0) THEN {after} END",
        quotes,
    )


_BEFORE_DETAILS, _AFTER_DETAILS, QUOTES = _canonical_sql()
# What pages read on PostgreSQL: the event's canonical JSON in three parts, around its details.
SPLICED_COLUMNS = (
    "id",
    "hash",
    "hash_scheme",
    "action",
    "prev_hash",
    "source_ip IS NOT NULL",
    _BEFORE_DETAILS,
    "details::text",
    _AFTER_DETAILS,
)


TEXT_FIELDS = 3  # where the hashed fields begin in a TEXT_COLUMNS row
TEXT_COLUMNS = ("id", "hash", "hash_scheme", *(_as_text(name) for name in SORTED_FIELDS))
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
    collecting = gc.isenabled()
    gc.disable()  # each fetch makes thousands of tuples but no cycles: collections only cost
    try:
        return _summary(bounds, checkpoint_ids, anchor, chunk_size)
    finally:
        if collecting:
            gc.enable()


def _summary(
    bounds: tuple[int, int | None], checkpoint_ids: frozenset[int], anchor: str, chunk_size: int
) -> PageSummary:
    summary = PageSummary()
    keyed_seen = False
    for ids, hashes, schemes, actions, prevs, computed in _checked_chunks(bounds, chunk_size):
        linked = prevs[1:] == hashes[:-1] and (not summary.count or prevs[0] == summary.last_hash)
        if computed != hashes or not linked:
            summary.broken = True
            return summary
        if not summary.count:
            summary.first_prev_hash = prevs[0]
        keyed_from = 0 if keyed_seen else schemes.index(KEYED) if KEYED in schemes else None
        if keyed_from is not None:
            if not keyed_seen:
                keyed_seen = True
                summary.first_keyed_index = summary.count + keyed_from
                summary.first_keyed_is_marker = actions[keyed_from] == MARKER
            if schemes.count(KEYED) != len(schemes) - keyed_from:
                summary.unkeyed_after_keyed = True
        for event_id in checkpoint_ids.intersection(ids):
            index = ids.index(event_id)
            summary.checkpoint_hits[event_id] = (hashes[index], summary.count + index)
        if anchor in hashes:
            summary.anchor_seen = True
        summary.count += len(ids)
        summary.last_id = ids[-1]
        summary.last_hash = hashes[-1]
    return summary


def _checked_chunks(
    bounds: tuple[int, int | None], chunk_size: int
) -> Iterator[tuple[tuple, tuple, tuple, tuple, tuple, tuple]]:
    """A page's events in id order, a fetch at a time, as columns: ids, hashes, hash schemes,
    actions, prev_hashes and recomputed hashes; read through a server-side cursor where there
    is one.

    PostgreSQL renders each event's canonical JSON around its details (`SPLICED_COLUMNS`);
    `_spliced_hashes` hashes it with the details re-encoded. Events it cannot vouch for are
    read again as text fields (`TEXT_COLUMNS`), and the few those leave out, typed."""
    after, upto = bounds
    key = audit_chain_key()
    spliced = connection.vendor == "postgresql"
    columns = SPLICED_COLUMNS if spliced else COLUMNS
    sql = f"SELECT {', '.join(columns)} FROM {TABLE} WHERE id > %s"  # noqa: S608 (model names)
    params: list[int] = [after]
    if upto is not None:
        sql += " AND id <= %s"
        params.append(upto)
    server_side = not connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
    with connection.chunked_cursor() if server_side else connection.cursor() as cursor:
        cursor.execute(sql + " ORDER BY id", params)
        while rows := cursor.fetchmany(chunk_size):
            if spliced:
                ids, hashes, schemes, actions, prevs = tuple(zip(*rows, strict=True))[:5]
                computed = _spliced_hashes(rows, key)
            else:
                ids, hashes, schemes = tuple(zip(*rows, strict=True))[:3]
                actions = tuple(row[ACTION] for row in rows)
                prevs = tuple(row[PREV_HASH] for row in rows)
                computed = tuple(recomputed_hash(row, key) for row in rows)
            yield ids, hashes, schemes, actions, prevs, computed


def _spliced_hashes(rows: Sequence[tuple], key: bytes) -> tuple[str, ...]:
    """The recomputed hashes of SPLICED_COLUMNS rows ("" for an unknown scheme)."""
    _, _, schemes, _, _, addresses, before, details, after = zip(*rows, strict=True)
    if _plain(before, after, addresses):
        vetted = [True] * len(rows)
    else:  # which ones
        vetted = [
            _plain((one_before,), (one_after,), (address,))
            for one_before, one_after, address in zip(before, after, addresses, strict=True)
        ]
    canonical = details_canonical_all(details)
    fast = [
        ok and text is not None and scheme in SCHEMES
        for ok, text, scheme in zip(vetted, canonical, schemes, strict=True)
    ]
    if all(fast):
        return tuple(spliced_hashes(before, cast("list[str]", canonical), after, schemes, key))
    taken = list(itertools.compress(rows, fast))  # hashed here, by the branch above
    computed = dict(
        zip([row[0] for row in taken], _spliced_hashes(taken, key) if taken else (), strict=True)
    )
    others = [row[0] for row in rows if row[0] not in computed and row[2] in SCHEMES]
    computed.update(_text_hashes(others, key))
    return tuple(computed.get(row[0], "") for row in rows)  # an unknown scheme never recomputes


_PLAIN = bytes(range(0x20, 0x7F)).replace(b"\\", b"").replace(b'"', b"")


def _plain(before: Sequence[str], after: Sequence[str], addresses: Sequence[bool]) -> bool:
    """Whether the parts (of one event, or of many) are there and hold text only as its own
    JSON: raw text is its JSON when printable ASCII without \\ or ", so once every other
    printable character is taken out, only the parts' own quotes (and an address's) are left."""
    if None in before or None in after:
        return False
    found = ("".join(before) + "".join(after)).encode().translate(None, _PLAIN)
    return found == b'"' * (QUOTES * len(before) + 2 * addresses.count(True))


def _text_hashes(ids: Sequence[int], key: bytes) -> dict[int, str]:
    """The recomputed hashes of these events, read as text fields or else typed."""
    if not ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(TEXT_COLUMNS)} FROM {TABLE} WHERE id = ANY(%s)",  # noqa: S608
            [list(ids)],
        )
        rows = cursor.fetchall()
    computed = {}
    for row in rows:
        fields = row[TEXT_FIELDS:]
        text_hash = text_fields_hash(fields, row[2], key) if None not in fields else None
        computed[row[0]] = text_hash or _typed_recomputed_hash(row[0], key)
    return computed


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
