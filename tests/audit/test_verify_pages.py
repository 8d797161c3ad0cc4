"""The fast path of verify_audit_log: pages of events checked apart (in several processes on
PostgreSQL) and stitched. Tampering at or across a page boundary is still named exactly, and
the canonical bytes are those the chain has always hashed."""

import datetime as dt
import json
from json.encoder import encode_basestring_ascii

import pytest

from rotation.audit import AuditAction, audit_record
from rotation.audit import pages as audit_pages
from rotation.audit.chain import (
    HASHED_FIELDS,
    _canonical_dumps,
    audit_chain_key,
    canonical_fields,
    canonical_values,
    clean_details,
    details_canonical,
    details_canonical_all,
    event_hash,
    fingerprint,
    text_fields_hash,
)
from rotation.audit.checkpoints import Checkpoint
from rotation.audit.origin import Origin
from rotation.audit.pages import TEXT_COLUMNS, TEXT_FIELDS, fast_verify
from rotation.audit.verify import audit_log_verify
from rotation.models import AuditEvent
from tests.audit.tampering import raw

UNKEYED = AuditEvent.HashScheme.SHA256


def record(count):
    for index in range(count):
        audit_record(
            action=AuditAction.INSTALLATION_CHANGED,
            installation=f"icfg_{index}",
            reason=f"change {index}",
            details={"index": index, "ratio": index / 3, "names": ["a", "é"]},
        )
    return list(AuditEvent.objects.order_by("id").values_list("id", "hash"))


def pages(**options):
    """audit_log_verify with pages of three events fetched two at a time."""
    return audit_log_verify(page_size=3, chunk_size=2, **options)


def test_it_finds_an_intact_chain_page_by_page_as_one_walk_does(db):
    events = record(10)
    paged = pages()
    assert paged.intact
    assert (paged.count, paged.head_hash, paged.last_id) == (10, events[-1][1], events[-1][0])
    fast = fast_verify(page_size=3, chunk_size=2, checkpoint_ids=[], anchor="", processes=1)
    assert fast is not None and fast.count == 10


@pytest.mark.parametrize("position", [2, 3, 5, 9])  # last and first of a page, and the head
def test_it_names_an_event_modified_at_a_page_boundary(db, position):
    events = record(10)
    raw("UPDATE rotation_auditevent SET reason = 'edited' WHERE id = %s", [events[position][0]])
    report = pages()
    assert (report.bad_event_id, report.problem) == (events[position][0], "modified")
    assert report.count == position


def test_it_names_the_event_after_one_deleted_at_a_page_boundary(db):
    events = record(10)
    raw("DELETE FROM rotation_auditevent WHERE id = %s", [events[3][0]])  # first of page 2
    report = pages()
    assert (report.bad_event_id, report.problem) == (events[4][0], "deleted")


def test_it_notices_an_unkeyed_event_in_a_later_page(db):
    events = record(10)
    raw("UPDATE rotation_auditevent SET hash_scheme = %s WHERE id = %s", [UNKEYED, events[7][0]])
    report = pages()
    assert (report.bad_event_id, report.problem) == (events[7][0], "modified")
    assert "claims the unkeyed scheme" in report.message


def test_it_checks_checkpoints_and_the_anchor_in_any_page(db):
    events = record(10)
    now = "2026-11-28T00:00:00Z"
    good = [
        Checkpoint(events[4][0], events[4][1], 5, now),
        Checkpoint(events[8][0], events[8][1], 9, now),
    ]
    assert pages(checkpoints=good, anchor=events[6][1]).checkpoints == 2
    wrong_count = [Checkpoint(events[4][0], events[4][1], 4, now)]
    assert pages(checkpoints=wrong_count).problem == "checkpoint_mismatch"
    beyond = [Checkpoint(events[-1][0] + 100, "e" * 64, 11, now)]
    assert pages(checkpoints=beyond).problem == "truncated"
    assert pages(anchor="a" * 64).problem == "anchor_missing"


