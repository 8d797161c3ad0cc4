"""Many PUTs in flight per worker, and one rate limit shared by every worker on every node.

The stand-in records when each request arrived and was answered, so the tests read the
overlap of PUTs and any PUT sent during a rate-limit pause from what Vercel's side saw.
"""

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import Task

from rotation import services, tasks
from rotation.models import AuditAction, AuditEvent, CredentialVersion, PushPace, Resource, Rotation
from rotation.roles import SUPPORT, roles_sync
from rotation.services import prepare, push
from rotation.services.pace import (
    PACE_READ_SECONDS,
    PACER,
    SOLO_PUTS,
    TIMED_PUTS,
    Pacer,
    pace_rate_limited,
    pace_read,
)
from tests.conftest import (
    make_installation,
    make_user,
    q_conf_use,
    qcluster_start,
    qcluster_stop,
    wait_until,
)
from tests.provider_doubles import SecondWorkerProvider
from tests.test_browser import database_url

REDIS_URL = "redis://127.0.0.1:6379/11"
State = Rotation.State


def max_in_flight(requests) -> int:
    """The most requests the stand-in was answering at one moment."""
    edges = sorted(
        [(r.received_at, 1) for r in requests] + [(r.answered_at, -1) for r in requests],
        key=lambda edge: (edge[0], edge[1]),
    )
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def puts(fake) -> list:
    return [r for r in fake.requests if r.method == "PUT"]


def clusters_env(fake_vercel, monkeypatch) -> dict[str, str]:
    """Settings of qclusters of one worker on this test's database and stand-in (the Redis
    broker on PostgreSQL, the ORM broker on SQLite); tasks enqueued here reach them."""
    name = f"pp-test-{uuid.uuid4().hex[:10]}"
    env = {
        "DATABASE_URL": database_url(connection.settings_dict),
        "VERCEL_API_URL": fake_vercel.url,
        "Q_CLUSTER_NAME": name,
        "Q_WORKERS": "1",
        "Q_POLL": "0.1",
        "ROTATION_PUSH_CONCURRENCY": "8",
        "PYTHONUNBUFFERED": "1",
    }
    redis_url = REDIS_URL if connection.vendor == "postgresql" else ""
    if redis_url:
        env["REDIS_URL"] = redis_url
    q_conf_use(monkeypatch, name=name, redis_url=redis_url)
    monkeypatch.setattr(Conf, "SYNC", False)
    return env


