"""Bulk rotation benchmark: the admin's confirming POST, the pipeline's overhead, rate limits.

Prints, in one run:
  (a) median time of the confirming admin POST ("Rotate and push", "select all N", i.e.
      select_across=1) for 1,000 and 10,000 selected resources, or the sizes of --a-sizes
      (P3: <= 0.5 s for 10,000 on SQLite and PostgreSQL; <= 3 s for --a-sizes 100000)
  (b) end-to-end time of 1,000 rotations with 2 qcluster workers, divided by the time of a
      plain `requests` loop sending the same 1,000 PUTs to the same stand-in  (target <= 1.5),
      after --warm-up-b runs that are printed but not counted (a fresh cluster's first batch
      runs slower than a long-running cluster's);
      the dashboard notifications that follow the pushes are waited for after each run (and
      reported), so one run's PATCHes never overlap the next run's timing
  (c) with the stand-in at 50 requests/s: completion time / (N / 50) (target <= 1.10), the
      number of 429 answers seen (target <= 5% of requests), and the number of failed
      rotations (must be 0); `--latency-ms` applies here too (P2: 100 ms, --rate 60)
  (d) rotations/s at 100 ms latency (--d-latency-ms) with the workers (target >= 100), and
      each qcluster process's RSS growth over the batch (P8 with --d-n 10000: <= 50 MB)

Usage: .venv/bin/python bench/bulk_rotate.py [--database-url URL] [--repeat 5] [--rate-n 500]
Uses its own SQLite file under /tmp, or the database given (a dedicated one: it is migrated,
filled, and its rotations are deleted between runs). All traffic stays on 127.0.0.1.
Nothing here is a test: it prints figures and ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
TOKEN = "vci_bench_token"
TEMPLATE = [
    {"name": "DATABASE_URL", "prefix": "", "environments": ["production", "preview"]},
    {"name": "PGPASSWORD", "prefix": "", "environments": ["production"]},
]
# Upper bound on any wait for the pipeline, so a broken run ends instead of hanging.
MAX_WAIT_S = 600


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    parser.add_argument("--repeat", type=int, default=5, help="POSTs per size in (a)")
    parser.add_argument(
        "--a-sizes",
        default="1000,10000",
        help="comma-separated selection sizes in (a), each selected across (e.g. 100000)",
    )
    parser.add_argument("--rate-n", type=int, default=500, help="rotations in (c)")
    parser.add_argument("--rate", type=float, default=50.0, help="stand-in rate in (c)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs-b", type=int, default=3, help="runs of (b); the median counts")
    parser.add_argument(
        "--warm-up-b",
        type=int,
        default=1,
        help="runs of (b) first, printed but not counted: a fresh cluster's first batch is "
        "slower (a long-running one's workers are warm)",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="stand-in answer delay for (b) and (c); README's 3 ms reference row uses 3",
    )
    parser.add_argument("--d-n", type=int, default=400, help="rotations in (d)")
    parser.add_argument("--d-latency-ms", type=float, default=100.0, help="latency in (d)")
    parser.add_argument("--only", choices=["a", "b", "c", "d"], action="append")
    return parser.parse_args()


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "partnerportal.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def make_installation(vercel_id: str, count: int):
    """An installation with `count` resources, inserted in bulk."""
    from rotation.models import Installation, Resource

    installation = Installation.objects.create(vercel_id=vercel_id, name=vercel_id)
    installation.set_access_token(TOKEN)
    installation.save()
    Resource.objects.bulk_create(
        [
            Resource(
                installation=installation,
                vercel_id=f"{vercel_id}_r{index:05d}",
                product="postgres",
                name=f"db-{index}",
                secret_template=TEMPLATE,
            )
            for index in range(count)
        ],
        batch_size=2000,
    )
    return installation


def support_user():
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from rotation.roles import SUPPORT, roles_sync

    roles_sync()
    user, _ = get_user_model().objects.get_or_create(username="bench_support", is_staff=True)
    user.groups.add(Group.objects.get(name=SUPPORT))
    return user


def confirm_post(client, installation, count: int):
    """The confirming POST of "select all N" on the changelist filtered to one installation."""
    from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

    first = installation.resources.order_by("pk").values_list("pk", flat=True).first()
    started = time.perf_counter()
    response = client.post(
        f"/admin/rotation/resource/?installation__id__exact={installation.pk}",
        {
            "action": "rotate_and_push",
            "post": "yes",
            "select_across": "1",
            ACTION_CHECKBOX_NAME: [first],
            "expected_count": str(count),
            "reason": "benchmark",
            "ticket": "BENCH-1",
        },
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 302 or "/rotationbatch/" not in response.url:
        raise SystemExit(f"the confirming POST did not create a batch: {response.status_code}")
    from rotation.models import RotationBatch

    return RotationBatch.objects.order_by("-pk").first(), elapsed


def forget_rotations() -> None:
    """Drop the bench's rotations and queued tasks so the same resources can be asked again."""
    from django.db import connection
    from django_q.models import OrmQ

    from rotation.models import (
        CredentialVersion,
        RedeployCheck,
        Reminder,
        Rotation,
        RotationBatch,
    )

    OrmQ.objects.all().delete()
    CredentialVersion.objects.all().delete()
    Rotation.objects.all().delete()
    RotationBatch.objects.all().delete()
    if connection.vendor == "postgresql":
        # What autovacuum does in production (it may be off on a bench machine): without it
        # each run reads through the dead rows of the runs before and is slower than the last.
        with connection.cursor() as cursor:
            for model in (
                OrmQ,
                CredentialVersion,
                Rotation,
                RotationBatch,
                RedeployCheck,
                Reminder,
            ):
                cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")