def test_the_canonical_bytes_are_those_the_chain_has_always_hashed():
    """Stored chains were hashed with these bytes (computed by the code before the fast path):
    a change to the canonical form would break every existing chain."""
    values = {
        "created_at": dt.datetime(
            2026, 7, 1, 12, 30, 5, 7, tzinfo=dt.timezone(dt.timedelta(hours=2))
        ),
        "actor_type": "user",
        "actor_user_id": "4",
        "actor_username": "zoë",
        "action": "rotation.pushed",
        "outcome": "success",
        "installation_ref": "icfg_1",
        "resource_ref": "",
        "rotation_ref": None,
        "batch_ref": 7,
        "reason": "a\x00b \ud800",
        "ticket": None,
        "source_ip": "fe80::1%eth0",
        "user_agent": "UA",
        "request_id": "req",
        "details": {"f": 1e20, "g": 2.5, "s": {3, 1}, "n": None, "l": [True, "x"]},
        "prev_hash": "0" * 64,
    }
    expected = (
        b'{"action":"rotation.pushed","actor_type":"user","actor_user_id":4,'
        b'"actor_username":"zo\\u00eb","batch_ref":7,"created_at":"2026-07-01T10:30:05.000007Z",'
        b'"details":{"f":100000000000000000000,"g":2.5,"l":[true,"x"],"n":null,"s":[1,3]},'
        b'"installation_ref":"icfg_1","outcome":"success","prev_hash":"'
        + b"0"
        * 64
        + b'","reason":"a\\u0000b \\ud800","request_id":"req","resource_ref":"",'
        b'"rotation_ref":null,"source_ip":"fe80::1","ticket":"","user_agent":"UA","v":2}'
    )
    assert canonical_values(values, version=2) == expected
    assert canonical_fields(list(values.values()), version=2) == expected


@pytest.mark.django_db(transaction=True)
def test_it_hashes_pages_in_several_processes_on_postgresql():
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL)")
    events = record(12)
    together = audit_log_verify(page_size=3, chunk_size=2, processes=3)
    assert together.intact
    assert (together.count, together.head_hash) == (12, events[-1][1])
    raw("UPDATE rotation_auditevent SET outcome = 'denied' WHERE id = %s", [events[10][0]])
    report = audit_log_verify(page_size=3, chunk_size=2, processes=3)
    assert (report.bad_event_id, report.problem, report.count) == (events[10][0], "modified", 10)


# Events whose every field PostgreSQL renders as text the way the canonical form writes it, and
# events that leave the text path for the typed one: (reason, origin, details, text path?).
TEXT_CASES = [
    ("written in year 999", None, {}, False),
    ("plain", Origin("10.0.0.1", "Mozilla/5.0", "req-1"), {"a": 1, "b": [True, None]}, True),
    ("floats", None, {"whole": 1.0, "big": 1e20, "part": 0.1, "tiny": 1e-7, "neg": -2.5}, True),
    ('quote " and back\\slash', Origin("::ffff:10.0.0.1"), {"s": 'x"y', "k": "a\\b"}, True),
    ("IPv6 in PostgreSQL's form", Origin("2001:db8:0:0:0:0:0:1"), {}, True),
    ("zoë, control \x01 and \ud800", Origin("fe80::1%eth0"), {"nested": {"z": 1, "a": 2}}, True),
    ("a fingerprint", None, {"token": fingerprint("s3cret"), "Password": ""}, False),
    ("non-ASCII details", None, {"name": "zoë"}, False),
    ("escaped details", None, {"tab": "a\tb", "bell": "\x07"}, False),
]


def as_written_in_year_999(event):
    """The event rehashed as if written in year 999 (before any other is chained to it)."""
    event.created_at = dt.datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
    event.hash = event_hash(event)
    raw(
        "UPDATE rotation_auditevent SET created_at = %s, hash = %s WHERE id = %s",
        [event.created_at, event.hash, event.pk],
    )
    return event


