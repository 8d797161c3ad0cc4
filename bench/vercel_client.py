"""Vercel client benchmark against the in-process stand-in: what connection reuse buys.

Prints, in one run:
  (a) median ms per PUT through the shared session (one reused connection) and with a new
      session per call, and their ratio                                  (expect ratio > 1)
  (b) PUTs per second from 8 threads sharing the session, divided by 1 thread (both ends
      share this process and its GIL: it shows the shared session is safe, not scaling)
  (c) with --fail-rate/--drop-rate faults: the share of calls that raised a transient
      VercelError, against the configured share, and that none was marked permanent

Usage: .venv/bin/python bench/vercel_client.py [--n 1000] [--repeat 3]
All traffic stays on 127.0.0.1; nothing here is a test, it prints figures and ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "partnerportal.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

import logging  # noqa: E402

import requests  # noqa: E402
from django.conf import settings  # noqa: E402

from rotation import vercel  # noqa: E402
from rotation.devtools.fake_vercel import FakeVercel  # noqa: E402

TOKEN = "vci_bench_client_token"
# One run sends at most 4 * repeat * n + n + 1 PUTs, all to 127.0.0.1; both are capped.
MAX_CALLS = 100_000
MAX_REPEAT = 10
SECRETS = [
    {"name": "DATABASE_URL", "value": "postgres://u:p@db.example.com/app"},
    {"name": "PGPASSWORD", "value": "bench-password", "environmentOverrides": {"preview": "x1"}},
]


def count(limit: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not 1 <= value <= limit:
            raise argparse.ArgumentTypeError(f"must be between 1 and {limit:,}")
        return value

    return parse


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError("must be at least 0 and below 1")
    return value


def push(index: int, session: requests.Session | None = None) -> None:
    vercel.update_resource_secrets(
        installation_id="icfg_bench",
        resource_id=f"res_{index % 100}",
        token=TOKEN,
        secrets=SECRETS,
        session=session,
    )


def per_call_ms(n: int, *, fresh: bool) -> float:
    started = time.perf_counter()
    for index in range(n):
        if fresh:
            with requests.Session() as session:
                push(index, session)
        else:
            push(index)
    return (time.perf_counter() - started) * 1000 / n


def threaded_rate(n: int, threads: int) -> float:
    def worker(offset: int) -> None:
        for index in range(offset, n, threads):
            push(index)

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(offset,)) for offset in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=count(MAX_CALLS), default=1000)
    parser.add_argument("--repeat", type=count(MAX_REPEAT), default=3)
    parser.add_argument("--fail-rate", type=probability, default=0.05)
    parser.add_argument("--drop-rate", type=probability, default=0.05)
    args = parser.parse_args()
    logging.getLogger("rotation").setLevel(logging.ERROR)

    with FakeVercel(seed=1) as fake:
        fake.add_installation("icfg_bench", TOKEN, {f"res_{i}": "postgres" for i in range(100)})
        settings.VERCEL_API_URL = fake.url
        push(0)  # warm up

        shared = statistics.median(per_call_ms(args.n, fresh=False) for _ in range(args.repeat))
        fresh = statistics.median(per_call_ms(args.n, fresh=True) for _ in range(args.repeat))
        print(f"(a) shared session {shared:.2f} ms/PUT, new session per call {fresh:.2f} ms/PUT")
        print(f"    ratio new/shared = {fresh / shared:.2f}")

        one = statistics.median(threaded_rate(args.n, 1) for _ in range(args.repeat))
        eight = statistics.median(threaded_rate(args.n, 8) for _ in range(args.repeat))
        print(f"(b) 1 thread {one:.0f} PUT/s, 8 threads {eight:.0f} PUT/s, ratio {eight / one:.2f}")

        fake.fail_rate, fake.drop_rate = args.fail_rate, args.drop_rate
        fake.reset_stats()
        transient = permanent = 0
        for index in range(args.n):
            try:
                push(index)
            except vercel.VercelError as error:
                transient += not error.permanent
                permanent += error.permanent
        expected = 1 - (1 - args.drop_rate) * (1 - args.fail_rate)
        print(
            f"(c) faults: {transient / args.n:.3f} of calls transient (configured {expected:.3f}),"
            f" {permanent} permanent (must be 0); stand-in counted {fake.stats}"
        )


if __name__ == "__main__":
    main()