def bench_admin_post(client, installations: dict[int, object], repeat: int) -> dict[int, float]:
    medians = {}
    for count, installation in installations.items():
        timings = []
        for _ in range(repeat):
            batch, elapsed = confirm_post(client, installation, count)
            if batch.rotations.count() != count:
                raise SystemExit(f"expected {count} rotations, got {batch.rotations.count()}")
            timings.append(elapsed)
            forget_rotations()
        medians[count] = statistics.median(timings)
        spread = ", ".join(f"{t:.3f}" for t in timings)
        print(
            f"(a) confirming POST, {count:>6} resources: median {medians[count]:.3f} s  [{spread}]"
        )
    return medians


def start_qcluster(database_url: str, vercel_url: str, workers: int, log: Path):
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "VERCEL_API_URL": vercel_url,
        "Q_WORKERS": str(workers),
        "LOG_LEVEL": "WARNING",
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_qcluster(process) -> None:
    # SIGTERM to the cluster process alone stops its workers in order (see README,
    # Production); then nothing of the process group started above is left.
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def cluster_rss(process) -> dict[int, int]:
    """Resident memory (kB) of each process of the cluster's process group."""
    sizes = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            pid = int(status.parent.name)
            if os.getpgid(pid) != process.pid:
                continue
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes[pid] = int(line.split()[1])
        except (OSError, ValueError):
            continue  # ended meanwhile
    return sizes


def wait_until_none(rows, what: str) -> float:
    """When `rows` (a queryset) is empty, bounded by MAX_WAIT_S."""
    deadline = time.monotonic() + MAX_WAIT_S
    while rows.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} after {MAX_WAIT_S} s")
        time.sleep(0.05)
    return time.monotonic()


def wait_for_batch(batch) -> float:
    """Seconds until no rotation of the batch is in flight (bounded by MAX_WAIT_S)."""
    from rotation.models import Rotation

    in_flight = [Rotation.State.REQUESTED, Rotation.State.PREPARING, Rotation.State.PUSHING]
    rows = batch.rotations.filter(state__in=in_flight)
    return wait_until_none(rows, f"batch #{batch.pk} still in flight")


