"""PostgresRoleProvider against the real PostgreSQL at 127.0.0.1:5432 (trust authentication:
"logs in" means the role exists with LOGIN and its SCRAM verifier accepts the password)."""

import logging

import psycopg
import pytest
from psycopg import sql

from rotation import services
from rotation.models import CredentialVersion, Resource, Rotation
from rotation.providers import CredentialProviderError
from rotation.providers.postgres import PostgresRoleProvider, login_name
from rotation.providers.values import secret_value
from tests.conftest import make_installation
from tests.provider_doubles import DiesAfterCreatingLoginProvider, WorkerDied
from tests.providers.pg_cluster import (
    DATABASE,
    admin_url_of,
    drop_cluster,
    make_cluster,
    scram_login_succeeds,
)

PRODUCT = "pg-test"


@pytest.fixture
def cluster(settings):
    cluster = make_cluster()
    settings.POSTGRES_PROVIDER_ADMIN_URL = admin_url_of(cluster)
    settings.POSTGRES_PROVIDER_PUBLIC_HOST = "127.0.0.1"
    settings.POSTGRES_PROVIDER_PUBLIC_PORT = 5432
    settings.POSTGRES_PROVIDER_PUBLIC_SSLMODE = "disable"
    settings.ROTATION_PROVIDERS = {PRODUCT: "rotation.providers.postgres.PostgresRoleProvider"}
    yield cluster
    drop_cluster(cluster)


@pytest.fixture
def pg_resource(db, cluster):
    installation = make_installation("icfg_pg", product=PRODUCT)
    resource = installation.resources.get()
    resource.metadata = {"role": cluster.owner, "database": DATABASE}
    resource.secret_template = [
        {"name": name, "prefix": "", "environments": ["production"]}
        for name in ("DATABASE_URL", "PGUSER", "PGPASSWORD")
    ]
    resource.save()
    return resource


def version_of(resource, rotation_id, secrets_made):
    """What prepare would have stored for the rotation (unsaved: expire reads it only)."""
    version = CredentialVersion(resource=resource, rotation_id=rotation_id, stage="previous")
    version.seal(secrets_made)
    return version


def connect(secrets_made):
    return psycopg.connect(secret_value(secrets_made, "DATABASE_URL"), autocommit=True)


def test_old_and_new_logins_work_together_and_reach_the_same_data(cluster, pg_resource, caplog):
    caplog.set_level(logging.DEBUG)
    provider = PostgresRoleProvider()
    old = provider.create(resource=pg_resource, rotation_id=101)
    table = sql.Identifier(cluster.schema, "orders")
    with connect(old) as conn:
        user, session_user = conn.execute("SELECT current_user, session_user").fetchone()
        assert (user, session_user) == (cluster.owner, login_name(cluster.owner, 101))
        conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(table))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(table))

    new = provider.create(resource=pg_resource, rotation_id=102)
    with connect(new) as new_conn, connect(old) as old_conn:
        new_conn.execute(sql.SQL("INSERT INTO {} VALUES (2)").format(table))
        for conn in (new_conn, old_conn):
            rows = conn.execute(sql.SQL("SELECT id FROM {} ORDER BY id").format(table)).fetchall()
            assert rows == [(1,), (2,)]
    with cluster.superuser() as conn:
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = 'orders'",
            [cluster.schema],
        ).fetchone()
    assert owner == (cluster.owner,)
    for made in (old, new):
        can_login, verifier, config = cluster.role(secret_value(made, "PGUSER"))
        assert can_login and config == [f"role={cluster.owner}"]
        assert scram_login_succeeds(verifier, secret_value(made, "PGPASSWORD"))
        assert not scram_login_succeeds(verifier, "not-the-password")
    # The password is nowhere but in the returned secrets: not in a log line, and PostgreSQL
    # holds only the verifier.
    for made in (old, new):
        password = secret_value(made, "PGPASSWORD")
        assert password not in caplog.text
        assert password not in cluster.role(secret_value(made, "PGUSER"))[1]


def test_expiry_ends_the_old_logins_sessions_and_drops_it(cluster, pg_resource):
    provider = PostgresRoleProvider()
    old = provider.create(resource=pg_resource, rotation_id=201)
    new = provider.create(resource=pg_resource, rotation_id=202)
    session = connect(old)
    assert session.execute("SELECT 1").fetchone() == (1,)

    provider.expire(resource=pg_resource, version=version_of(pg_resource, 201, old))

    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")  # its session was terminated
    session.close()
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        connect(old)
    assert cluster.role(secret_value(old, "PGUSER")) is None
    assert cluster.logins() == [secret_value(new, "PGUSER")]
    with connect(new) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (cluster.owner,)
    # Idempotent: a retry after a crash expires nothing more and does not fail.
    provider.expire(resource=pg_resource, version=version_of(pg_resource, 201, old))
    assert cluster.logins() == [secret_value(new, "PGUSER")]


def test_ten_rotations_keep_data_and_ownership_and_at_most_two_logins(cluster, pg_resource):
    provider = PostgresRoleProvider()
    table = sql.Identifier(cluster.schema, "events")
    made: dict[int, list[dict]] = {}
    for rotation_id in range(1, 11):
        made[rotation_id] = provider.create(resource=pg_resource, rotation_id=rotation_id)
        if rotation_id - 2 in made:  # the new one is current, the one before previous
            gone = rotation_id - 2
            provider.expire(resource=pg_resource, version=version_of(pg_resource, gone, made[gone]))
        with connect(made[rotation_id]) as conn:
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (n int)").format(table))
            conn.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(table), [rotation_id])
        assert len(cluster.logins()) <= 2

    assert cluster.logins() == sorted(login_name(cluster.owner, n) for n in (9, 10))
    with connect(made[10]) as conn:
        rows = conn.execute(sql.SQL("SELECT n FROM {} ORDER BY n").format(table)).fetchall()
    assert rows == [(n,) for n in range(1, 11)]
    with cluster.superuser() as conn:
        owners = conn.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = %s", [cluster.schema]
        ).fetchall()
    assert owners == [(cluster.owner,)]