@pytest.mark.django_db(transaction=True)
def test_postgresqls_text_rendering_hashes_to_the_typed_hash_or_steps_aside():
    """The verifier's text path reproduces the writer's hash for every event it takes, and
    leaves the ones it cannot vouch for (and a year strftime does not pad) to the typed path."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the text path is PostgreSQL's (set DATABASE_URL)")
    for number, (reason, origin, details, _) in enumerate(TEXT_CASES):
        audit_record(
            action=AuditAction.INSTALLATION_CHANGED, reason=reason, origin=origin, details=details
        )
        if number == 0:  # rehashed as written then, before others are chained to it
            ancient = as_written_in_year_999(AuditEvent.objects.get())

    key = audit_chain_key()
    with connection.cursor() as cursor:
        columns = ", ".join(TEXT_COLUMNS)
        cursor.execute(f"SELECT {columns} FROM rotation_auditevent ORDER BY id")  # noqa: S608
        rows = cursor.fetchall()
    assert len(rows) == len(TEXT_CASES)
    for row, (reason, *_, text_path) in zip(rows, TEXT_CASES, strict=True):
        if row[0] == ancient.pk:
            assert row[TEXT_FIELDS:].count(None) == 1  # the time, left to the typed path
            continue
        computed = text_fields_hash(row[TEXT_FIELDS:], row[2], key)
        assert computed == (row[1] if text_path else None), reason
    report = audit_log_verify(page_size=3, chunk_size=2)
    assert report.intact and report.count == len(TEXT_CASES)

    # An address given a netmask reads as no address on the typed path: the text path leaves
    # it to that path rather than read it as the address alone, which would match.
    raw("UPDATE rotation_auditevent SET source_ip = '10.0.0.1/24' WHERE id = %s", [rows[1][0]])
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM rotation_auditevent WHERE id = %s", [rows[1][0]])  # noqa: S608
        assert None in cursor.fetchone()[TEXT_FIELDS:]
    report = audit_log_verify(page_size=3, chunk_size=2)
    assert (report.bad_event_id, report.problem) == (rows[1][0], "modified")
    assert fast_verify(page_size=3, chunk_size=2, checkpoint_ids=[], anchor="", processes=1) is None

    # A field changed behind the chain's back is noticed on the text path too.
    raw("UPDATE rotation_auditevent SET source_ip = '10.0.0.2' WHERE id = %s", [rows[1][0]])
    raw("UPDATE rotation_auditevent SET details = '{\"a\": 2}' WHERE id = %s", [rows[2][0]])
    report = audit_log_verify(page_size=3, chunk_size=2)
    assert (report.bad_event_id, report.problem) == (rows[1][0], "modified")


def test_details_replaced_by_a_json_string_of_themselves_is_a_modification(db):
    """Details {"index": 3, ...} and the JSON string "{\"index\": 3, ...}" are different
    values: a string holding the same JSON text must not hash as the object it spells."""
    from django.db import connection

    events = record(5)
    as_string = (
        "to_jsonb(details::text)" if connection.vendor == "postgresql" else "json_quote(details)"
    )
    raw(f"UPDATE rotation_auditevent SET details = {as_string} WHERE id = %s", [events[2][0]])  # noqa: S608
    assert isinstance(AuditEvent.objects.get(pk=events[2][0]).details, str)
    for report in (audit_log_verify(), pages(), audit_log_verify(page_size=100, processes=1)):
        assert (report.bad_event_id, report.problem) == (events[2][0], "modified")


def test_the_characters_pages_take_raw_are_exactly_those_json_writes_as_themselves():
    """PostgreSQL puts text in the canonical JSON raw; that is its JSON only for the
    characters Python's encoder leaves alone, which are the ones the check lets through."""
    as_themselves = {
        code for code in range(128) if encode_basestring_ascii(chr(code)) == f'"{chr(code)}"'
    }
    assert set(audit_pages._PLAIN) == as_themselves
    assert {ord('"'), ord("\\"), 0x7F}.isdisjoint(as_themselves)