def clusters_run(env: dict[str, str], tmp_path, *, until, timeout: float = 60) -> bool:
    """Run two clusters until `until()` holds (or `timeout` passes); whether it held."""
    clusters = [qcluster_start(env, tmp_path / f"cluster{n}.log") for n in range(2)]
    try:
        return wait_until(until, timeout=timeout, interval=0.5)
    finally:
        for cluster in clusters:
            qcluster_stop(cluster)
        if connection.vendor == "postgresql":
            from django_q.brokers import get_broker

            get_broker().delete_queue()


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_a_chunk_task_keeps_several_puts_in_flight(fake_vercel, settings):
    roles_sync()
    alice = make_user("alice", group=SUPPORT)
    settings.ROTATION_PUSH_CONCURRENCY = 8
    settings.ROTATION_PUSH_PER_INSTALLATION = 4
    first = make_installation("icfg_one", resources=12)
    second = make_installation("icfg_two", token="vci_test_token_2", resources=12)
    fake_vercel.load_from_database()
    fake_vercel.latency_ms = 100
    batch = services.rotation_request(
        resource_ids=Resource.objects.all(), actor=alice, reason="in flight"
    )
    ids = list(batch.rotations.order_by("pk").values_list("pk", flat=True))
    assert tasks.rotations_process(ids) == 24
    assert set(batch.rotations.values_list("state", flat=True)) == {State.AWAITING_REDEPLOY}
    sent = puts(fake_vercel)
    assert len(sent) == len({r.path for r in sent}) == 24  # one PUT per resource
    assert 4 < max_in_flight(sent) <= 8
    for installation in (first, second):
        path = f"/v1/installations/{installation.vercel_id}/"
        assert max_in_flight([r for r in sent if r.path.startswith(path)]) <= 4
    assert CredentialVersion.objects.filter(stage="current").count() == 24
    assert AuditEvent.objects.filter(action=AuditAction.ROTATION_PUSHED).count() == 24


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_a_chunk_takes_on_threads_once_vercel_turns_slow(fake_vercel, settings):
    """The process learned a stand-in's pace (one PUT at a time is best); Vercel then answers
    in 100 ms: the same chunk starts pushing one PUT at a time and takes on threads."""
    roles_sync()
    alice = make_user("alice", group=SUPPORT)
    settings.ROTATION_PUSH_CONCURRENCY = 8
    make_installation("icfg_slowing", resources=24)
    fake_vercel.load_from_database()
    for _ in range(TIMED_PUTS):
        PACER.timed(wall=0.0015, cpu=0.001)
    assert PACER.threads(8) == 1
    fake_vercel.latency_ms = 100
    batch = services.rotation_request(
        resource_ids=Resource.objects.all(), actor=alice, reason="slowing"
    )
    ids = list(batch.rotations.order_by("pk").values_list("pk", flat=True))
    assert tasks.rotations_process(ids) == 24
    sent = sorted(puts(fake_vercel), key=lambda request: request.received_at)
    assert len(sent) == len({r.path for r in sent}) == 24
    assert max_in_flight(sent[:SOLO_PUTS]) == 1  # alone, while the estimate said one
    assert max_in_flight(sent) > 1
    assert set(batch.rotations.values_list("state", flat=True)) == {State.AWAITING_REDEPLOY}
    assert AuditEvent.objects.filter(action=AuditAction.ROTATION_PUSHED).count() == 24


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_a_chunk_at_vercel_s_pace_pushes_while_it_prepares(fake_vercel, settings):
    """Threads are worth having (100 ms): PUTs leave while the rest of the chunk is still being
    made. A rotation cancelled after its credentials were made, before they were recorded, is
    never PUT."""
    roles_sync()
    alice = make_user("alice", group=SUPPORT)
    settings.ROTATION_PUSH_CONCURRENCY = 8
    settings.ROTATION_CREDENTIAL_PROVIDER = "tests.provider_doubles.SecondWorkerProvider"
    make_installation("icfg_stream", resources=50)
    fake_vercel.load_from_database()
    fake_vercel.latency_ms = 100
    batch = services.rotation_request(
        resource_ids=Resource.objects.all(), actor=alice, reason="stream"
    )
    rotations = list(batch.rotations.order_by("pk").select_related("resource"))
    cancelled, last = rotations[-2], rotations[-1]

    def while_making(resource):
        if resource.pk != last.resource_id:
            return None
        services.rotation_cancel(rotation=cancelled, actor=alice)  # made, not yet recorded
        return wait_until(lambda: len(puts(fake_vercel)) > 0, timeout=30, interval=0.01)

    SecondWorkerProvider.during_create = while_making
    assert tasks.rotations_process([r.pk for r in rotations]) == 49
    assert SecondWorkerProvider.seen[-1] is True  # PUTs went out before the chunk was made

    sent = puts(fake_vercel)
    assert len(sent) == len({r.path for r in sent}) == 49  # one PUT per resource
    assert not [r for r in sent if cancelled.resource.vercel_id in r.path]
    cancelled.refresh_from_db()
    assert cancelled.state == State.CANCELLED
    assert not CredentialVersion.objects.filter(rotation=cancelled, stage="pending").exists()
    pushed = batch.rotations.exclude(pk=cancelled.pk)
    assert set(pushed.values_list("state", flat=True)) == {State.AWAITING_REDEPLOY}
    # Recorded in one group (each group queues its own dashboard-notification task).
    assert len(set(pushed.values_list("pushed_at", flat=True))) == 1
    assert AuditEvent.objects.filter(action=AuditAction.ROTATION_PUSHED).count() == 49
    assert CredentialVersion.objects.filter(stage="current").count() == 49


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_a_chunk_pushed_one_put_at_a_time_claims_as_it_records(fake_vercel, settings, monkeypatch):
    """Without threads (here: none allowed), a chunk's transactions are prepare's claim, the
    record of the made credentials that also claims them for push, and the record of the
    successes: push's own claim (a second locked read of the chunk) is left out."""
    roles_sync()
    alice = make_user("alice", group=SUPPORT)
    settings.ROTATION_PUSH_CONCURRENCY = 1
    make_installation("icfg_local", resources=24)
    fake_vercel.load_from_database()
    calls: list[str] = []
    for module, name in [(prepare, "_claim"), (prepare, "_record"), (push, "rotations_claim")]:
        real = getattr(module, name)

        def spy(*args, _real=real, _name=f"{module.__name__}.{name}", **kwargs):
            calls.append(_name.removeprefix("rotation.services."))
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    real_succeed = push.rotations_succeed
    monkeypatch.setattr(
        push,
        "rotations_succeed",
        lambda *a, **k: calls.append("push.rotations_succeed") or real_succeed(*a, **k),
    )
    batch = services.rotation_request(
        resource_ids=Resource.objects.all(), actor=alice, reason="local"
    )
    ids = list(batch.rotations.order_by("pk").values_list("pk", flat=True))
    assert tasks.rotations_process(ids) == 24
    assert calls == ["prepare._claim", "prepare._record", "push.rotations_succeed"]
    assert max_in_flight(puts(fake_vercel)) == 1
    assert set(batch.rotations.values_list("state", flat=True)) == {State.AWAITING_REDEPLOY}
    assert set(batch.rotations.values_list("attempts", flat=True)) == {1}


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_a_chunk_writes_each_rotation_row_once_per_step(fake_vercel, settings):
    """Prepare's lease, the claim for push (which also ends the lease) and the record of the
    push (with redeploy tracking's deadline and reminder): three writes of the chunk's rows,
    each one statement, where there were five."""
    roles_sync()
    alice = make_user("alice", group=SUPPORT)
    settings.ROTATION_PUSH_CONCURRENCY = 1
    make_installation("icfg_writes", resources=12)
    fake_vercel.load_from_database()
    batch = services.rotation_request(
        resource_ids=Resource.objects.all(), actor=alice, reason="writes"
    )
    ids = list(batch.rotations.order_by("pk").values_list("pk", flat=True))
    with CaptureQueriesContext(connection) as queries:
        assert tasks.rotations_process(ids) == 12
    table = Rotation._meta.db_table
    writes = [q["sql"] for q in queries if q["sql"].startswith(f'UPDATE "{table}"')]
    assert len(writes) == 3, writes
    for rotation in batch.rotations.all():
        assert rotation.state == State.AWAITING_REDEPLOY
        assert rotation.pushed_at == rotation.state_changed_at
        assert rotation.next_attempt_at is None
        assert rotation.redeploy_deadline_at is not None
        assert rotation.next_reminder_at is not None
        assert rotation.notification_state == Rotation.Notification.SETTING
        assert rotation.attempts == 1


