"""django-q2 tasks end to end: fan-out, chunks, retries under faults, the sweeper, brokers.

Tasks run in this process: either called directly, through django-q2's `sync` mode, or
taken from a real Redis list and handed to django-q2's own worker function.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import uuid
from multiprocessing import Queue, Value
from pathlib import Path

import pytest
from django.db import connection
from django_q.conf import Conf
from django_q.models import OrmQ, Schedule, Task
from django_q.signing import SignedPackage

from rotation import services, tasks
from rotation.models import AuditEvent, CredentialVersion, Installation, Resource, Rotation
from rotation.selectors import batch_progress
from tests.conftest import (
    make_installation,
    make_user,
    q_conf_use,
    raw_database_bytes,
    run_at_once,
    wait_until,
)

State = Rotation.State
BASE_DIR = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/11"


@pytest.fixture
def fleet(db, fake_vercel) -> list[Installation]:
    """Two installations, one per secrets endpoint, 60 resources each, known to the stand-in."""
    installations = [
        make_installation("icfg_cur", token="vci_cur_token", endpoint="current", resources=60),
        make_installation(
            "icfg_dep", token="vci_dep_token", endpoint="deprecated", resources=60, product="pg"
        ),
    ]
    fake_vercel.load_from_database()
    return installations


def values_of(secrets: list[dict]) -> set[str]:
    found = set()
    for secret in secrets:
        found.add(secret["value"])
        found.update((secret.get("environmentOverrides") or {}).values())
    return found


def normalized(secrets: list[dict]) -> dict[str, dict]:
    return {
        secret["name"]: {
            "value": secret["value"],
            "prefix": secret.get("prefix", ""),
            "environmentOverrides": secret.get("environmentOverrides") or {},
        }
        for secret in secrets
    }


def assert_stand_in_holds_current_versions(fake) -> None:
    for resource in Resource.objects.select_related("installation"):
        current = CredentialVersion.objects.get(resource=resource, stage="current")
        held = fake.secrets_of(resource.installation.vercel_id, resource.vercel_id)
        assert normalized(held) == normalized(current.secrets()), resource.vercel_id


def pushed_values(fake) -> set[str]:
    values: set[str] = set()
    for resource in Resource.objects.select_related("installation"):
        values |= values_of(fake.secrets_of(resource.installation.vercel_id, resource.vercel_id))
    return values


def test_it_pushes_every_rotation_through_faults(
    alice, fleet, fake_vercel, fast_retries, q_sync, caplog, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.DEBUG)
    fake_vercel.fail_rate = 0.2
    fake_vercel.hang_rate = 0.03
    fake_vercel.hang_seconds = 1.0
    fake_vercel.drop_rate = 0.05
    fake_vercel.rate = 25
    # Pushes keep to the rate its headers announce, so its bucket seldom answers 429: one more.
    fake_vercel.respond_next(
        429,
        {"error": {"code": "rate_limited", "message": "slow down"}},
        headers={"Retry-After": "1"},
    )
    with django_capture_on_commit_callbacks(execute=True):
        batch = services.rotation_request(
            resource_ids=Resource.objects.all(), actor=alice, reason="quarterly", ticket="OPS-7"
        )
    progress = batch_progress(batch=batch)
    assert progress.total == 120
    assert progress.counts["awaiting_redeploy"] == 120, progress
    assert progress.finished and progress.percent == 100
    stats = fake_vercel.stats
    assert stats["dropped"] and stats["hung"] and stats["rate_limited"]
    # Each 429 was waited out for at least the stand-in's Retry-After (1 s), in the worker.
    waits = [
        event.details
        for event in AuditEvent.objects.filter(action="rotation.push_deferred")
        if event.details["status"] == 429
    ]
    assert waits and all(w["wait_seconds"] >= 1.0 and w["in_worker"] for w in waits)
    assert any(status >= 500 for status in stats["by_status"])
    # Both endpoints were used, each for its own installation.
    # (Secrets pushes only: after each push the dashboard notification is PATCHed too.)
    paths = {r.path for r in fake_vercel.requests if r.path.endswith("/secrets")}
    assert "/v1/installations/icfg_cur/resources/icfg_cur_res0/secrets" in paths
    assert "/v1/installations/icfg_dep/products/pg/resources/icfg_dep_res0/secrets" in paths
    assert not any("/products/" in p for p in paths if p.startswith("/v1/installations/icfg_cur"))
    assert all("/products/pg/" in p for p in paths if p.startswith("/v1/installations/icfg_dep"))
    assert_stand_in_holds_current_versions(fake_vercel)
    # A batch this small is split by the request itself: one task per 50 rotations, ids only.
    ran = list(Task.objects.order_by("started"))
    assert [task.func for task in ran].count("rotation.tasks.batch_fan_out") == 0
    chunks = [task for task in ran if task.func == "rotation.tasks.rotations_process"]
    assert [len(task.args[0]) for task in chunks] == [50, 50, 20]
    assert all(isinstance(pk, int) for task in chunks for pk in task.args[0])
    assert sum(task.result for task in chunks) == 120

    # Nothing pushed is readable anywhere we keep things.
    secret_values = pushed_values(fake_vercel)
    assert len(secret_values) >= 120 * 3
    hidden = [value.encode() for value in secret_values] + [b"vci_cur_token", b"vci_dep_token"]
    database = raw_database_bytes()
    assert not [value for value in hidden if value in database]
    logs = caplog.text.encode()
    assert b"rotation" in logs or b"vercel" in logs
    assert not [value for value in hidden if value in logs]
    events = b"".join(repr(row).encode() for row in AuditEvent.objects.values_list())
    assert not [value for value in hidden if value in events]


def test_the_raw_database_check_reads_django_q_tables_too(db):
    """The raw-database checks above would see a value in django-q2's own tables."""
    from django_q.models import Schedule

    Schedule.objects.create(name="marker-7f3a9c", func="math.floor", args="1.5")
    assert b"marker-7f3a9c" in raw_database_bytes()


