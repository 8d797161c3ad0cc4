"""Shared personas, data builders and fixtures used by more than one test package."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection

from rotation.models import Installation, Resource
from rotation.roles import COMPLIANCE, SUPPORT, SUPPORT_LEAD, roles_sync

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def vercel_stays_local(settings):
    """Test traffic never leaves this machine: a push no test meant to make goes to a closed
    local port (the `fake_vercel` fixture points VERCEL_API_URL at the stand-in)."""
    settings.VERCEL_API_URL = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def audit_anchor_per_test(settings, tmp_path):
    """Each test anchors audit checkpoints in a file of its own, never the project's var/."""
    settings.AUDIT_ANCHOR_URL = f"file://{tmp_path / 'audit-anchor.jsonl'}"


@pytest.fixture(scope="session", autouse=True)
def flush_keeps_audit_triggers():
    """Flushing the test database (after transactional tests) deletes every row; on SQLite the
    audit table's append-only triggers would refuse that. The flush drops and re-creates them
    around its DELETEs, in its own transaction, as the real triggers they are."""
    if connection.vendor != "sqlite":  # PostgreSQL flushes with TRUNCATE: no row triggers
        yield
        return
    operations = type(connection.ops)
    plain_sql_flush = operations.sql_flush

    def sql_flush(self, style, tables, **kwargs):
        statements = plain_sql_flush(self, style, tables, **kwargs)
        if "rotation_auditevent" not in tables:
            return statements
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT name, sql FROM sqlite_master "
                "WHERE type = 'trigger' AND tbl_name = 'rotation_auditevent'"
            )
            triggers = cursor.fetchall()
        drops = [f'DROP TRIGGER "{name}"' for name, _ in triggers]
        return drops + statements + [sql for _, sql in triggers]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(operations, "sql_flush", sql_flush)
        yield


@pytest.fixture(autouse=True)
def pacer_forgets():
    """The process's pacers keep what they read and learned (pace rows, Vercel's latency);
    each test starts with none, as a fresh worker does."""
    from rotation.services.pace import NOTIFICATION_PACER, PACER

    PACER.forget()
    NOTIFICATION_PACER.forget()


@pytest.fixture(autouse=True)
def provider_doubles_forget():
    """The test providers record calls on their classes (settings name a class, not an
    object); every test starts and ends with nothing recorded."""
    from tests.provider_doubles import reset_doubles

    reset_doubles()
    yield
    reset_doubles()


def pytest_collection_modifyitems(config, items):
    """Skip PostgreSQL-only tests on SQLite; `.ci/run` runs the suite on both."""
    skip_pg = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL)")
    for item in items:
        if "postgres" in item.keywords and connection.vendor != "postgresql":
            item.add_marker(skip_pg)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, request):
    """Browser tests share the test database with a qcluster process, and `processes` tests
    with other processes or threads: on SQLite, use a file."""
    from django.conf import settings

    default = settings.DATABASES["default"]
    wanted = any(
        item.get_closest_marker("browser") or item.get_closest_marker("processes")
        for item in request.session.items
    )
    if wanted and default["ENGINE"].endswith("sqlite3") and not default.get("TEST", {}).get("NAME"):
        path = request.getfixturevalue("tmp_path_factory").mktemp("db") / "test.sqlite3"
        default.setdefault("TEST", {})["NAME"] = str(path)


def raw_database_bytes(tables: list[str] | None = None) -> bytes:
    """Every cell of every table (or of `tables`), read with SQL rather than the ORM."""
    chunks = []
    with connection.cursor() as cursor:
        for table in tables or connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            for row in cursor.fetchall():
                for cell in row:
                    if isinstance(cell, memoryview | bytes | bytearray):
                        chunks.append(bytes(cell))
                    elif cell is not None:
                        chunks.append(str(cell).encode())
    return b"\x00".join(chunks)


def wait_until(condition, *, timeout: float, interval: float = 0.1) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; returns whether it held.

    For what another process does (a qcluster, a browser): there is nothing to join on.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def run_at_once(count: int, action) -> None:
    """Call `action` from `count` threads released together, each on its own connection."""
    import threading

    from django.db import connections

    barrier = threading.Barrier(count)

    def one() -> None:
        try:
            barrier.wait(timeout=30)
            action()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)