@pytest.mark.django_db
def test_a_429_halves_concurrency_once_per_pause_and_successes_grow_it_back(installation, settings):
    settings.ROTATION_PUSH_PER_INSTALLATION = 8
    assert pace_read(installation_id=installation.pk) == (None, 8)  # no row until a 429
    until = pace_rate_limited(installation_id=installation.pk, wait=2)
    # 429s of PUTs already in flight belong to the same pause: halved once.
    pace_rate_limited(installation_id=installation.pk, wait=1)
    paused_until, concurrency = pace_read(installation_id=installation.pk)
    assert (paused_until, concurrency) == (until, 4)
    pacer = Pacer()
    assert 1.5 < pacer.acquire(installation.pk) <= 2  # paused: no slot, the seconds left
    PushPace.objects.update(paused_until=timezone.now() - timedelta(seconds=1))
    assert pace_rate_limited(installation_id=installation.pk, wait=1) > timezone.now()
    assert pace_read(installation_id=installation.pk)[1] == 2  # a new pause halves again
    PushPace.objects.update(paused_until=None)
    for _ in range(2):  # a run of `concurrency` accepted PUTs adds one
        assert pacer.acquire(installation.pk) == 0
    for _ in range(2):
        pacer.release(installation.pk, accepted=True)
    assert pace_read(installation_id=installation.pk)[1] == 3
    assert PushPace.objects.get().rate_limited_count == 3


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_two_clusters_share_the_rate_limit_skip_cancelled_and_finalize_once(
    fake_vercel, tmp_path, monkeypatch
):
    """Two qcluster processes of one worker each (Redis broker on PostgreSQL, the ORM broker
    on SQLite), every chunk task delivered twice, a 429 on the first PUT, some rotations
    cancelled before their task runs."""
    roles_sync()
    alice = make_user("alice", group=SUPPORT)
    installation = make_installation("icfg_shared", resources=100)
    fake_vercel.load_from_database()
    # Slow enough that a chunk (45 PUTs, at most 2 in flight) outlasts the moment it takes
    # every process to see the pause, so both workers still hold work when it begins.
    fake_vercel.latency_ms = 60
    fake_vercel.respond_next(
        429,
        {"error": {"code": "rate_limited", "message": "slow down"}},
        headers={"Retry-After": "4"},
    )
    env = clusters_env(fake_vercel, monkeypatch)
    env["ROTATION_PUSH_PER_INSTALLATION"] = "2"
    batch = services.rotation_request(
        resource_ids=installation.resources.all(), actor=alice, reason="shared limit"
    )
    rotations = list(batch.rotations.order_by("pk"))
    for rotation in rotations[45:50] + rotations[95:]:
        services.rotation_cancel(rotation=rotation, actor=alice)
    # Each chunk task delivered a second time, as a broker may after a lost acknowledgement.
    services.rotations_enqueue(rotation_ids=[r.pk for r in rotations], group="again")
    finished = clusters_run(
        env,
        tmp_path,
        until=lambda: Task.objects.filter(func="rotation.tasks.rotations_process").count() == 4,
    )
    logs = "".join(p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("*.log"))
    assert finished, logs

    states = dict(batch.rotations.values_list("resource__vercel_id", "state"))
    cancelled = {vercel_id for vercel_id, state in states.items() if state == State.CANCELLED}
    assert len(cancelled) == 10
    assert {s for v, s in states.items() if v not in cancelled} == {State.AWAITING_REDEPLOY}
    sent = puts(fake_vercel)
    by_resource: dict[str, list] = {}
    for request in sent:
        by_resource.setdefault(request.path.rsplit("/", 2)[-2], []).append(request)
    # No PUT for a cancelled rotation; one set per resource, also across the retried 429.
    assert not cancelled & set(by_resource)
    assert len(by_resource) == 90
    assert all(len({repr(r.body) for r in sent_for}) == 1 for sent_for in by_resource.values())
    assert sorted(len(v) for v in by_resource.values()) == [1] * 89 + [2]
    # Nothing finalized twice.
    assert AuditEvent.objects.filter(action=AuditAction.ROTATION_PUSHED).count() == 90
    assert CredentialVersion.objects.filter(stage="current").count() == 90

    # The 429 paused every worker: no PUT arrived from its answer (plus the moment it takes
    # to record the pause, and the interval at which other processes re-read the shared pace)
    # until the pause was over, though both workers held work across it.
    limited = next(r for r in sent if r.status == 429)
    pace = PushPace.objects.get(installation=installation)
    pause_end = pace.paused_until.timestamp()
    assert pause_end - limited.answered_at >= 3.9
    seen_by_all = limited.answered_at + 0.3 + PACE_READ_SECONDS
    during = [r for r in sent if seen_by_all < r.received_at < pause_end - 0.05]
    assert during == []
    assert pace.rate_limited_count == 1
    # Two tasks running at once (so one in each single-worker cluster) from before the
    # pause's last second to past its end: each waited it out with rotations still to push.
    runs = [t for t in Task.objects.filter(func="rotation.tasks.rotations_process") if t.result]
    held = [
        t for t in runs if t.started.timestamp() < pause_end - 1 < pause_end < t.stopped.timestamp()
    ]
    assert len(held) >= 2, [(t.started, t.stopped, t.result) for t in runs]
    assert [r for r in sent if r.received_at >= pause_end - 0.05]  # and pushed after it


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_two_clusters_pace_pushes_by_vercels_rate_limit_headers(fake_vercel, tmp_path, monkeypatch):
    """Vercel allows 20 PUTs a second (its answers say so): pushing 100 resources from two
    clusters, each able to keep 8 PUTs in flight 30 ms long (~500 a second), shares one bucket
    and stays within the limit, where unpaced PUTs would meet dozens of 429s."""
    roles_sync()
    alice = make_user("alice", group=SUPPORT)
    installation = make_installation("icfg_paced", resources=100)
    fake_vercel.load_from_database()
    fake_vercel.latency_ms = 30
    fake_vercel.rate = 20
    env = clusters_env(fake_vercel, monkeypatch)
    env["ROTATION_PUSH_PER_INSTALLATION"] = "4"
    batch = services.rotation_request(  # two chunk tasks, one for each cluster
        resource_ids=installation.resources.all(), actor=alice, reason="paced"
    )
    finished = clusters_run(
        env,
        tmp_path,
        until=lambda: not batch.rotations.exclude(state=State.AWAITING_REDEPLOY).exists(),
    )
    logs = "".join(p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("*.log"))
    assert finished, logs

    sent = puts(fake_vercel)
    accepted = [r for r in sent if r.status == 201]
    assert len(accepted) == len({r.path for r in accepted}) == 100
    # Jitter of a loaded machine, at most. Only PUTs count: the dashboard notifications that
    # follow are PATCHes, which Vercel (and the stand-in) limit separately, per endpoint.
    assert len([r for r in sent if r.status == 429]) <= 2
    pace = PushPace.objects.get(installation=installation)
    assert (pace.rate_limit, pace.rate_window) == (20, 1.0)  # primed from the headers
    assert pace.sent >= 90  # all but the first PUTs, sent before any answer, took a token