def test_it_fails_fast_on_permanent_errors_and_retry_then_succeeds(
    alice, fleet, fake_vercel, q_sync, django_capture_on_commit_callbacks
):
    denied = {"error": {"code": "forbidden", "message": "This token cannot update the resource"}}
    fake_vercel.respond_next(403, denied, times=3)
    with django_capture_on_commit_callbacks(execute=True):
        batch = services.rotation_request(
            resource_ids=Resource.objects.all(), actor=alice, reason="x"
        )
    failed = batch.rotations.filter(state=State.FAILED)
    assert failed.count() == 3
    assert {(r.attempts, r.last_error_code, r.last_error_status) for r in failed} == {
        (1, "forbidden", 403)
    }
    assert {r.last_error for r in failed} == {"This token cannot update the resource"}
    # One PUT per rotation (the pushed ones' dashboard notifications are PATCHes).
    assert sum(1 for r in fake_vercel.requests if r.method == "PUT") == 120
    with django_capture_on_commit_callbacks(execute=True):
        assert services.batch_retry_failed(batch=batch, actor=alice) == 3
    assert batch_progress(batch=batch).counts["awaiting_redeploy"] == 120
    assert_stand_in_holds_current_versions(fake_vercel)


def test_it_hands_unprepared_rotations_to_a_new_task_when_out_of_time(alice, fleet, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 1e-9}
    batch = services.rotation_request(resource_ids=Resource.objects.all(), actor=alice, reason="x")
    ids = list(batch.rotations.order_by("pk").values_list("pk", flat=True))[:50]
    assert tasks.rotations_process(ids) == 0
    queued = [SignedPackage.loads(entry.payload) for entry in OrmQ.objects.all()]
    assert [(task["func"], task["args"]) for task in queued] == [
        ("rotation.tasks.rotations_process", (ids,))
    ]
    # No provider call was made; the lease is free for the continuation, and the sweeper
    # does not double it.
    assert not CredentialVersion.objects.filter(rotation_id__in=ids).exists()
    assert set(batch.rotations.filter(pk__in=ids).values_list("state", "next_attempt_at")) == {
        (State.PREPARING, None)
    }
    assert services.rotations_requeue_stuck() == []


def test_it_hands_the_rest_of_a_chunk_to_a_new_task_when_out_of_time(alice, fleet, settings):
    batch = services.rotation_request(resource_ids=Resource.objects.all(), actor=alice, reason="x")
    ids = list(batch.rotations.order_by("pk").values_list("pk", flat=True))[:50]
    services.rotations_prepare(rotation_ids=ids)
    OrmQ.objects.all().delete()
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 1e-9}
    assert tasks.rotations_process(ids) == 0
    queued = [SignedPackage.loads(entry.payload) for entry in OrmQ.objects.all()]
    assert [task["args"] for task in queued] == [(ids,)]
    assert queued[0]["func"] == "rotation.tasks.rotations_process"
    # Handed back, due at once for the continuation; the sweeper does not double it.
    assert set(batch.rotations.filter(pk__in=ids).values_list("state", "attempts")) == {
        (State.PUSHING, 0)
    }
    assert services.rotations_requeue_stuck() == []