def postgresql_only():
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the spliced path is PostgreSQL's (set DATABASE_URL)")


def spliced_rows(ids=None):
    """SPLICED_COLUMNS rows of these events (all when None), in id order."""
    from django.db import connection

    sql = f"SELECT {', '.join(audit_pages.SPLICED_COLUMNS)} FROM rotation_auditevent"  # noqa: S608
    with connection.cursor() as cursor:
        if ids is None:
            cursor.execute(sql + " ORDER BY id")
        else:
            cursor.execute(sql + " WHERE id = ANY(%s) ORDER BY id", [list(ids)])
        return cursor.fetchall()


def writers_bytes(event_id):
    event = AuditEvent.objects.get(pk=event_id)
    values = {name: getattr(event, name) for name in HASHED_FIELDS}
    return canonical_values(values, version=event.hash_scheme)


def taken_raw(row):
    """Whether the spliced path vouches for the row itself (else it is read again)."""
    details = details_canonical(row[7])
    return details is not None and audit_pages._plain((row[6],), (row[8],), (row[5],))


@pytest.mark.django_db(transaction=True)
def test_postgresqls_canonical_json_is_the_writers_for_every_ascii_character():
    postgresql_only()
    for code in range(1, 128):  # PostgreSQL text holds no NUL
        character = chr(code)
        audit_record(
            action=AuditAction.INSTALLATION_CHANGED,
            installation=f"i{character}",
            reason=f"a{character}b",
            ticket=character,
            origin=Origin("10.0.0.1", f"UA{character}", f"r{character}"),
            details={"c": character},
        )
    key = audit_chain_key()
    rows = spliced_rows()
    assert len(rows) == 127
    for code, row in zip(range(1, 128), rows, strict=True):
        assert audit_pages._spliced_hashes([row], key) == (row[1],), code
        plain = code in audit_pages._PLAIN
        assert audit_pages._plain((row[6],), (row[8],), (row[5],)) is plain, code
        if plain:
            text = row[6] + details_canonical(row[7]) + row[8]
            assert text.encode() == writers_bytes(row[0]), code
    assert audit_pages._spliced_hashes(rows, key) == tuple(row[1] for row in rows)
    assert audit_log_verify(page_size=50, chunk_size=20).intact
    assert fast_verify(page_size=50, chunk_size=20, checkpoint_ids=[], anchor="", processes=1)


# Events the spliced path takes itself (True) or leaves to the text fields (False):
# (reason, origin, details, taken raw?).
SPLICED_CASES = [
    ("plain", Origin("10.0.0.1", "Mozilla/5.0", "req-1"), {"a": 1, "b": [True, None]}, True),
    ("no address, no details", None, {}, True),
    ("floats", None, {"whole": 1.0, "big": 1e20, "part": 0.1, "tiny": 1e-7, "neg": -2.5}, True),
    ("nested, keys out of jsonb's order", None, {"zz": {"b": 1, "a": [{"y": 2, "x": 3}]}}, True),
    ("IPv6", Origin("2001:db8::1"), {}, True),
    ("IPv6 in long form", Origin("2001:db8:0:0:0:0:0:1"), {}, True),
    ("IPv6, two zero runs of one length", Origin("1:0:0:1:0:0:1:1"), {}, True),
    ("IPv6, the longer zero run second", Origin("1:0:0:1:0:0:0:1"), {}, True),
    ("IPv6 loopback", Origin("::1"), {}, True),
    ("IPv6 with a zone id", Origin("fe80::1%eth0"), {}, True),
    ("IPv4 mapped in IPv6", Origin("::ffff:10.0.0.1"), {}, False),
    ('a quote "', None, {}, False),
    ("a back\\slash", None, {}, False),
    ("a tab\t", None, {}, False),
    ("a DEL \x7f", None, {}, False),
    ("zoë", None, {}, False),
    ("details with a quote", None, {"s": 'x"y'}, True),
    ("a fingerprint", None, {"token": fingerprint("s3cret")}, False),
    ("non-ASCII details", None, {"name": "zoë"}, False),
    ("escaped details", None, {"bell": "\x07"}, False),
]