def wait_for_notifications(batch) -> float:
    """When every pushed rotation's dashboard notification PATCH is done (bounded by
    MAX_WAIT_S): production work that follows the pushes, and must not overlap the next run."""
    from rotation.models import Rotation

    pending = [Rotation.Notification.SETTING, Rotation.Notification.CLEARING]
    rows = batch.rotations.filter(notification_state__in=pending)
    return wait_until_none(rows, f"batch #{batch.pk}: notifications pending")


def plain_loop(fake, installation) -> float:
    """The same PUTs as the pipeline sends, from a plain requests loop with one session."""
    import requests

    from rotation.providers import get_provider

    provider = get_provider()
    resources = list(installation.resources.order_by("pk"))
    bodies = [{"secrets": provider.create(resource=resource)} for resource in resources]
    session = requests.Session()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    started = time.perf_counter()
    for resource, body in zip(resources, bodies, strict=True):
        url = (
            f"{fake.url}/v1/installations/{installation.vercel_id}"
            f"/resources/{resource.vercel_id}/secrets"
        )
        response = session.put(url, json=body, headers=headers, timeout=10)
        if response.status_code != 201:
            raise SystemExit(f"the stand-in answered {response.status_code} to the plain loop")
    return time.perf_counter() - started


def pipeline_run(client, installation, count: int) -> tuple[float, object]:
    started = time.monotonic()
    batch, _ = confirm_post(client, installation, count)
    finished = wait_for_batch(batch)
    return finished - started, batch


def push_spread(batch) -> str:
    """Where the time went: the first and last push recorded (`pushed_at`, stamped when a
    group of accepted PUTs is recorded, so after the group's PUTs), from the batch's creation."""
    from django.db.models import Max, Min

    spread = batch.rotations.aggregate(first=Min("pushed_at"), last=Max("pushed_at"))
    if spread["first"] is None:
        return "no push recorded"
    first = (spread["first"] - batch.created_at).total_seconds()
    last = (spread["last"] - batch.created_at).total_seconds()
    return f"first push recorded {first:.2f} s after the batch was, the last {last:.2f} s after it"