def test_it_fans_out_one_task_per_fifty_rotations(alice, fleet):
    batch = services.rotation_request(resource_ids=Resource.objects.all(), actor=alice, reason="x")
    assert tasks.batch_fan_out(batch.pk) == 120
    queued = [SignedPackage.loads(entry.payload) for entry in OrmQ.objects.order_by("id")]
    assert [len(task["args"][0]) for task in queued] == [50, 50, 20]


def test_it_registers_the_sweeper_schedule_once(db):
    from django.apps import apps

    migration = importlib.import_module("rotation.migrations.0005_sweeper_schedule")
    migration.create_sweeper_schedule(apps, None)  # again: a flush may have removed it
    migration.create_sweeper_schedule(apps, None)
    schedule = Schedule.objects.get(func="rotation.tasks.rotations_sweep")
    assert schedule.name == tasks.SWEEPER_SCHEDULE_NAME
    assert schedule.schedule_type == Schedule.MINUTES
    assert schedule.minutes == 1
    assert schedule.repeats == -1


def test_it_sweeps_lost_rotations_back_into_the_queue(alice, fleet, fake_vercel, settings):
    settings.ROTATION_STUCK_AFTER_SECONDS = 0
    batch = services.rotation_request(resource_ids=Resource.objects.all(), actor=alice, reason="x")
    # The fan-out task was lost (a Redis worker died): nothing is queued, all sit requested.
    OrmQ.objects.all().delete()
    assert tasks.rotations_sweep() == 120
    assert batch_progress(batch=batch).counts["requested"] == 120
    assert AuditEvent.objects.filter(action="rotation.requeued").count() == 1


def test_it_leaves_requested_rotations_alone_while_the_queue_is_busy(alice, fleet, settings):
    settings.ROTATION_STUCK_AFTER_SECONDS = 0
    from django_q.tasks import async_task

    services.rotation_request(resource_ids=Resource.objects.all(), actor=alice, reason="x")
    async_task("rotation.tasks.rotations_sweep")  # something is waiting in the queue
    assert tasks.rotations_sweep() == 0


# Redis ------------------------------------------------------------------------------------


@pytest.fixture
def redis_broker(monkeypatch):
    """django-q2 configured for Redis (`REDIS_URL`) under a queue name of this test's own."""
    from django_q.brokers import get_broker

    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "BROKER_CLASS", None)
    monkeypatch.setattr(Conf, "REDIS", REDIS_URL)
    name = f"pp-test-{uuid.uuid4().hex[:10]}"
    monkeypatch.setattr(Conf, "CLUSTER_NAME", name)
    monkeypatch.setattr(Conf, "PREFIX", name)  # the signing salt
    monkeypatch.setattr(Conf, "SYNC", False)
    broker = get_broker()
    assert type(broker).__name__ == "Redis"
    broker.ping()
    yield broker
    broker.delete_queue()


def run_like_a_cluster(broker, payloads: list[bytes], monkeypatch) -> int:
    """Take each task off the Redis list and run it with django-q2's own worker function."""
    from django_q.monitor import monitor
    from django_q.worker import worker

    # A real worker process closes its stale connections between tasks; this one shares the
    # test's connection (and its transaction), which must stay open.
    monkeypatch.setattr("django_q.worker.close_old_django_connections", lambda: None)
    monkeypatch.setattr("django_q.monitor.close_old_django_connections", lambda: None)
    count = 0
    while batch := broker.dequeue():
        for ack_id, payload in batch:
            payloads.append(payload)
            task_queue, result_queue = Queue(), Queue()
            task_queue.put(SignedPackage.loads(payload))
            task_queue.put("STOP")
            worker(task_queue, result_queue, Value("f", -1))
            result_queue.put("STOP")
            monitor(result_queue)
            broker.acknowledge(ack_id)
            count += 1
    return count