def test_a_crash_between_create_and_record_then_a_retry_makes_no_second_login(
    cluster, pg_resource, root, settings
):
    settings.ROTATION_PROVIDERS = {PRODUCT: "tests.provider_doubles.DiesAfterCreatingLoginProvider"}
    rotation = services.rotation_request(
        resource_ids=[pg_resource.pk], actor=root, reason="policy"
    ).rotations.get()
    with pytest.raises(WorkerDied):
        services.rotation_prepare(rotation_id=rotation.pk)
    assert cluster.logins() == [login_name(cluster.owner, rotation.pk)]
    assert not CredentialVersion.objects.exists()

    # The lease of the dead worker ran out; the sweeper's retry prepares again.
    Rotation.objects.filter(pk=rotation.pk).update(next_attempt_at=None)
    state = services.rotation_prepare(rotation_id=rotation.pk)
    assert state == "preparing", Rotation.objects.get(pk=rotation.pk).last_error

    assert DiesAfterCreatingLoginProvider.died == [rotation.pk]
    assert cluster.logins() == [login_name(cluster.owner, rotation.pk)]
    pending = CredentialVersion.objects.get(resource=pg_resource, stage="pending").secrets()
    assert secret_value(pending, "PGUSER") == login_name(cluster.owner, rotation.pk)
    _, verifier, _ = cluster.role(login_name(cluster.owner, rotation.pk))
    assert scram_login_succeeds(verifier, secret_value(pending, "PGPASSWORD"))


def test_errors_name_the_role_never_a_value(cluster, pg_resource):
    pg_resource.metadata = {"role": f"{cluster.ns}_missing", "database": DATABASE}
    with pytest.raises(CredentialProviderError, match=f"group role '{cluster.ns}_missing'"):
        PostgresRoleProvider().create(resource=pg_resource, rotation_id=1)
    assert cluster.logins() == []
    assert Resource.objects.count() == 1


def test_the_pipeline_pushes_a_working_login_and_an_emergency_rotation_retires_the_old(
    cluster, pg_resource, root, fake_vercel, q_sync, django_capture_on_commit_callbacks
):
    from tests.services.batch_runs import run_batch

    fake_vercel.load_from_database()
    logins = []
    for emergency in (False, True):
        with django_capture_on_commit_callbacks(execute=True):
            batch = services.rotation_request(
                resource_ids=[pg_resource.pk], actor=root, reason="rotate", emergency=emergency
            )
        with django_capture_on_commit_callbacks(execute=True):
            run_batch(batch)
        rotation = batch.rotations.get()
        pushed = fake_vercel.secrets_of("icfg_pg", pg_resource.vercel_id)
        logins.append(login_name(cluster.owner, rotation.pk))
        assert secret_value(pushed, "PGUSER") == logins[-1]
        with connect(pushed) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (cluster.owner,)
        if not emergency:
            Rotation.objects.filter(pk=rotation.pk).update(state=Rotation.State.COMPLETED)

    # The emergency rotation expired the first login at once: only the new one is left.
    assert cluster.logins() == [logins[1]]
    expired = CredentialVersion.objects.get(resource=pg_resource, stage="expired")
    assert expired.rotation_id != rotation.pk and expired.secrets_encrypted == b""


def test_the_scram_verifier_is_the_one_postgresql_computes_itself(cluster):
    """PostgreSQL hashes a plaintext password (test-only role); ours, with its salt and
    iteration count, must be byte for byte the same."""
    import base64

    from rotation.providers.scram import scram_sha256_verifier

    probe = f"{cluster.ns}_probe"
    with cluster.superuser() as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(
            sql.SQL("CREATE ROLE {} PASSWORD {}").format(
                sql.Identifier(probe), sql.Literal("probe-Password-42")
            )
        )
    _, theirs, _ = cluster.role(probe)
    iterations, salt = theirs.split("$")[1].split(":")
    ours = scram_sha256_verifier(
        "probe-Password-42", salt=base64.b64decode(salt), iterations=int(iterations)
    )
    assert ours == theirs


def test_connection_failures_never_show_the_admin_password(settings, pg_resource):
    settings.POSTGRES_PROVIDER_ADMIN_URL = "postgresql://rotator:s3cret-admin-pw@127.0.0.1:9/x"
    with pytest.raises(CredentialProviderError) as failed:
        PostgresRoleProvider().create(resource=pg_resource, rotation_id=1)
    assert "s3cret-admin-pw" not in str(failed.value)


def test_objects_a_login_owns_after_reset_role_go_to_the_group_on_expiry(cluster, pg_resource):
    provider = PostgresRoleProvider()
    old = provider.create(resource=pg_resource, rotation_id=301)
    with connect(old) as conn:
        conn.execute("RESET ROLE")  # a customer's session stepping out of the group role
        conn.execute(
            sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(cluster.schema, "own"))
        )
    provider.expire(resource=pg_resource, version=version_of(pg_resource, 301, old))
    assert cluster.logins() == []
    with cluster.superuser() as conn:
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = 'own'",
            [cluster.schema],
        ).fetchone()
    assert owner == (cluster.owner,)