@pytest.mark.django_db(transaction=True)
def test_postgresqls_spliced_json_hashes_as_the_writer_or_steps_aside(monkeypatch):
    postgresql_only()
    for reason, origin, details, _ in SPLICED_CASES:
        audit_record(
            action=AuditAction.INSTALLATION_CHANGED, reason=reason, origin=origin, details=details
        )
    key = audit_chain_key()
    rows = spliced_rows()
    read_again = []
    text_hashes = audit_pages._text_hashes
    monkeypatch.setattr(
        audit_pages,
        "_text_hashes",
        lambda ids, key: read_again.extend(ids) or text_hashes(ids, key),
    )
    assert audit_pages._spliced_hashes(rows, key) == tuple(row[1] for row in rows)
    for row, (reason, *_, raw_path) in zip(rows, SPLICED_CASES, strict=True):
        assert (row[0] not in read_again) is raw_path, reason
        assert taken_raw(row) is raw_path, reason
        if raw_path:
            text = row[6] + details_canonical(row[7]) + row[8]
            assert text.encode() == writers_bytes(row[0]), reason
    assert audit_log_verify(page_size=4, chunk_size=3).intact


@pytest.mark.django_db(transaction=True)
def test_a_year_strftime_does_not_pad_steps_aside():
    postgresql_only()
    audit_record(action=AuditAction.INSTALLATION_CHANGED, reason="old")
    as_written_in_year_999(AuditEvent.objects.get())
    audit_record(action=AuditAction.INSTALLATION_CHANGED, reason="new")
    rows = spliced_rows()
    assert rows[0][6] is None and rows[1][6] is not None
    assert audit_pages._spliced_hashes(rows, audit_chain_key()) == (rows[0][1], rows[1][1])
    assert audit_log_verify(page_size=4, chunk_size=3).intact