def test_it_round_trips_tasks_through_redis_with_ids_only(
    alice, fleet, fake_vercel, redis_broker, django_capture_on_commit_callbacks, monkeypatch
):
    # Large batches are split by a fan-out task; make 120 rotations count as large.
    monkeypatch.setattr("rotation.services.request.INLINE_FAN_OUT_MAX", 100)
    with django_capture_on_commit_callbacks(execute=True):
        batch = services.rotation_request(
            resource_ids=Resource.objects.all(), actor=alice, reason="via redis"
        )
    assert redis_broker.queue_size() == 1
    payloads: list[bytes] = []
    assert run_like_a_cluster(redis_broker, payloads, monkeypatch) == 4  # fan-out + 3 chunks
    assert batch_progress(batch=batch).counts["awaiting_redeploy"] == 120
    tasks_seen = [SignedPackage.loads(payload) for payload in payloads]
    assert (tasks_seen[0]["func"], tasks_seen[0]["args"]) == (
        "rotation.tasks.batch_fan_out",
        (batch.pk,),
    )
    for task in tasks_seen[1:]:
        assert task["func"] == "rotation.tasks.rotations_process"
        assert all(isinstance(pk, int) for pk in task["args"][0])
        assert task["kwargs"] == {}
    hidden = [value.encode() for value in pushed_values(fake_vercel)]
    assert not [value for value in hidden if any(value in p for p in payloads)]
    results = Task.objects.filter(func="rotation.tasks.rotations_process")
    assert sorted(task.result for task in results) == [20, 50, 50]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_runs_with_a_real_qcluster_on_redis(fake_vercel):
    """A real `manage.py qcluster` process, Redis broker, the test's PostgreSQL database."""
    from rotation.roles import SUPPORT, roles_sync

    roles_sync()
    alice = make_user("alice", group=SUPPORT)
    installation = make_installation("icfg_q", resources=30)
    fake_vercel.load_from_database()
    name = f"pp-test-{uuid.uuid4().hex[:10]}"
    database = connection.settings_dict
    env = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "Q_CLUSTER_NAME": name,
        "DATABASE_URL": (
            f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/"
            f"{database['NAME']}"
        ),
        "VERCEL_API_URL": fake_vercel.url,
        "PYTHONUNBUFFERED": "1",
    }
    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with pytest.MonkeyPatch.context() as patch:
            q_conf_use(patch, name=name, redis_url=REDIS_URL)
            batch = services.rotation_request(
                resource_ids=installation.resources.all(), actor=alice, reason="real cluster"
            )
        wait_until(lambda: batch_progress(batch=batch).finished, timeout=60)
    finally:
        os.killpg(cluster.pid, signal.SIGTERM)
        try:
            output, _ = cluster.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
            output, _ = cluster.communicate()
    progress = batch_progress(batch=batch)
    assert progress.counts["awaiting_redeploy"] == 30, output.decode()[-3000:]
    hidden = [value.encode() for value in pushed_values(fake_vercel)]
    assert not [value for value in hidden if value in output]
    assert not [value for value in hidden if value in raw_database_bytes()]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_pushes_once_when_a_chunk_task_is_delivered_twice_at_once(fake_vercel):
    """The ORM broker may hand a task out twice; two workers race for the same chunk."""

    from rotation.roles import SUPPORT, roles_sync

    roles_sync()
    alice = make_user("alice", group=SUPPORT)
    installation = make_installation("icfg_twice", resources=20)
    fake_vercel.load_from_database()
    batch = services.rotation_request(
        resource_ids=installation.resources.all(), actor=alice, reason="twice"
    )
    ids = list(batch.rotations.order_by("pk").values_list("pk", flat=True))
    pushed: list[int] = []
    run_at_once(2, lambda: pushed.append(tasks.rotations_process(ids)))
    assert sum(pushed) == 20
    assert batch_progress(batch=batch).counts["awaiting_redeploy"] == 20
    puts = [request.path for request in fake_vercel.requests if request.method == "PUT"]
    assert len(puts) == len(set(puts)) == 20
    assert CredentialVersion.objects.filter(stage="current").count() == 20
    assert_stand_in_holds_current_versions(fake_vercel)


def test_each_task_starts_with_an_empty_query_log(db):
    """With DEBUG on, a worker would otherwise hold up to 9,000 logged queries (issue 11, P8)."""
    from django_q.signals import pre_execute

    connection.queries_log.append({"sql": "SELECT 1", "time": "0.000"})
    pre_execute.send(sender="django_q", func=tasks.rotations_sweep, task={"id": "t"})
    assert len(connection.queries_log) == 0
