"""Admin changelists at scale: resources and rotations (and installations, batches) on PostgreSQL.

Creates (drops first, unless --keep) a dedicated database, fills it with --rows resources in
--installations installations and --rows rotations in --batches batches (INSERT ... SELECT
over generate_series), analyzes it, then prints for each changelist view (default, filtered,
searched, sorted): the number of queries of one page view, how many of them are COUNT
queries and whether any counts without a LIMIT, and the median render time.
Target (issue 11, P4): <= 10 queries, median <= 300 ms, no full COUNT on any page view.

Usage: .venv/bin/python bench/changelists.py
       [--database-url postgres://postgres@127.0.0.1:5432/bench_adm] [--rows 100000] [--keep]
Nothing here is a test; it prints figures and ratios against the targets.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
sys.path.insert(0, str(BASE_DIR / "bench"))
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_changelists"

# A spread of states like a busy day's: most settled, some in flight, a few failed.
STATES = ["completed"] * 6 + ["awaiting_redeploy", "failed", "cancelled", "requested"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--rows", type=int, default=100_000, help="resources and rotations")
    parser.add_argument("--installations", type=int, default=500)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--renders", type=int, default=15, help="page views per changelist")
    parser.add_argument("--keep", action="store_true", help="reuse a filled database")
    return parser.parse_args()


def fill(rows: int, installations: int, batches: int) -> float:
    """Resources spread over installations; one rotation per resource, spread over batches."""
    from django.db import connection, transaction

    started = time.perf_counter()
    states = "ARRAY[" + ", ".join(f"'{state}'" for state in STATES) + "]"
    from rotation.models import Installation, RotationBatch

    with transaction.atomic(), connection.cursor() as cursor:
        Installation.objects.bulk_create(
            Installation(vercel_id=f"icfg_bench_{n}", name=f"Team {n}", team_id=f"team_{n}")
            for n in range(1, installations + 1)
        )
        RotationBatch.objects.bulk_create(
            RotationBatch(
                requested_by_username=f"staff{n % 7}",
                reason="scheduled rotation",
                ticket=f"SUP-{n}",
                emergency=n % 20 == 0,
            )
            for n in range(1, batches + 1)
        )
        cursor.execute(
            "INSERT INTO rotation_resource (installation_id, vercel_id, product, name, status, "
            "secret_template, metadata, created_at, updated_at) "
            "SELECT i.id, 'res_bench_' || n, (ARRAY['postgres', 'redis', 'mysql'])[n %% 3 + 1], "
            "'db-' || n, CASE WHEN n %% 50 = 0 THEN 'removed' ELSE 'active' END, "
            "'[]', '{}', now() - n * interval '1 minute', now() - n * interval '1 second' "
            "FROM generate_series(1, %s) AS n "
            "JOIN rotation_installation i ON i.vercel_id = 'icfg_bench_' || (n %% %s + 1)",
            [rows, installations],
        )
        # Open states stay unique per resource: one rotation per resource.
        cursor.execute(
            "INSERT INTO rotation_rotation (batch_id, resource_id, state, emergency, attempts, "  # noqa: S608
            "last_error, last_error_code, state_changed_at, created_at, rollback_attempts, "
            "rollback_reason, rollback_requested_by, notification_attempts, "
            "notification_error, notification_state, notification_wanted) "
            f"SELECT b.first + r.id %% %s, r.id, ({states})[r.id %% {len(STATES)} + 1], "
            "r.id %% 20 = 0, 1, '', '', now() - r.id * interval '1 second', now(), 0, '', '', "
            "0, '', 'none', '' FROM rotation_resource r, "
            "(SELECT min(id) AS first FROM rotation_rotationbatch) b",
            [batches],
        )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def measure(client, url: str, renders: int) -> tuple[int, int, int, float]:
    """(queries, COUNT queries, COUNT queries without a LIMIT, median ms) of one page view."""
    from audit_scale import measure_changelist

    sql, median = measure_changelist(client, url, renders)
    counts = [query for query in sql if "COUNT(" in query.upper()]
    # A per-row count of a page's rows (a correlated subquery, alias U0) is bounded too.
    unbounded = [query for query in counts if "LIMIT" not in query.upper() and "U0" not in query]
    return len(sql), len(counts), len(unbounded), median


def main() -> None:
    args = parse_args()
    from audit_scale import django_setup, superuser_client

    django_setup(args.database_url, keep=args.keep)
    from rotation.models import Resource, Rotation

    if Resource.objects.exists() and not Rotation.objects.filter(
        batch__reason="scheduled rotation"
    ):
        raise SystemExit("the database holds other data than this bench's: run without --keep")
    if not Resource.objects.exists():
        print(f"filling {args.rows:,} resources and {args.rows:,} rotations ...")
        print(f"filled in {fill(args.rows, args.installations, args.batches):.1f} s")
    client = superuser_client()

    resource = Resource.objects.order_by("pk")[500]
    batch_id = Rotation.objects.order_by("pk").values_list("batch_id", flat=True)[500]
    views = {
        "resource": {
            "default": "",
            "page 500": "?p=500",
            "filtered status": "?status__exact=removed",
            "filtered product+installation": (
                f"?product__exact=redis&installation__id__exact={resource.installation_id}"
            ),
            "searched id": f"?q={resource.vercel_id}",
            "searched name": "?q=db-4242",
            "sorted name": "?o=2",
            "sorted updated": "?o=-6",
        },
        "rotation": {
            "default": "",
            "page 500": "?p=500",
            "filtered state": "?state__exact=failed",
            "filtered installation": f"?installation={resource.installation.vercel_id}",
            "filtered batch": f"?batch={batch_id}",
            "searched resource": f"?q={resource.vercel_id}",
            "sorted resource": "?o=1",
            "sorted batch": "?o=7",
            "sorted changed": "?o=-8",
        },
        "installation": {"default": "", "sorted resources": "?o=-9"},
        "rotationbatch": {"default": "", "filtered source": "?source__exact=admin"},
    }
    print("\nchangelists (target: <= 10 queries, median <= 300 ms, no COUNT without LIMIT)")
    worst = (0, 0.0, 0)
    for model, cases in views.items():
        for label, query in cases.items():
            url = f"/admin/rotation/{model}/{query}"
            queries, counts, unbounded, median = measure(client, url, args.renders)
            worst = (max(worst[0], queries), max(worst[1], median), worst[2] + unbounded)
            print(
                f"  {model:<15} {label:<30} queries={queries:<3} counts={counts} "
                f"unbounded counts={unbounded} median={median:7.1f} ms"
            )
    print(
        f"worst: {worst[0]} queries (ratio to 10: {worst[0] / 10:.2f}), median {worst[1]:.0f} ms "
        f"(ratio to 300 ms: {worst[1] / 300:.2f}), {worst[2]} COUNT queries without a LIMIT"
    )


if __name__ == "__main__":
    main()