TEXT_FIELD_VALUES = {
    "actor_username": 'zoë "z"',
    "installation_ref": 'icfg_"1"',
    "resource_ref": "res\\1",
    "reason": 'say "hi"\tthere\x7f',
    "ticket": "T\n1",
    "user_agent": 'UA "x" é',
    "request_id": "req\\u00e9",
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("column", sorted(TEXT_FIELD_VALUES))
def test_text_stored_as_its_json_escapes_is_a_modification(column):
    """Text written with a quote, a backslash, a control or non-ASCII character hashes with
    them escaped; storing the escapes themselves renders the same raw, and must not pass."""
    postgresql_only()
    audit_record(action=AuditAction.INSTALLATION_CHANGED, reason="before")
    raw(
        f"UPDATE rotation_auditevent SET {column} = %s",  # noqa: S608
        [TEXT_FIELD_VALUES[column]],
    )
    honest = AuditEvent.objects.get()
    honest.hash = event_hash(honest)
    raw("UPDATE rotation_auditevent SET hash = %s", [honest.hash])
    audit_record(action=AuditAction.INSTALLATION_CHANGED, reason="after")
    assert audit_log_verify(page_size=4, chunk_size=3).intact

    escaped = encode_basestring_ascii(getattr(honest, column))[1:-1]
    raw(f"UPDATE rotation_auditevent SET {column} = %s WHERE id = %s", [escaped, honest.pk])  # noqa: S608
    row = spliced_rows([honest.pk])[0]
    assert (row[6] + row[8]).count(escaped) == 1  # the raw rendering is the writer's ...
    assert not taken_raw(row)  # ... so the path must not vouch for it
    report = audit_log_verify(page_size=4, chunk_size=3)
    assert (report.bad_event_id, report.problem) == (honest.pk, "modified")
    assert fast_verify(page_size=4, chunk_size=3, checkpoint_ids=[], anchor="", processes=1) is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "column, value",
    [
        ("action", "installation.changed "),
        ("actor_type", "user"),
        ("outcome", "denied"),
        ("actor_user_id", 0),
        ("rotation_ref", 0),
        ("batch_ref", -1),
        ("created_at", "2026-07-01 12:00:00.000001+00"),
        ("source_ip", "10.0.0.1/24"),
        ("source_ip", "10.0.0.2"),
        ("source_ip", None),
        ("source_ip", "::ffff:10.0.0.1"),
        ("details", "{}"),
        ("details", '{"a": "1"}'),
        ("details", '"{\\"a\\": 1}"'),
        ("details", '{"token": "plain"}'),
        ("prev_hash", "f" * 64),
    ],
)
def test_postgresqls_spliced_path_notices_each_field_changed(column, value):
    postgresql_only()
    audit_record(action=AuditAction.INSTALLATION_CHANGED, reason="first")
    audit_record(
        action=AuditAction.INSTALLATION_CHANGED,
        reason="second",
        origin=Origin("10.0.0.1", "UA", "req"),
        details={"a": 1},
        rotation=None,
    )
    raw("UPDATE rotation_auditevent SET created_at = '2026-07-01 12:00:00+00'")  # then rehash
    for event in AuditEvent.objects.order_by("id"):
        previous = AuditEvent.objects.filter(id__lt=event.id).order_by("-id").first()
        event.prev_hash = previous.hash if previous else event.prev_hash
        event.hash = event_hash(event)
        raw(
            "UPDATE rotation_auditevent SET prev_hash = %s, hash = %s WHERE id = %s",
            [event.prev_hash, event.hash, event.pk],
        )
    assert audit_log_verify(page_size=4, chunk_size=3).intact
    second = AuditEvent.objects.order_by("id").last().pk
    raw(f"UPDATE rotation_auditevent SET {column} = %s WHERE id = %s", [value, second])  # noqa: S608
    report = audit_log_verify(page_size=4, chunk_size=3)
    assert (report.bad_event_id, report.problem) == (second, "modified")
    assert fast_verify(page_size=4, chunk_size=3, checkpoint_ids=[], anchor="", processes=1) is None


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        '{"b": 1, "a": [true, false, null], "c": {"z": "x\\"y", "y": -0.5}}',
        '{"whole": 1.0, "big": 100000000000000000000, "tiny": 0.0000001, "part": 0.1}',
        '{"long": 0.30000000000000004, "huge": 1.5e300, "deep": [[[{"k": []}]]]}',
        '"{\\"index\\": 3}"',
        '[1, 2.50, "s"]',
        "7",
        "null",
    ],
)
def test_details_reencoded_as_the_writer_encodes_them(text):
    """The details' canonical JSON, made by json's C scanner and encoder called directly, is
    the canonical form's: what `clean_details` and the canonical encoder make of the value."""
    assert details_canonical(text) == _canonical_dumps(clean_details(json.loads(text)))
    canonical = details_canonical(text)
    assert details_canonical_all([text, "{}", text]) == [canonical, "{}", canonical]


def test_details_the_text_path_cannot_vouch_for_are_left_to_the_typed_path():
    texts = ['{"name": "zoë"}', '{"bell": "\\u0007"}', '{"Token": "x"}', '{"a": 1} {}', "{"]
    assert [details_canonical(text) for text in texts] == [None] * len(texts)
    assert details_canonical_all([*texts, '{"a": 1}']) == [None] * len(texts) + ['{"a":1}']