def qcluster_start(env: dict, log_path: Path) -> subprocess.Popen:
    """`manage.py qcluster` in a process group of its own, its output in `log_path`."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=Path(__file__).resolve().parents[1],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def qcluster_stop(process: subprocess.Popen) -> None:
    """Stop the cluster as an operator's supervisor should: SIGTERM to the cluster process
    alone, which stops its workers in order (a SIGTERM to every process of the group leaves
    django-q's sentinel waiting on children that are gone), then clear the group."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def q_conf_use(patch: pytest.MonkeyPatch, *, name: str, redis_url: str = "") -> None:
    """Enqueue from this process onto the queue of clusters named `name` (their signing salt
    too), on Redis when `redis_url` is given."""
    from django_q.conf import Conf

    if redis_url:
        patch.setattr(Conf, "ORM", None)
        patch.setattr(Conf, "BROKER_CLASS", None)
        patch.setattr(Conf, "REDIS", redis_url)
    patch.setattr(Conf, "CLUSTER_NAME", name)
    patch.setattr(Conf, "PREFIX", name)


def make_user(username: str, *, group: str | None = None, staff: bool = True, superuser=False):
    user = get_user_model().objects.create_user(
        username, f"{username}@example.com", PASSWORD, is_staff=staff, is_superuser=superuser
    )
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def roles(db):
    roles_sync()


@pytest.fixture
def alice(roles):
    """Support staff."""
    return make_user("alice", group=SUPPORT)


@pytest.fixture
def lead(roles):
    """Support lead."""
    return make_user("lena", group=SUPPORT_LEAD)


@pytest.fixture
def carol(roles):
    """Compliance reviewer."""
    return make_user("carol", group=COMPLIANCE)


@pytest.fixture
def dave(db):
    """Staff member with no permissions at all."""
    return make_user("dave")


@pytest.fixture
def root(db):
    """Superuser."""
    return make_user("root", superuser=True)


def make_installation(
    vercel_id: str = "icfg_test1",
    *,
    token: str = "vci_test_token_1",
    endpoint: str = "current",
    resources: int = 1,
    product: str = "postgres",
) -> Installation:
    installation = Installation.objects.create(
        vercel_id=vercel_id,
        name=f"Team of {vercel_id}",
        team_id=f"team_{vercel_id}",
        contact_email="owner@example.com",
        endpoint=endpoint,
    )
    installation.set_access_token(token)
    installation.save()
    for index in range(resources):
        Resource.objects.create(
            installation=installation,
            vercel_id=f"{vercel_id}_res{index}",
            product=product,
            name=f"db-{index}",
            secret_template=[
                {"name": "DATABASE_URL", "prefix": "", "environments": ["production", "preview"]},
                {"name": "PGPASSWORD", "prefix": "", "environments": ["production"]},
            ],
        )
    return installation


@pytest.fixture
def installation(db):
    return make_installation()


@pytest.fixture
def fake_vercel(settings):
    """The local Vercel stand-in on a free port; VERCEL_API_URL points at it."""
    from rotation.devtools.fake_vercel import FakeVercel

    fake = FakeVercel(seed=1234).start()
    settings.VERCEL_API_URL = fake.url
    yield fake
    fake.stop()


@pytest.fixture
def fast_retries(settings):
    """Short waits so retry tests run in seconds; hangs end at the read timeout."""
    settings.ROTATION_PUSH_BACKOFF_BASE = 0.01
    settings.ROTATION_PUSH_MAX_ATTEMPTS = 40
    settings.VERCEL_READ_TIMEOUT = 0.3
    settings.VERCEL_CONNECT_TIMEOUT = 0.5


@pytest.fixture
def q_sync(monkeypatch):
    """django-q2 runs each enqueued task at once, in this process (`Q_CLUSTER sync`)."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


# Redeploy tracking: the policy most tests assume, and the stand-in holding the new values.


@pytest.fixture
def policy(settings):
    settings.ROTATION_REMINDER_DAYS = [1, 3, 7]
    settings.ROTATION_REDEPLOY_GRACE_DAYS = 14
    settings.ROTATION_ESCALATION_HOURS_BEFORE_DEADLINE = 48
    settings.ROTATION_ESCALATION_EMAILS = ["oncall@partner.example"]
    settings.ROTATION_EXPIRE_ON_DEADLINE = False
    settings.ROTATION_EXPIRE_SAFETY_DELAY_MINUTES = 10
    settings.ROTATION_REDEPLOY_TARGETS = []
    return settings


@pytest.fixture
def resource(installation):
    return installation.resources.get()


@pytest.fixture
def provider(db):
    """Which versions the provider confirmed expired (read from our rows)."""
    from tests.redeploy_builders import ExpiredAtProvider

    return ExpiredAtProvider


@pytest.fixture
def on_vercel(fake_vercel, resource):
    """The stand-in, knowing the resource and holding its new (current) secret set."""
    from tests.redeploy_builders import NEW_SECRETS

    installation = resource.installation
    fake_vercel.load_from_database()
    fake_vercel.set_secrets(installation.vercel_id, resource.vercel_id, NEW_SECRETS)
    return fake_vercel


# Vercel calling us (Request Secrets Rotation): the stand-in signs, the portal verifies.
OIDC_CLIENT_ID = "oac_test_client"


@pytest.fixture
def vercel_oidc(settings, fake_vercel):
    """The portal trusts the stand-in's keys (its JWKS on 127.0.0.1) as it trusts Vercel's."""
    settings.VERCEL_CLIENT_ID = OIDC_CLIENT_ID
    settings.VERCEL_OIDC_JWKS_URL = fake_vercel.jwks_url
    settings.VERCEL_OIDC_ISSUER = fake_vercel.url
    settings.VERCEL_OIDC_JWKS_REFETCH_SECONDS = 0
    fake_vercel.partner.client_id = OIDC_CLIENT_ID
    return fake_vercel


# The Marketplace surfaces (token rotation, inventory, notification).

MARKETPLACE_CLIENT_SECRET = "integration-client-secret-for-tests"


@pytest.fixture
def market(fake_vercel, installation, settings):
    """The stand-in knowing the installation (and its resource), and the client secret."""
    settings.VERCEL_CLIENT_SECRET = MARKETPLACE_CLIENT_SECRET
    fake_vercel.load_from_database()
    return fake_vercel
