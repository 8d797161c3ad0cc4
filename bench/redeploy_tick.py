"""Redeploy tracking at volume: signed webhook deliveries, the periodic tick, idle cost.

Prints, for N rotations each waiting for 2 projects (defaults: N = 1,000):
  (a) webhook: median and p95 ms per signed deployment delivery through the full Django stack
      (2 N deliveries, each marking one project; half of them complete a rotation)
  (b) tick with N due customer reminders: ms per reminder sent (locmem email backend)
  (c) tick with N rotations due for expiry: ms per expiry (demo credential provider)
  (d) idle tick (nothing due): wall ms and query count, the cost paid every minute
  P6  webhook, in-process through the test client with DEBUG off (as in production): median
      and p95 ms and queries per delivery, for a deployment no rotation waits for
      ("unrelated") and for one a rotation waits for ("relevant", --p6 N fresh rotations)

Usage: .venv/bin/python bench/redeploy_tick.py [--rotations 1000] [--p6 500] [--database-url URL]
Uses its own SQLite file under /tmp unless a (dedicated) database is given; it is migrated,
emptied and filled. Nothing here is a test: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
SECRET = "bench-webhook-secret"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rotations", type=int, default=1000)
    parser.add_argument("--p6", type=int, default=500, help="rotations for P6 (0: skip)")
    parser.add_argument("--database-url", default="sqlite:////tmp/partnerportal_bench_redeploy.db")
    args = parser.parse_args()
    if args.database_url.startswith("sqlite:////"):
        Path(args.database_url.removeprefix("sqlite:///")).unlink(missing_ok=True)
    os.environ["DATABASE_URL"] = args.database_url
    os.environ["VERCEL_CLIENT_SECRET"] = SECRET
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "partnerportal.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.ROTATION_EXPIRE_SAFETY_DELAY_MINUTES = 10
    settings.ALLOWED_HOSTS = ["testserver"]
    call_command("migrate", verbosity=0)
    if connection.vendor != "sqlite":
        call_command("flush", interactive=False, verbosity=0)  # the dedicated database

    from rotation import redeploy
    from rotation.models import (
        ConnectedProject,
        CredentialVersion,
        Installation,
        Reminder,
        Resource,
        Rotation,
        RotationBatch,
    )
    from rotation.webhooks import sign_webhook

    n = args.rotations
    pushed_at = timezone.now() - timedelta(days=1, minutes=1)
    installation = Installation.objects.create(vercel_id="icfg_bench", contact_email="o@x.test")

    def waiting_rotations(first: int, count: int) -> None:
        """`count` resources, each with a rotation pushed a day ago waiting for 2 projects."""
        batch = RotationBatch.objects.create(reason="bench")
        with transaction.atomic():
            for index in range(first, first + count):
                resource = Resource.objects.create(
                    installation=installation,
                    vercel_id=f"res_{index}",
                    product="pg",
                    name=f"db{index}",
                )
                for project in ("prj_a", "prj_b"):
                    ConnectedProject.objects.create(
                        resource=resource, project_id=project, connected_at=pushed_at - timedelta(1)
                    )
                rotation = Rotation.objects.create(
                    batch=batch,
                    resource=resource,
                    state=Rotation.State.AWAITING_REDEPLOY,
                    pushed_at=pushed_at,
                )
                for stage, rot in (("previous", None), ("current", rotation)):
                    version = CredentialVersion(resource=resource, stage=stage, rotation=rot)
                    version.seal([{"name": "DATABASE_URL", "value": f"v{index}{stage}"}])
                    version.save()
                redeploy.rotations_redeploy_begin(rotations=[rotation])

    client = Client()
    at_ms = int((timezone.now() - timedelta(minutes=30)).timestamp() * 1000)

    def deliver(event_id: str, index: int, project: str, expect: str = "processed") -> float:
        """POST a signed deployment of `project` naming res_`index`; returns its ms."""
        body = json.dumps(
            {
                "id": event_id,
                "type": "deployment.succeeded",
                "createdAt": at_ms,
                "payload": {
                    "project": {"id": project},
                    "deployment": {"id": f"dpl_{event_id}"},
                    "target": "production",
                    "integrations": [
                        {
                            "installationId": "icfg_bench",
                            "resources": [{"externalResourceId": f"res_{index}"}],
                        }
                    ],
                },
            }
        ).encode()
        start = time.perf_counter()
        response = client.post(
            "/webhooks/vercel/",
            data=body,
            content_type="application/json",
            HTTP_X_VERCEL_SIGNATURE=sign_webhook(body, SECRET),
        )
        elapsed = (time.perf_counter() - start) * 1000
        assert response.json() == {"outcome": expect}, response.content
        return elapsed

    waiting_rotations(0, n)

    # (b) reminders: the day-1 step is due for every rotation.
    start = time.perf_counter()
    sent = redeploy.reminders_send_due()
    reminder_ms = (time.perf_counter() - start) * 1000 / max(sent, 1)

    # (a) webhooks.
    timings = [
        deliver(f"evt_{index}_{project}", index, project)
        for index in range(n)
        for project in ("prj_a", "prj_b")
    ]
    redeployed = Rotation.objects.filter(redeployed_at__isnull=False).count()

    # (c) expiry: every rotation redeployed; move the clock past the safety delay.
    Rotation.objects.update(redeployed_at=timezone.now() - timedelta(minutes=11))
    start = time.perf_counter()
    expired = redeploy.rotations_expire_due()
    expiry_ms = (time.perf_counter() - start) * 1000 / max(expired, 1)

    # (d) idle tick.
    from rotation.tasks_redeploy import redeploy_tick

    connection.queries_log.clear()
    with CaptureQueriesContext(connection) as queries:
        start = time.perf_counter()
        redeploy_tick()
        idle_ms = (time.perf_counter() - start) * 1000

    timings.sort()
    print(f"database: {connection.vendor}, rotations: {n}")
    print(
        f"(a) webhook deliveries: {len(timings)}, median {statistics.median(timings):.2f} ms, "
        f"p95 {timings[int(len(timings) * 0.95)]:.2f} ms; rotations fully redeployed: {redeployed}"
    )
    print(f"(b) reminders sent: {sent}, {reminder_ms:.2f} ms each")
    print(f"(c) expiries: {expired}, {expiry_ms:.2f} ms each")
    print(f"(d) idle tick: {idle_ms:.1f} ms, {len(queries)} queries")
    print(
        "reminders left unsent:",
        Reminder.objects.filter(step="day-1").exclude(status=Reminder.Status.SENT).count(),
    )
    if args.p6:
        p6(args.p6, n, waiting_rotations, deliver)


def p6(
    count: int,
    unrelated: int,
    waiting_rotations: Callable[[int, int], None],
    deliver: Callable[..., float],
) -> None:
    """P6: the n rotations of (a)-(c) are completed, so deployments naming their resources are
    unrelated; `count` fresh rotations make the relevant ones."""
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.DEBUG = False  # as in production: no query log on the connection
    waiting_rotations(unrelated, count)

    def run(name: str, targets: list[tuple[int, str]], expect: str, probes: int) -> None:
        """Probe the first `probes` deliveries for their queries, time the rest."""
        counts, locks = [], 0
        for number, (index, project) in enumerate(targets[:probes]):
            with CaptureQueriesContext(connection) as queries:
                deliver(f"evt_p6_{name}_{number}", index, project, expect)
            counts.append(len(queries))
            locks += sum("FOR UPDATE" in q["sql"] for q in queries.captured_queries)
        walls, cpus = [], []
        for number, (index, project) in enumerate(targets[probes:], start=probes):
            cpu = time.process_time()
            walls.append(deliver(f"evt_p6_{name}_{number}", index, project, expect))
            cpus.append((time.process_time() - cpu) * 1000)
        walls.sort()
        print(
            f"P6 {name}: {len(walls)} deliveries, median {statistics.median(walls):.2f} ms, "
            f"p95 {walls[int(len(walls) * 0.95)]:.2f} ms (CPU median "
            f"{statistics.median(cpus):.2f} ms); queries {' / '.join(map(str, counts))}"
            + (" (marks one project / completes the rotation)" if probes > 1 else "")
            + f", SELECT ... FOR UPDATE {locks}"
        )

    run(
        "unrelated",
        [(i % unrelated, p) for i in range(count) for p in ("prj_a", "prj_b")],
        "unrelated",
        probes=1,
    )
    run(
        "relevant",
        [(i, p) for i in range(unrelated, unrelated + count) for p in ("prj_a", "prj_b")],
        "processed",
        probes=2,  # the second project of a rotation also completes it
    )
    print("P6 targets: unrelated <= 2 ms, relevant <= 5 ms (median)")


if __name__ == "__main__":
    main()
