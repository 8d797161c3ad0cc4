"""The audit trail: one function writes every event, inside the caller's transaction.

Appends are serialized so the chain never forks: on PostgreSQL by a transaction-scoped
advisory lock taken before the head of the chain is read and held until the caller's
transaction ends; on SQLite by its single writer (our connections open transactions with
BEGIN IMMEDIATE). A unique `prev_hash` makes a fork impossible even for a writer that
bypasses the lock. Hashing lives in `rotation.audit.chain`.

Every new event is keyed (HMAC under AUDIT_CHAIN_KEY). When the head is an unkeyed event of
a chain begun before the key, the next append first writes the `audit.chain_keyed` marker:
chained to that head and keyed itself, it seals the unkeyed events before it.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction
from django.utils import timezone

from rotation.audit.chain import (
    GENESIS_HASH,
    audit_chain_key,
    clean_details,
    clean_ip,
    clean_text,
    event_hash,
)
from rotation.models import AuditAction, AuditEvent

if TYPE_CHECKING:
    from rotation.audit.origin import MaybeActor, Origin
    from rotation.models import Rotation

# Arbitrary constant naming the audit chain's advisory lock on PostgreSQL.
CHAIN_LOCK_ID = 7_201_202_611
# Events built inside `audit_batch`, appended together when it ends.
_batch: contextvars.ContextVar[list[AuditEvent] | None] = contextvars.ContextVar(
    "audit_batch", default=None
)


def _lock_chain() -> None:
    # Held until the outer transaction commits or rolls back, so the next writer reads a
    # committed head. SQLite needs nothing: a write transaction excludes all other writers.
    # A statement of its own: one that also read the head would read it in a snapshot taken
    # before the lock was granted, and so miss the head a writer committed meanwhile.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_ID])


# Explicit ids drawn under the chain lock keep id order equal to chain order; SQLite's single
# writer assigns rowids in insert order.
_IDS = "SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, %s)"
_HEAD = "SELECT id, hash, hash_scheme FROM {table} ORDER BY id DESC LIMIT 1"


def _reserve_ids(count: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(_IDS.format(table=AuditEvent._meta.db_table), [count])
        return sorted(row[0] for row in cursor.fetchall())


def _head_and_ids(count: int) -> tuple[tuple[int, str, int] | None, list[int]]:
    """Under the chain lock: (id, hash, scheme) of the chain's head, or None while it is empty,
    and `count` ids for the new events (on PostgreSQL drawn in the same statement)."""
    table = AuditEvent._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            # The write lock is held (BEGIN IMMEDIATE): the ids after the head are free.
            cursor.execute(_HEAD.format(table=table))
            head = cursor.fetchone()
            first = head[0] + 1 if head else 1
            return head, list(range(first, first + count))
        cursor.execute(
            f"SELECT head.id, head.hash, head.hash_scheme, ARRAY({_IDS.format(table=table)})"  # noqa: S608
            f" FROM (SELECT 1) AS one LEFT JOIN ({_HEAD.format(table=table)}) AS head ON true",
            [count],
        )
        head_id, head_hash, scheme, ids = cursor.fetchone()
    return (None if head_id is None else (head_id, head_hash, scheme)), sorted(ids)


def _ref(value: Any, attribute: str) -> Any:
    return getattr(value, attribute, value)


def _int_ref(value: Any) -> int | None:
    value = _ref(value, "pk")
    return None if value in (None, "") else int(value)


@functools.cache
def _known_actions() -> frozenset[str]:
    # TextChoices.values builds a new list on every access; events are written in bulk.
    return frozenset(AuditAction.values)


@functools.cache
def _known_outcomes() -> frozenset[str]:
    return frozenset(AuditEvent.Outcome.values)


def _build_event(
    *,
    action: str,
    outcome: str = "success",
    actor: MaybeActor = None,
    actor_type: str | None = None,
    origin: Origin | None = None,
    installation: Any = None,
    resource: Any = None,
    rotation: Any = None,
    batch: Any = None,
    reason: str = "",
    ticket: str = "",
    details: Mapping[str, Any] | None = None,
    actor_username: str = "",
) -> AuditEvent:
    """An unsaved, unchained event; refuses unknown actions and outcomes."""
    if action not in _known_actions():
        raise ValueError(f"unknown audit action {action!r}: add it to rotation.models.AuditAction")
    if outcome not in _known_outcomes():
        raise ValueError(f"unknown audit outcome {outcome!r}")
    user = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    if actor_type is None:
        actor_type = AuditEvent.ActorType.USER if user else AuditEvent.ActorType.SYSTEM
    if resource is not None and installation is None and hasattr(resource, "installation"):
        installation = resource.installation
    if rotation is not None and batch is None and hasattr(rotation, "batch_id"):
        batch = rotation.batch_id
    return AuditEvent(
        created_at=timezone.now(),
        actor_type=str(actor_type),
        actor_user_id=user.pk if user else None,
        actor_username=clean_text(user.get_username() if user else actor_username, 150),
        action=str(action),
        outcome=str(outcome),
        installation_ref=clean_text(_ref(installation, "vercel_id"), 64),
        resource_ref=clean_text(_ref(resource, "vercel_id"), 128),
        rotation_ref=_int_ref(rotation),
        batch_ref=_int_ref(batch),
        reason=clean_text(reason),
        ticket=clean_text(ticket, 100),
        source_ip=clean_ip(origin.ip) if origin else None,
        user_agent=clean_text(origin.user_agent if origin else "", 512),
        request_id=clean_text(origin.request_id if origin else "", 64),
        details=clean_details(dict(details or {})),
    )


def _keying_marker(unkeyed_head_id: int) -> AuditEvent:
    """The event that starts the keyed segment after an unkeyed chain's head."""
    return _build_event(
        action=AuditAction.AUDIT_CHAIN_KEYED,
        details={
            "unkeyed_head_id": unkeyed_head_id,
            "unkeyed_scheme": AuditEvent.HashScheme.SHA256.label,
            "scheme": AuditEvent.HashScheme.HMAC_SHA256.label,
        },
    )


