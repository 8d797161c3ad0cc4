"""Vercel's rotation requests as a service: idempotency, conflicts, races, the pipeline."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from rotation.audit import AuditAction, VercelActor
from rotation.models import (
    AuditEvent,
    PartnerApiIdempotencyKey,
    Resource,
    Rotation,
    RotationBatch,
)
from rotation.services.vercel_request import (
    VercelRequestRefused,
    idempotency_keys_prune,
    rotation_request_from_vercel,
)
from tests.conftest import run_at_once
from tests.redeploy_builders import tick

ADMIN = VercelActor(
    sub="account:abc1:user:def2",
    account_id="abc1",
    installation_id="icfg_test1",
    user_id="def2",
    user_role="ADMIN",
    user_email="owner@customer.example",
)


def ask(resource: Resource, **options):
    return rotation_request_from_vercel(
        installation_id=resource.installation.vercel_id,
        resource_id=resource.vercel_id,
        actor=ADMIN,
        **options,
    )


def test_it_records_a_batch_of_one_from_vercel_and_enqueues_it(
    resource, django_capture_on_commit_callbacks
):
    from django_q.models import OrmQ

    with django_capture_on_commit_callbacks(execute=True):
        answer = ask(resource, reason="incident", delay_hours=2)
    assert (answer.status, answer.body) == (202, {"sync": False})
    rotation = Rotation.objects.get()
    assert rotation.batch.source == RotationBatch.Source.VERCEL
    assert rotation.expire_old_after_push == timedelta(hours=2)
    assert rotation.state == Rotation.State.REQUESTED
    event = AuditEvent.objects.get(action=AuditAction.ROTATION_REQUESTED)
    assert event.details["old_secrets_delay_hours"] == 2
    assert event.details["vercel_actor"]["user_email"] == "owner@customer.example"
    assert [task.task["args"] for task in OrmQ.objects.all()] == [([rotation.pk],)]


def test_it_gives_the_same_answer_to_the_same_key_without_a_second_rotation(resource):
    first = ask(resource, reason="r", idempotency_key="key-1")
    again = ask(resource, reason="r", idempotency_key="key-1")
    assert first == again
    assert Rotation.objects.count() == 1
    replay = AuditEvent.objects.get(action=AuditAction.ROTATION_REQUEST_REPLAYED)
    assert replay.rotation_ref == Rotation.objects.get().pk
    assert replay.details["idempotency_key"] == "key-1"


def test_it_replays_a_key_even_after_the_rotation_completed(resource):
    ask(resource, idempotency_key="key-1")
    Rotation.objects.update(state=Rotation.State.COMPLETED)
    assert ask(resource, idempotency_key="key-1").status == 202
    assert Rotation.objects.count() == 1


def test_it_refuses_the_same_key_with_a_different_request(resource):
    ask(resource, reason="r", idempotency_key="key-1")
    Rotation.objects.update(state=Rotation.State.COMPLETED)
    with pytest.raises(VercelRequestRefused) as refused:
        ask(resource, reason="another reason", idempotency_key="key-1")
    assert refused.value.status == 409
    assert "different request" in refused.value.message
    assert Rotation.objects.count() == 1
    event = AuditEvent.objects.get(action=AuditAction.ROTATION_REQUEST_DENIED)
    assert event.actor_type == AuditEvent.ActorType.VERCEL
    assert event.outcome == "failure"


def test_it_refuses_the_same_key_for_another_resource(installation):
    first = installation.resources.get()
    second = Resource.objects.create(
        installation=installation, vercel_id="res_b", product="postgres", name="b"
    )
    ask(first, idempotency_key="key-1")
    with pytest.raises(VercelRequestRefused) as refused:
        ask(second, idempotency_key="key-1")
    assert refused.value.status == 409


def test_it_refuses_a_resource_with_an_open_rotation_without_a_key(resource):
    ask(resource)
    with pytest.raises(VercelRequestRefused) as refused:
        ask(resource, reason="again")
    assert refused.value.status == 409
    assert refused.value.code == "conflict"
    assert "already under way (requested)" in refused.value.message
    assert Rotation.objects.count() == 1


def test_it_refuses_an_unknown_resource_with_404(installation):
    with pytest.raises(VercelRequestRefused) as refused:
        rotation_request_from_vercel(
            installation_id=installation.vercel_id, resource_id="res_nope", actor=ADMIN
        )
    assert refused.value.status == 404
    event = AuditEvent.objects.get(action=AuditAction.ROTATION_REQUEST_DENIED)
    assert event.resource_ref == "res_nope"


def test_it_refuses_a_removed_resource_with_409(resource):
    Resource.objects.filter(pk=resource.pk).update(status=Resource.Status.REMOVED)
    with pytest.raises(VercelRequestRefused) as refused:
        ask(resource)
    assert refused.value.status == 409
    assert "removed" in refused.value.message


def test_it_keeps_keys_a_day_and_the_redeploy_tick_prunes_them_later(resource):
    now = timezone.now()
    with time_machine.travel(now - timedelta(hours=49), tick=False):
        ask(resource, idempotency_key="old")
    Rotation.objects.update(state=Rotation.State.COMPLETED)
    with time_machine.travel(now - timedelta(hours=25), tick=False):
        ask(resource, idempotency_key="day-old")
    assert tick()["idempotency_keys_pruned"] == 1
    assert list(PartnerApiIdempotencyKey.objects.values_list("key", flat=True)) == ["day-old"]
    assert idempotency_keys_prune() == 0


def _race(resource: Resource, key: str) -> list:
    """Two identical requests at the same moment, on two connections."""
    outcomes: list = []

    def one() -> None:
        try:
            outcomes.append(ask(resource, reason="same", idempotency_key=key).status)
        except VercelRequestRefused as exc:
            outcomes.append(exc.status)

    run_at_once(2, one)
    return sorted(outcomes)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("key", "answers"), [("", [202, 409]), ("race-key", [202, 202])], ids=["no-key", "same-key"]
)
def test_it_makes_one_rotation_from_two_identical_requests_at_once(installation, key, answers):
    resource = installation.resources.get()
    assert _race(resource, key) == answers
    assert Rotation.objects.count() == 1
    assert PartnerApiIdempotencyKey.objects.count() == (1 if key else 0)
