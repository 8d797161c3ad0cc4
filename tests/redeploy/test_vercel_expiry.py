"""Vercel-requested rotations: the old credentials expire `delayOldSecretsExpirationHours`
after the push (Vercel redeploys the projects itself), not on deployment webhooks."""

from __future__ import annotations

from datetime import timedelta

import time_machine
from django.db import transaction
from django_q.models import OrmQ

from rotation.audit import AuditAction, VercelActor
from rotation.models import AuditEvent, CredentialVersion, Rotation, RotationBatch
from rotation.redeploy import rotations_redeploy_begin
from rotation.redeploy.expiry import EXPIRE_TASK
from rotation.services.vercel_request import rotation_request_from_vercel
from tests.redeploy_builders import (
    NEW_SECRETS,
    OLD_SECRETS,
    PUSH,
    connect,
    make_version,
    run_queued,
    tick,
    versions_by_stage,
)
from tests.services.batch_runs import run_batch

SYSTEM = VercelActor(sub="account:ab12", account_id="ab12", installation_id="icfg_test1")


def pushed_for_vercel(resource, *, delay: timedelta) -> Rotation:
    """What the push leaves behind for a rotation Vercel asked for."""
    with time_machine.travel(PUSH, tick=False), transaction.atomic():
        batch = RotationBatch.objects.create(reason="vercel", source=RotationBatch.Source.VERCEL)
        rotation = Rotation.objects.create(
            batch=batch,
            resource=resource,
            state=Rotation.State.AWAITING_REDEPLOY,
            state_changed_at=PUSH,
            pushed_at=PUSH,
            expire_old_after_push=delay,
        )
        make_version(resource, CredentialVersion.Stage.PREVIOUS, OLD_SECRETS)
        make_version(resource, CredentialVersion.Stage.CURRENT, NEW_SECRETS, rotation=rotation)
        plans = rotations_redeploy_begin(rotations=[rotation])
    rotation.refresh_from_db()
    rotation.plan = plans[0]
    return rotation


def test_it_keeps_the_old_credentials_for_vercels_delay_and_plans_no_reminders(policy, resource):
    connect(resource, "prj_a", at=PUSH - timedelta(days=3))
    rotation = pushed_for_vercel(resource, delay=timedelta(hours=36))
    assert rotation.keep_old_until == PUSH + timedelta(hours=36)
    assert rotation.redeploy_deadline_at == rotation.keep_old_until
    assert not rotation.reminders.exists()
    assert rotation.plan["keep_old_until"] == rotation.keep_old_until.isoformat()
    assert rotation.plan["reminders"] == []


def test_the_tick_expires_them_at_keep_old_until_without_any_redeploy(policy, provider, resource):
    connect(resource, "prj_a", "prj_b", at=PUSH - timedelta(days=3))
    rotation = pushed_for_vercel(resource, delay=timedelta(hours=36))
    old = versions_by_stage(resource)["previous"]

    with time_machine.travel(PUSH + timedelta(hours=35, minutes=59), tick=False):
        assert tick()["expired"] == 0
    with time_machine.travel(PUSH + timedelta(hours=36), tick=False):
        assert tick()["expired"] == 1
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.COMPLETED
    assert rotation.redeployed_at is None  # nobody redeployed; Vercel's delay was enough
    assert provider.expired_version_ids() == [str(old.pk)]
    event = AuditEvent.objects.get(action=AuditAction.OLD_CREDENTIALS_EXPIRED)
    assert event.details["keep_old_until"] == rotation.keep_old_until.isoformat()
    assert not AuditEvent.objects.filter(action=AuditAction.ROTATION_ESCALATED).exists()


def test_a_long_delay_is_not_escalated_at_the_usual_deadline(policy, provider, resource):
    connect(resource, "prj_a", at=PUSH - timedelta(days=3))
    rotation = pushed_for_vercel(resource, delay=timedelta(hours=700))
    with time_machine.travel(PUSH + timedelta(days=20), tick=False):
        done = tick()
        assert (done["escalated"], done["expired"], done["reminders_sent"]) == (0, 0, 0)
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.AWAITING_REDEPLOY


def test_a_delay_of_zero_expires_them_right_after_the_push(
    policy, provider, resource, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        rotation = pushed_for_vercel(resource, delay=timedelta(0))
    assert [entry.task["args"] for entry in OrmQ.objects.all()] == [(rotation.pk,)]
    with time_machine.travel(PUSH + timedelta(seconds=5), tick=False):
        assert run_queued(EXPIRE_TASK) == [True]
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.COMPLETED


def test_the_pipeline_records_keep_old_until_in_the_push_event(
    policy, fake_vercel, resource, django_capture_on_commit_callbacks
):
    fake_vercel.load_from_database()
    with django_capture_on_commit_callbacks(execute=False):
        rotation_request_from_vercel(
            installation_id=resource.installation.vercel_id,
            resource_id=resource.vercel_id,
            actor=SYSTEM,
            delay_hours=1.5,
        )
    rotation = Rotation.objects.get()
    run_batch(rotation.batch)
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.AWAITING_REDEPLOY
    assert rotation.keep_old_until == rotation.pushed_at + timedelta(hours=1.5)
    pushed = AuditEvent.objects.get(action=AuditAction.ROTATION_PUSHED)
    assert pushed.details["redeploy"]["keep_old_until"] == rotation.keep_old_until.isoformat()
    assert pushed.actor_type == AuditEvent.ActorType.SYSTEM
    assert fake_vercel.secrets_of(resource.installation.vercel_id, resource.vercel_id)