def _append(events: list[AuditEvent]) -> list[AuditEvent]:
    """Chain and insert events, in order, under the chain lock; returns `events`."""
    key = audit_chain_key()  # before the lock: a missing key fails without writing
    # No savepoint inside the caller's transaction: a failed append must roll it all back.
    with transaction.atomic(savepoint=False):
        _lock_chain()
        head, ids = _head_and_ids(len(events))
        chained = list(events)
        if head and head[2] != AuditEvent.HashScheme.HMAC_SHA256:
            chained.insert(0, _keying_marker(head[0]))
            # Once in a chain's life: the marker needs the first id.
            ids = (
                _reserve_ids(len(chained))
                if connection.vendor == "postgresql"
                else [*ids, ids[-1] + 1]
            )
        previous = head[1] if head else GENESIS_HASH
        for event in chained:
            event.hash_scheme = AuditEvent.HashScheme.HMAC_SHA256
            event.prev_hash = previous
            event.hash = previous = event_hash(event, key=key)
        for event, pk in zip(chained, ids, strict=True):
            event.pk = pk
        _insert(chained)
    return events


def _insert(events: list[AuditEvent]) -> None:
    """INSERT the chained events, ids included: the one write path into the table (its
    manager refuses bulk writes), written out because the ORM's insert machinery cost more
    CPU than hashing the events."""
    if connection.vendor == "postgresql":
        _insert_json(events)
    else:
        _insert_values(events)
    for event in events:
        event._state.adding, event._state.db = False, connection.alias


# Columns whose values `_build_event` and `_append` already give in the type the database
# takes: `get_db_prep_save` would return them unchanged, through a chain of calls per value.
_PLAIN_COLUMNS = frozenset(
    {"BigAutoField", "BigIntegerField", "CharField", "PositiveSmallIntegerField", "TextField"}
)


def _json_or_null(value: Any, *, adapt: Callable[[Any, Any], str], field: Any) -> str | None:
    return None if value is None else adapt(value, field.encoder)


