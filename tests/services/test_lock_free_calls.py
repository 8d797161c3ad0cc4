"""No credential-provider or Vercel call while the database may hold row locks.

These tests run in real transactions (`transaction=True`): `connection.in_atomic_block` is
true exactly while a service is inside `transaction.atomic()`, where its row locks live, and
after-commit work runs when the service commits, as in production. The provider
(`tests.provider_doubles.LockCheckingProvider`) and a spy around the Vercel client note each call
made there.
"""

from __future__ import annotations

import pytest
from django.db import connection

from rotation import services, tasks, vercel
from rotation.models import CredentialVersion, Rotation
from rotation.providers.retirement import RETIRE_TASK
from tests.conftest import make_installation
from tests.provider_doubles import LockCheckingProvider
from tests.redeploy_builders import (
    NEW_SECRETS,
    OLD_SECRETS,
    make_pushed_rotation,
    make_version,
    run_queued,
)

pytestmark = pytest.mark.django_db(transaction=True)
State = Rotation.State


@pytest.fixture
def provider(settings):
    settings.ROTATION_CREDENTIAL_PROVIDER = "tests.provider_doubles.LockCheckingProvider"
    yield LockCheckingProvider


@pytest.fixture
def vercel_puts(monkeypatch) -> list[bool]:
    """Each secrets PUT (still sent over HTTP), as whether a transaction was open then."""
    real = vercel.update_resource_secrets
    seen: list[bool] = []

    def spy(**kwargs):
        seen.append(connection.in_atomic_block)
        return real(**kwargs)

    monkeypatch.setattr(vercel, "update_resource_secrets", spy)
    return seen


@pytest.fixture
def resource(db):
    return make_installation("icfg_locks").resources.get()


def stage_of(version: CredentialVersion) -> str:
    version.refresh_from_db()
    return version.stage


def test_it_prepares_and_retires_a_stale_pending_version_outside_transactions(
    provider, root, resource
):
    stale = make_version(resource, "pending", OLD_SECRETS)  # left by a rotation that ended
    rotation = services.rotation_request(
        resource_ids=[resource.pk], actor=root, reason="x"
    ).rotations.get()

    assert services.rotation_prepare(rotation_id=rotation.pk) == State.PREPARING

    assert provider.calls == [f"expire {stale.pk}", f"create {resource.vercel_id}"]
    assert provider.under_lock == []
    assert stage_of(stale) == "expired"
    pending = CredentialVersion.objects.get(resource=resource, stage="pending")
    assert pending.rotation_id == rotation.pk


def test_it_cancels_outside_transactions(provider, root, resource):
    rotation = services.rotation_request(
        resource_ids=[resource.pk], actor=root, reason="x"
    ).rotations.get()
    services.rotation_prepare(rotation_id=rotation.pk)
    pending = CredentialVersion.objects.get(resource=resource, stage="pending")

    services.rotation_cancel(rotation=rotation, actor=root)
    assert run_queued(RETIRE_TASK) == [1]  # the request only queued the provider call

    assert provider.calls[-1] == f"expire {pending.pk}"
    assert provider.under_lock == []
    assert stage_of(pending) == "expired"


def test_it_cancels_a_batch_outside_transactions(provider, root, db):
    installation = make_installation("icfg_batch_locks", resources=3)
    batch = services.rotation_request(
        resource_ids=list(installation.resources.values_list("pk", flat=True)),
        actor=root,
        reason="x",
    )
    services.rotations_prepare(rotation_ids=list(batch.rotations.values_list("pk", flat=True)))
    pendings = list(CredentialVersion.objects.filter(stage="pending"))
    assert len(pendings) == 3

    assert services.batch_cancel(batch=batch, actor=root) == 3
    assert run_queued(RETIRE_TASK) == [3]  # the request only queued the provider calls

    assert sorted(c for c in provider.calls if c.startswith("expire")) == sorted(
        f"expire {version.pk}" for version in pendings
    )
    assert provider.under_lock == []
    assert set(CredentialVersion.objects.values_list("stage", flat=True)) == {"expired"}


def test_it_pushes_and_retires_the_version_two_generations_old_outside_transactions(
    provider, root, resource, fake_vercel, vercel_puts
):
    fake_vercel.load_from_database()
    oldest = make_version(resource, "previous", OLD_SECRETS)
    current = make_version(resource, "current", NEW_SECRETS)
    rotation = services.rotation_request(
        resource_ids=[resource.pk], actor=root, reason="x"
    ).rotations.get()

    assert tasks.rotations_process([rotation.pk]) == 1

    assert vercel_puts == [False]
    assert provider.calls == [f"create {resource.vercel_id}", f"expire {oldest.pk}"]
    assert provider.under_lock == []
    assert (stage_of(oldest), stage_of(current)) == ("expired", "previous")


def test_it_rolls_back_outside_transactions(provider, root, resource, fake_vercel, vercel_puts):
    fake_vercel.load_from_database()
    fake_vercel.set_secrets(resource.installation.vercel_id, resource.vercel_id, NEW_SECRETS)
    rotation = make_pushed_rotation(resource)
    old = CredentialVersion.objects.get(resource=resource, stage="previous")
    newer = CredentialVersion.objects.get(resource=resource, stage="current")

    services.rotation_rollback(rotation=rotation, actor=root, reason="logins fail")
    assert vercel_puts == []  # the request only queues the task
    assert run_queued("rotation.tasks_redeploy.rotation_rollback_task") == [True]

    assert vercel_puts == [False]
    assert provider.calls == [f"expire {newer.pk}"]
    assert provider.under_lock == []
    assert (stage_of(old), stage_of(newer)) == ("current", "expired")


def test_it_expires_old_credentials_outside_transactions(provider, resource):
    rotation = make_pushed_rotation(resource, emergency=True)  # queues the expiry task
    old = CredentialVersion.objects.get(resource=resource, stage="previous")

    assert run_queued("rotation.tasks_redeploy.rotation_expire_old_task") == [True]

    assert provider.calls == [f"expire {old.pk}"]
    assert provider.under_lock == []
    assert stage_of(old) == "expired"
    rotation.refresh_from_db()
    assert rotation.state == State.COMPLETED
