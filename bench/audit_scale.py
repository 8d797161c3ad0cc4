"""Audit trail at scale: 1,000,000 hash-chained events on PostgreSQL.

Creates (drops first) a dedicated database, migrates it, fills it with a valid chain (hashes
computed in Python with the app's own canonical form, rows loaded with COPY), then prints:
  (a) admin changelist: query count and median render time (test Client, superuser), for the
      plain list and a few filtered views; target: <= 10 queries, median <= 300 ms
  (b) export: peak RSS growth while streaming the whole CSV and JSONL export; target < 100 MB
  (c) verify_audit_log: events/s over the whole chain (and that it is intact), in one process
      and in one per CPU, with the peak RSS growth and the CPU time per event (Python; in one
      process also the PostgreSQL backend's, when it runs here); target >= 100,000 events/s,
      flat memory

Usage: .venv/bin/python bench/audit_scale.py [--events 1000000]
       [--database-url postgres://postgres@127.0.0.1:5432/bench_audit] [--keep]
Nothing here is a test; it prints figures and ratios against the targets.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_audit"

ACTIONS = [
    "rotation.requested",
    "rotation.prepared",
    "rotation.pushed",
    "rotation.redeployed",
    "credentials.expired",
    "installation.imported",
    "auth.login",
    "resource.changed",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--keep", action="store_true", help="reuse a filled database")
    parser.add_argument("--renders", type=int, default=15)
    parser.add_argument("--parts", default="abc", help="which measurements: a, b and/or c")
    return parser.parse_args()


def create_database(url: str, *, keep: bool) -> bool:
    """Create the bench database (dropping it unless --keep); True when it was created."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and keep:
            return False
        if exists:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return True