def _column_adapters() -> list[tuple[str, Callable[[Any], Any] | None]]:
    """(attname, adapter or None) per column of the VALUES insert: what `get_db_prep_save`
    does, without its per-value calls where it changes nothing."""
    ops = connection.ops
    adapters: list[tuple[str, Callable[[Any], Any] | None]] = []
    for field in AuditEvent._meta.concrete_fields:
        kind = field.get_internal_type()
        adapter: Callable[[Any], Any] | None
        if kind in _PLAIN_COLUMNS:
            adapter = None
        elif kind == "DateTimeField":
            adapter = ops.adapt_datetimefield_value
        elif kind == "JSONField":  # None is SQL NULL, as get_db_prep_save has it
            adapter = functools.partial(_json_or_null, adapt=ops.adapt_json_value, field=field)
        else:
            adapter = functools.partial(field.get_db_prep_save, connection=connection)
        adapters.append((field.attname, adapter))
    return adapters


def _insert_values(events: list[AuditEvent]) -> None:
    fields = AuditEvent._meta.concrete_fields
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(field.column)) for field in fields)
    row = f"({', '.join(['%s'] * len(fields))})"
    size = max(1, connection.ops.bulk_batch_size(list(fields), events))
    adapters = _column_adapters()
    with connection.cursor() as cursor:
        for start in range(0, len(events), size):
            group = events[start : start + size]
            params = [
                value if adapt is None else adapt(value)
                for event in group
                for attname, adapt in adapters
                for value in (getattr(event, attname),)
            ]
            cursor.execute(
                f"INSERT INTO {quote(AuditEvent._meta.db_table)} ({columns})"  # noqa: S608 (model names)
                f" VALUES {', '.join([row] * len(group))}",
                params,
            )


@functools.cache
def _insert_json_sql() -> str:
    fields = AuditEvent._meta.concrete_fields
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(field.column)) for field in fields)
    types = ", ".join(f"{quote(str(field.column))} {field.db_type(connection)}" for field in fields)
    return (
        f"INSERT INTO {quote(AuditEvent._meta.db_table)} ({columns})"  # noqa: S608 (model names)
        f" SELECT {columns} FROM jsonb_to_recordset(%s::jsonb) AS rows({types})"
    )


def _insert_json(events: list[AuditEvent]) -> None:
    """PostgreSQL: the events as one JSON parameter. A VALUES list has a placeholder per value,
    and psycopg parses such a statement anew on every call (it caches only short ones): that
    parse cost more than the insert itself."""
    names = [(str(field.column), field.attname) for field in AuditEvent._meta.concrete_fields]
    rows = []
    for event in events:
        row = {}
        for column, attname in names:
            value = getattr(event, attname)
            row[column] = value.isoformat() if isinstance(value, datetime) else value
        rows.append(row)
    with connection.cursor() as cursor:
        cursor.execute(_insert_json_sql(), [json.dumps(rows, allow_nan=False)])


def audit_record(**fields: Any) -> AuditEvent:
    """Append one event. Must run inside the transaction of the change it records.

    Takes the keyword arguments of `_build_event` (action, outcome, actor, actor_type,
    origin, installation, resource, rotation, batch, reason, ticket, details,
    actor_username). Fails closed: any error (unknown action, a secret-looking detail, a
    database error) propagates, so the caller's transaction and the change it holds roll back.
    """
    event = _build_event(**fields)
    batch = _batch.get()
    if batch is not None:
        batch.append(event)
        return event
    return _append([event])[0]


def audit_record_many(entries: Iterable[Mapping[str, Any]]) -> list[AuditEvent]:
    """Append many events at once (one lock, one insert); each entry is audit_record's kwargs."""
    events = [_build_event(**entry) for entry in entries]
    batch = _batch.get()
    if batch is not None:
        batch.extend(events)
        return events
    return _append(events) if events else []


@contextlib.contextmanager
def audit_batch() -> Iterator[None]:
    """Within the block, audit_record and audit_record_many only build (and so check) their
    events; they are appended in order, under one lock with one insert, when the block ends
    without an error. Run it inside the transaction of the changes; events written inside it
    have no id until then."""
    if not transaction.get_connection().in_atomic_block:
        raise transaction.TransactionManagementError("audit_batch needs an open transaction")
    if _batch.get() is not None:  # nested: the outer block appends, in the order built
        yield
        return
    events: list[AuditEvent] = []
    token = _batch.set(events)
    try:
        yield
    finally:
        _batch.reset(token)
    if events:
        _append(events)


def audit_context(rotation: Rotation) -> dict[str, str]:
    """Reason and ticket of the rotation's batch, so every event of a rotation carries them."""
    return {"reason": rotation.batch.reason, "ticket": rotation.batch.ticket}