def main() -> None:
    args = parse_args()
    parts = set(args.only or ["a", "b", "c", "d"])
    workdir = Path(tempfile.mkdtemp(prefix="partnerportal_bench_"))
    database_url = args.database_url or f"sqlite:///{workdir / 'bench.sqlite3'}"
    print(f"database: {database_url.split('@')[-1]}  work dir: {workdir}")
    setup_django(database_url)

    from django.test import Client
    from django_q.models import OrmQ

    from rotation.devtools.fake_vercel import FakeVercel
    from rotation.models import Rotation

    # A kept database may hold tasks an earlier run left queued (its notifications, say):
    # they would run before this run's and skew it.
    OrmQ.objects.all().delete()
    user = support_user()
    client = Client()
    client.force_login(user)
    started = time.perf_counter()
    # A suffix per run lets a kept database (PostgreSQL) be benchmarked again.
    run = f"{int(time.time()) % 100000:05d}"
    sizes = {1000: make_installation(f"icfg_bench_1k_{run}", 1000)}
    a_sizes = [int(size) for size in args.a_sizes.split(",") if size.strip()]
    if "a" in parts:
        for size in a_sizes:
            if size not in sizes:
                sizes[size] = make_installation(f"icfg_bench_{size}_{run}", size)
    rate_installation = None
    if "c" in parts:
        rate_installation = make_installation(f"icfg_bench_rate_{run}", args.rate_n)
    latency_installation = None
    if "d" in parts:
        latency_installation = make_installation(f"icfg_bench_lat_{run}", args.d_n)
    print(f"setup: {sum(sizes)} + {args.rate_n} resources in {time.perf_counter() - started:.1f} s")

    if "a" in parts:
        bench_admin_post(client, {size: sizes[size] for size in a_sizes}, args.repeat)

    if parts & {"b", "c", "d"}:
        fake = FakeVercel(seed=1).start()
        for installation in [sizes[1000], rate_installation, latency_installation]:
            if installation is not None:
                fake.add_installation(
                    installation.vercel_id,
                    TOKEN,
                    {r.vercel_id: r.product for r in installation.resources.all()},
                )
        # A kept database (PostgreSQL) may still queue an earlier invocation's tasks.
        forget_rotations()
        cluster = start_qcluster(database_url, fake.url, args.workers, workdir / "qcluster.log")
        try:
            time.sleep(3)  # let the cluster start its workers before anything is timed
            if "b" in parts:
                fake.latency_ms = args.latency_ms
                ratios = []
                for attempt in range(args.warm_up_b + args.runs_b):
                    warm_up = attempt < args.warm_up_b
                    if attempt:
                        forget_rotations()
                    loop = plain_loop(fake, sizes[1000])
                    started = time.monotonic()
                    e2e, batch = pipeline_run(client, sizes[1000], 1000)
                    notified = wait_for_notifications(batch) - started
                    failed = batch.rotations.filter(state=Rotation.State.FAILED).count()
                    if not warm_up:
                        ratios.append(e2e / loop)
                    label = "warm-up (not counted)" if warm_up else len(ratios)
                    print(
                        f"(b) run {label}: 1,000 rotations, {args.workers} workers: "
                        f"{e2e:.2f} s; plain requests loop of the same 1,000 PUTs: {loop:.2f} s; "
                        f"ratio {e2e / loop:.2f}; failed: {failed}"
                    )
                    print(f"    {push_spread(batch)}")
                    print(
                        f"    dashboard notifications (a PATCH per rotation after its push, "
                        f"not in the ratio) all done {notified:.2f} s after the request"
                    )
                print(
                    f"(b) median ratio over {len(ratios)} runs: {statistics.median(ratios):.2f} "
                    f"(target <= 1.5; stand-in latency {args.latency_ms:g} ms)"
                )
                fake.latency_ms = 0
                forget_rotations()
            if "c" in parts:
                fake.rate = args.rate
                fake.latency_ms = args.latency_ms
                fake.reset_stats()
                elapsed, batch = pipeline_run(client, rate_installation, args.rate_n)
                ideal = args.rate_n / args.rate
                failed = batch.rotations.filter(state=Rotation.State.FAILED).count()
                limited, total = fake.stats["rate_limited"], fake.stats["total"]
                print(
                    f"(c) {args.rate_n} rotations at {args.rate:g}/s, {args.latency_ms:g} ms "
                    f"latency: {elapsed:.2f} s / {ideal:.2f} s = {elapsed / ideal:.2f} "
                    f"(target <= 1.10); 429s seen: {limited} of {total} requests "
                    f"({100 * limited / max(total, 1):.1f}%, target <= 5%); "
                    f"failed rotations: {failed}"
                )
                sent = fake.requests
                puts = [r for r in sent if r.method == "PUT"]
                print(
                    f"    {len(puts)} PUTs for {len({r.path for r in puts})} resources, "
                    f"{len(sent) - len(puts)} other requests; {push_spread(batch)}"
                )
                fake.rate = None
                fake.latency_ms = 0
            if "d" in parts:
                fake.latency_ms = args.d_latency_ms
                before = cluster_rss(cluster)
                elapsed, batch = pipeline_run(client, latency_installation, args.d_n)
                after = cluster_rss(cluster)
                failed = batch.rotations.filter(state=Rotation.State.FAILED).count()
                grown = [after[pid] - before[pid] for pid in after if pid in before]
                growth = max(grown, default=0)
                print(
                    f"(d) {args.d_n} rotations at {args.d_latency_ms:g} ms latency, "
                    f"{args.workers} workers: {elapsed:.2f} s = {args.d_n / elapsed:.0f} "
                    f"rotations/s (target >= 100); failed: {failed}; largest RSS growth of a "
                    f"cluster process: {growth / 1024:.1f} MB (target <= 50 MB)"
                )
                print(f"    {push_spread(batch)}")
        finally:
            stop_qcluster(cluster)
            fake.stop()
    if not args.database_url:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
