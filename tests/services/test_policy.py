"""Rotation policies: the daily run requests exactly the overdue resources, once, capped."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from rotation import services
from rotation.models import (
    AuditAction,
    AuditEvent,
    Resource,
    Rotation,
    RotationBatch,
    RotationPolicy,
)
from rotation.services.policy import resources_with_credential_age, rotations_request_overdue
from tests.conftest import make_installation

NOW = timezone.now()


def aged(resource, days):
    Resource.objects.filter(pk=resource.pk).update(created_at=NOW - timedelta(days=days))


@pytest.fixture
def fleet(db, settings, alice):
    """pg (default policy, 90 days) and kv (its own policy, 30 days) resources of every kind."""
    settings.ROTATION_MAX_AGE_DAYS = 90
    settings.ROTATION_POLICY_MAX_PER_RUN = 3
    RotationPolicy.objects.create(product="kv", max_age_days=30)
    pg = list(make_installation("icfg_pg", resources=6, product="pg").resources.order_by("pk"))
    kv = list(make_installation("icfg_kv", resources=3, product="kv").resources.order_by("pk"))
    for resource, days in zip(pg, [400, 300, 200, 100, 10, 95], strict=True):
        aged(resource, days)
    for resource, days in zip(kv, [45, 20, 31], strict=True):
        aged(resource, days)
    # pg[0]: imported long ago, but its last push was five days ago.
    pushed = services.rotation_request(resource_ids=[pg[0].pk], actor=alice, reason="earlier")
    pushed.rotations.update(
        state=Rotation.State.COMPLETED, pushed_at=NOW - timedelta(days=5), completed_at=NOW
    )
    # pg[5]: overdue but a rotation is open already.
    services.rotation_request(resource_ids=[pg[5].pk], actor=alice, reason="open")
    # kv[2] overdue but removed: nothing to rotate.
    Resource.objects.filter(pk=kv[2].pk).update(status=Resource.Status.REMOVED)
    return {"pg": pg, "kv": kv}


def policy_rotated():
    return list(
        Rotation.objects.filter(batch__source=RotationBatch.Source.POLICY)
        .order_by("pk")
        .values_list("resource_id", flat=True)
    )


def test_a_run_requests_exactly_the_overdue_resources_once_within_the_cap(fleet):
    pg, kv = fleet["pg"], fleet["kv"]
    overdue = [pg[1], pg[2], pg[3], kv[0]]  # oldest first: 300, 200, 100 days; kv 45 > 30

    first = rotations_request_overdue(now=NOW)
    assert (first.overdue, first.requested) == (4, [pg[1].pk, pg[2].pk, pg[3].pk])
    second = rotations_request_overdue(now=NOW)
    assert (second.overdue, second.requested) == (1, [kv[0].pk])
    third = rotations_request_overdue(now=NOW)
    assert (third.overdue, third.requested, third.batches) == (0, [], [])

    assert sorted(policy_rotated()) == sorted(r.pk for r in overdue)  # each once
    batches = RotationBatch.objects.filter(source=RotationBatch.Source.POLICY).order_by("pk")
    assert [b.reason for b in batches] == [
        "Credentials older than 90 days under the default rotation policy (ROTATION_MAX_AGE_DAYS).",
        "Credentials older than 30 days under the rotation policy of product 'kv'.",
    ]
    assert {(b.requested_by, b.requested_by_username) for b in batches} == {(None, "system")}
    requested = AuditEvent.objects.filter(
        action=AuditAction.ROTATION_REQUESTED, batch_ref__in=[b.pk for b in batches]
    )
    assert {event.actor_type for event in requested} == {AuditEvent.ActorType.SYSTEM}


def test_a_policy_of_zero_days_and_a_product_filter_request_nothing_else(fleet, settings):
    RotationPolicy.objects.filter(product="kv").update(max_age_days=0)
    run = rotations_request_overdue(product="kv", now=NOW)
    assert (run.overdue, run.requested) == (0, [])
    settings.ROTATION_MAX_AGE_DAYS = 0
    assert rotations_request_overdue(now=NOW).requested == []
    assert policy_rotated() == []


def test_age_counts_from_the_last_push_else_from_import(fleet):
    pg = fleet["pg"]
    ages = {r.pk: r for r in resources_with_credential_age().filter(pk__in=[pg[0].pk, pg[1].pk])}
    assert ages[pg[0].pk].credentials_since == ages[pg[0].pk].last_push_at
    assert NOW - ages[pg[0].pk].credentials_since == timedelta(days=5)
    assert ages[pg[1].pk].last_push_at is None
    assert NOW - ages[pg[1].pk].credentials_since == timedelta(days=300)


def test_the_command_dry_run_requests_nothing_and_lists_what_it_would(fleet, capsys):
    call_command("rotate_overdue", "--dry-run", "--product", "pg")
    err = capsys.readouterr().err
    assert "would request icfg_pg_res1" in err and "3 overdue; would request 3" in err
    assert policy_rotated() == []
    call_command("rotate_overdue", "--product", "kv")
    out, err = capsys.readouterr()
    assert policy_rotated() == [fleet["kv"][0].pk]
    assert out.strip() == str(RotationBatch.objects.get(source="policy").pk)


def test_the_schedule_runs_the_policy_daily(db):
    from django_q.models import Schedule

    from rotation.tasks_policy import POLICY_SCHEDULE_NAME

    schedule = Schedule.objects.get(name=POLICY_SCHEDULE_NAME)
    assert (schedule.func, schedule.schedule_type) == (
        "rotation.tasks_policy.rotations_request_overdue_task",
        Schedule.DAILY,
    )


def test_only_the_policy_source_may_request_without_a_person(fleet):
    with pytest.raises(services.RotationRefused):
        services.rotation_request(
            resource_ids=[fleet["pg"][1].pk], actor=None, reason="x", source="admin"
        )
    with pytest.raises(services.RotationRefused):
        services.rotation_request(
            resource_ids=[fleet["pg"][1].pk],
            actor=None,
            reason="x",
            source=RotationBatch.Source.POLICY,
            emergency=True,
        )
    assert policy_rotated() == []