def rss_kb(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM (peak RSS) to the current RSS (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")


def event_rows(count: int):
    """Rows of a valid chain, oldest first, with the app's canonical (keyed) hash."""
    from rotation.audit.chain import GENESIS_HASH, canonical_hash

    names = stored_columns()

    start = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)
    step = dt.timedelta(days=140) / count
    prev = GENESIS_HASH
    for index in range(count):
        rotation = index // 8 + 1
        user = index % 23
        values = {
            "created_at": start + step * index,
            "actor_type": "user" if user else "system",
            "actor_user_id": user or None,
            "actor_username": f"staff{user:02d}" if user else "",
            "action": ACTIONS[index % len(ACTIONS)],
            "outcome": "failure" if index % 97 == 0 else "success",
            "installation_ref": f"icfg_bench_{rotation % 1000}",
            "resource_ref": f"res_bench_{rotation % 20000}",
            "rotation_ref": rotation,
            "batch_ref": rotation // 50 + 1,
            "reason": "scheduled rotation" if index % 5 else "=cmd leaked key, rotate now",
            "ticket": f"SUP-{rotation // 10}",
            "source_ip": f"10.{user}.{index % 250}.{index % 7 + 1}" if user else None,
            "user_agent": "Mozilla/5.0 (bench)" if user else "",
            "request_id": f"req-{index:08d}",
            "details": {"attempt": index % 3, "batch_size": 50, "ratio": 0.25},
            "prev_hash": prev,
            "hash_scheme": 2,  # keyed, as the app writes them
        }
        values["hash"] = canonical_hash(values)
        prev = values["hash"]
        row = [values[name] for name in names]
        row[names.index("details")] = json.dumps(values["details"])
        yield row


def stored_columns() -> tuple[str, ...]:
    """Every column of an event but its id, in the order the chain hashes them."""
    from rotation.audit.chain import HASHED_FIELDS

    return (*HASHED_FIELDS, "hash", "hash_scheme")


def fill(count: int) -> float:
    from django.db import connection, transaction

    started = time.perf_counter()
    columns = ", ".join(stored_columns())
    with transaction.atomic():
        connection.ensure_connection()
        with connection.connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit = off")
            with cursor.copy(f"COPY rotation_auditevent ({columns}) FROM STDIN") as copy:
                for index, row in enumerate(event_rows(count), 1):
                    copy.write_row(row)
                    if index % 200_000 == 0:
                        print(f"  ... {index:,} rows ({time.perf_counter() - started:.0f} s)")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE rotation_auditevent")
    return time.perf_counter() - started


def measure_changelist(client, url: str, renders: int) -> tuple[list[str], float]:
    """(the SQL of one page view, median render ms over `renders` more views)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    connection.queries_log.clear()  # DEBUG keeps at most 9000; a full log counts as zero
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    client.get(url)  # warm
    times = []
    for _ in range(renders):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    return [query["sql"] for query in queries.captured_queries], statistics.median(times)


def measure_export(client, url: str) -> tuple[int, int, float, int, float]:
    """(lines, peak RSS growth in KB, seconds, bytes, seconds to the first chunk)."""
    import gc

    gc.collect()
    baseline = rss_kb()
    reset_peak_rss()
    started = time.perf_counter()
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    size = lines = 0
    first_chunk = None
    for chunk in response.streaming_content:
        if first_chunk is None:
            first_chunk = time.perf_counter() - started
        size += len(chunk)
        lines += chunk.count(b"\n")
    elapsed = time.perf_counter() - started
    return lines, rss_kb("VmHWM") - baseline, elapsed, size, first_chunk or elapsed


def django_setup(database_url: str, *, keep: bool) -> bool:
    """Django on the bench database, created (dropped first unless `keep`) and migrated;
    True when it was created."""
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "partnerportal.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    created = create_database(database_url, keep=keep)

    import django

    django.setup()
    from django.core.management import call_command

    print(f"database: {database_url.split('@')[-1]} ({'created' if created else 'reused'})")
    call_command("migrate", verbosity=0)
    return created


def superuser_client():
    """A test Client signed in as the bench's superuser."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    user_model = get_user_model()
    root = user_model.objects.filter(username="benchroot").first()
    if root is None:
        root = user_model.objects.create_superuser("benchroot", "root@example.com", "x" * 20)
    client = Client()
    client.force_login(root)
    return client


def main() -> None:
    args = parse_args()
    created = django_setup(args.database_url, keep=args.keep)
    from rotation.models import AuditEvent, Installation

    if created or not AuditEvent.objects.exists():
        print(f"filling {args.events:,} events (hash chain in Python, COPY) ...")
        seconds = fill(args.events)
        print(f"filled in {seconds:.1f} s ({args.events / seconds:,.0f} events/s)")
        Installation.objects.bulk_create(
            Installation(vercel_id=f"icfg_bench_{n}", name=f"Team {n}") for n in range(50)
        )
    total = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    print(f"events in table: about {total:,} (last id)")
    client = superuser_client()
    if "a" in args.parts:
        measure_changelists(client, args.renders)
    if "b" in args.parts:
        measure_exports(client)
    if "c" in args.parts:
        measure_verify()


def measure_changelists(client, renders: int) -> None:
    base = "/admin/rotation/auditevent/"
    views = {
        "plain list": base,
        "page 50": base + "?p=50",
        "filter action": base + "?action=rotation.pushed",
        "filter outcome": base + "?outcome=failure",
        "filter outcome+actor": base + "?outcome=failure&actor=staff07",
        "filter actor": base + "?actor=staff07",
        "filter installation": base + "?installation=icfg_bench_7",
        "date drill-down": base + "?created_at__year=2026&created_at__month=9",
        "search rotation id": base + "?q=4242",
        "search ticket": base + "?q=SUP-777",
    }
    print("\n(a) changelist at this size (target: <= 10 queries, median <= 300 ms)")
    for label, url in views.items():
        sql, median = measure_changelist(client, url, renders)
        queries = len(sql)
        print(f"  {label:<22} queries={queries:<3} median={median:7.1f} ms  {url}")
        if label == "plain list":
            plain = (queries, median)
    print(
        f"  plain list ratios: queries/10 = {plain[0] / 10:.2f}, "
        f"median/300ms = {plain[1] / 300:.2f}"
    )


def measure_exports(client) -> None:
    base = "/admin/rotation/auditevent/"
    print("\n(b) export of the whole list, streamed (target: peak RSS growth < 100 MB)")
    for fmt in ("csv", "jsonl"):
        lines, growth_kb, seconds, size, first = measure_export(client, f"{base}export/{fmt}/")
        print(
            f"  {fmt:<5} lines={lines:,} size={size / 1e6:.0f} MB time={seconds:.1f} s "
            f"first chunk after {first * 1000:.0f} ms "
            f"({lines / seconds:,.0f} rows/s) peak RSS growth={growth_kb / 1024:.1f} MB "
            f"(ratio to 100 MB: {growth_kb / 1024 / 100:.2f})"
        )


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time of this process and its waited-for children, or of another process (Linux)."""
    import resource

    if pid is not None:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def database_backend() -> int | None:
    """The pid of this connection's PostgreSQL backend when it runs on this machine."""
    from django.db import connection

    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    return pid if Path(f"/proc/{pid}/stat").exists() else None


def measure_verify() -> None:
    import resource

    from rotation.audit.verify import audit_log_verify

    print(
        "\n(c) verify_audit_log over the whole chain (P7 target: >= 100,000 events/s, flat memory)"
    )
    for processes in sorted({1, os.cpu_count() or 1}):
        reset_peak_rss()
        baseline = rss_kb()
        backend = database_backend() if processes == 1 else None  # pool workers have their own
        cpu = cpu_seconds(), cpu_seconds(backend) if backend else 0.0
        started = time.perf_counter()
        report = audit_log_verify(processes=processes)
        seconds = time.perf_counter() - started
        python_us = (cpu_seconds() - cpu[0]) / max(report.count, 1) * 1e6
        server_us = (cpu_seconds(backend) - cpu[1]) / max(report.count, 1) * 1e6 if backend else 0
        growth = (rss_kb("VmHWM") - baseline) / 1024
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        state = "intact" if report.intact else f"BROKEN at #{report.bad_event_id}: {report.message}"
        rate = report.count / seconds
        print(
            f"  processes={processes}: {report.count:,} events {state} in {seconds:.1f} s "
            f"({rate:,.0f} events/s, ratio to 100,000/s: {rate / 100_000:.2f}); "
            f"peak RSS growth {growth:.1f} MB"
            + (f", largest hashing process {children:.0f} MB RSS" if processes > 1 else "")
        )
        # On a shared machine wall time says little; CPU per event does (load: others' work).
        print(
            f"    CPU per event: Python {python_us:.2f} µs"
            + (f", PostgreSQL backend {server_us:.2f} µs" if backend else "")
            + f"; load average {os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
