"""The warning in the customer's Vercel dashboard: set after a push, cleared at the end,
retried when Vercel fails, never blocking the rotation, audited."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.models import OrmQ

from rotation import services
from rotation.models import AuditEvent, NotificationPace, PushPace, Resource, Rotation
from rotation.redeploy import notification
from rotation.redeploy.notification import (
    notification_fields,
    notifications_request,
    notifications_requeue,
    notifications_set_after_commit,
    rotation_notification_sync,
    rotations_notification_sync,
)
from rotation.services.pace import NOTIFICATION_PACER
from rotation.tasks_redeploy import rotation_expire_old_task
from tests.conftest import make_installation
from tests.redeploy_builders import make_pushed_rotation, run_queued, run_rollback
from tests.services.batch_runs import run_batch

TASK = "rotation.tasks_marketplace.rotation_notifications"
Notification = Rotation.Notification


def on_vercel(market, resource):
    return market.resource_on_vercel(resource.installation.vercel_id, resource.vercel_id)


def test_a_push_sets_the_warning_naming_the_variables(
    market, alice, resource, settings, django_capture_on_commit_callbacks
):
    settings.VERCEL_NOTIFICATION_HREF = "https://partner.example/rotation/{resource_id}"
    with django_capture_on_commit_callbacks(execute=True):
        batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
        run_batch(batch)
    rotation = batch.rotations.get()
    assert rotation.state == Rotation.State.AWAITING_REDEPLOY
    assert rotation.notification_state == Notification.SETTING
    assert run_queued(TASK) == [[Notification.SET]]
    note = on_vercel(market, resource).notification
    assert note["level"] == "warn"
    assert note["title"] == settings.VERCEL_NOTIFICATION_TITLE
    assert "DATABASE_URL, PGPASSWORD" in note["message"]
    assert note["href"] == f"https://partner.example/rotation/{resource.vercel_id}"
    patch = market.requests[-1]
    assert patch.method == "PATCH" and set(patch.body) == {"notification"}
    event = AuditEvent.objects.get(action="rotation.notification_set")
    assert event.rotation_ref == rotation.pk
    assert event.details["level"] == "warn"


def pushed_with_warning(market, resource) -> Rotation:
    rotation = make_pushed_rotation(resource)
    notifications_request([rotation.pk], wanted="set")
    assert rotation_notification_sync(rotation_id=rotation.pk) == Notification.SET
    assert on_vercel(market, resource).notification is not None
    return rotation


def test_completion_clears_the_warning(
    market, resource, policy, django_capture_on_commit_callbacks
):
    rotation = pushed_with_warning(market, resource)
    Rotation.objects.filter(pk=rotation.pk).update(emergency=True)
    with django_capture_on_commit_callbacks(execute=True):
        assert rotation_expire_old_task(rotation.pk) is True
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.COMPLETED
    assert rotation.notification_state == Notification.CLEARING
    assert run_queued(TASK) == [[Notification.CLEARED]]
    assert on_vercel(market, resource).notification is None
    assert market.requests[-1].body == {"notification": None}
    assert AuditEvent.objects.filter(action="rotation.notification_cleared").count() == 1


def test_a_rollback_clears_the_warning(market, resource, lead, django_capture_on_commit_callbacks):
    rotation = pushed_with_warning(market, resource)
    with django_capture_on_commit_callbacks(execute=True):
        services.rotation_rollback(rotation=rotation, actor=lead, reason="bad values")
        run_rollback(rotation)
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.ROLLED_BACK
    assert run_queued(TASK) == [[Notification.CLEARED]]
    assert on_vercel(market, resource).notification is None


def test_a_rotation_cancelled_before_its_push_queues_nothing(
    market, alice, resource, django_capture_on_commit_callbacks
):
    batch = services.rotation_request(resource_ids=[resource.pk], actor=alice, reason="x")
    with django_capture_on_commit_callbacks(execute=True):
        services.rotation_cancel(rotation=batch.rotations.get(), actor=alice)
    assert run_queued(TASK) == []
    assert market.requests == []


def test_a_transient_failure_is_retried_by_the_sweeper(
    market, resource, settings, django_capture_on_commit_callbacks
):
    settings.ROTATION_PUSH_BACKOFF_BASE = 0.01
    rotation = make_pushed_rotation(resource)
    notifications_request([rotation.pk], wanted="set")
    market.respond_next(503)
    assert rotation_notification_sync(rotation_id=rotation.pk) == Notification.SETTING
    rotation.refresh_from_db()
    assert rotation.notification_attempts == 1
    assert "503" in rotation.notification_error
    assert rotation.state == Rotation.State.AWAITING_REDEPLOY  # the rotation goes on
    with django_capture_on_commit_callbacks(execute=True):
        assert notifications_requeue(now=timezone.now() + timedelta(minutes=2)) == [rotation.pk]
    assert run_queued(TASK) == [[Notification.SET]]
    failed = AuditEvent.objects.get(action="rotation.notification_failed")
    assert failed.outcome == "failure"
    assert failed.details["stopped"] is False


def test_a_permanent_failure_stops_and_shows_why(market, resource):
    rotation = make_pushed_rotation(resource)
    notifications_request([rotation.pk], wanted="set")
    market.respond_next(404, {"error": {"code": "not_found", "message": "Resource not found"}})
    assert rotation_notification_sync(rotation_id=rotation.pk) == Notification.FAILED
    rotation.refresh_from_db()
    assert "Resource not found" in rotation.notification_error
    assert rotation.notification_next_attempt_at is None
    assert notifications_requeue(now=timezone.now() + timedelta(days=1)) == []
    assert rotation.state == Rotation.State.AWAITING_REDEPLOY


@pytest.mark.parametrize("template", ["{secret_value}", "{resource.__class__}", "{0}"])
def test_a_template_with_an_unknown_placeholder_fails_without_calling_vercel(
    market, resource, settings, template
):
    settings.VERCEL_NOTIFICATION_MESSAGE = f"see {template}"
    rotation = make_pushed_rotation(resource)
    notifications_request([rotation.pk], wanted="set")
    assert rotation_notification_sync(rotation_id=rotation.pk) == Notification.FAILED
    rotation.refresh_from_db()
    assert "VERCEL_NOTIFICATION_MESSAGE" in rotation.notification_error
    assert market.requests == []


def test_a_clear_asked_while_the_set_waits_wins(market, resource):
    rotation = make_pushed_rotation(resource)
    notifications_request([rotation.pk], wanted="set")
    notifications_request([rotation.pk], wanted="clear")
    assert rotation_notification_sync(rotation_id=rotation.pk) == Notification.CLEARED
    assert [r.body for r in market.requests] == [{"notification": None}]


def test_a_batch_queues_one_task_per_group_and_patches_each_resource_once(
    fake_vercel, alice, settings, django_capture_on_commit_callbacks
):
    installation = make_installation("icfg_group", resources=3)
    fake_vercel.load_from_database()
    ids = list(installation.resources.values_list("pk", flat=True))
    with django_capture_on_commit_callbacks(execute=True):
        batch = services.rotation_request(resource_ids=ids, actor=alice, reason="x")
        run_batch(batch)
    rotation_ids = sorted(batch.rotations.values_list("pk", flat=True))
    queued = [entry.task for entry in OrmQ.objects.all() if entry.task["func"] == TASK]
    assert [task["args"] for task in queued] == [(rotation_ids,)]
    assert run_queued(TASK) == [[Notification.SET] * 3]
    patches = [r.path for r in fake_vercel.requests if r.method == "PATCH"]
    assert sorted(patches) == sorted(
        f"/v1/installations/icfg_group/resources/{resource.vercel_id}"
        for resource in installation.resources.all()
    )
    events = AuditEvent.objects.filter(action="rotation.notification_set")
    assert sorted(events.values_list("rotation_ref", flat=True)) == rotation_ids
    assert {event.details["attempts"] for event in events} == {1}


def test_a_group_task_run_twice_sends_and_records_once(market, resource):
    rotation = make_pushed_rotation(resource)
    notifications_request([rotation.pk], wanted="set")
    assert rotations_notification_sync(rotation_ids=[rotation.pk]) == {
        rotation.pk: Notification.SET
    }
    assert rotations_notification_sync(rotation_ids=[rotation.pk]) == {
        rotation.pk: Notification.SET
    }
    assert len(market.requests) == 1
    assert AuditEvent.objects.filter(action="rotation.notification_set").count() == 1


def test_one_failure_in_a_group_leaves_the_others_set(market, resource, installation):
    unknown = Resource.objects.create(
        installation=installation, vercel_id="res_not_on_vercel", product="postgres", name="x"
    )
    known, gone = make_pushed_rotation(resource), make_pushed_rotation(unknown)
    notifications_request([known.pk, gone.pk], wanted="set")
    states = rotations_notification_sync(rotation_ids=[known.pk, gone.pk])
    assert states == {known.pk: Notification.SET, gone.pk: Notification.FAILED}
    gone.refresh_from_db()
    assert "404" in gone.notification_error or "not found" in gone.notification_error.lower()
    assert on_vercel(market, resource).notification is not None
    failed = AuditEvent.objects.get(action="rotation.notification_failed")
    assert failed.rotation_ref == gone.pk


def test_a_task_queued_before_groups_existed_still_runs(market, resource):
    rotation = make_pushed_rotation(resource)
    notifications_request([rotation.pk], wanted="set")
    single = import_string("rotation.tasks_marketplace.rotation_notification")
    assert single(rotation.pk) == Notification.SET
    assert on_vercel(market, resource).notification is not None


@pytest.mark.django_db(transaction=True)
def test_queueing_the_tasks_keeps_the_workers_database_connection(resource, monkeypatch):
    # The ORM broker closes an obsolete connection (CONN_MAX_AGE) before each task it queues
    # outside a transaction; the pushing worker's next query would reconnect (on SQLite
    # re-reading the schema, with a cold page cache).
    rotation = make_pushed_rotation(resource)
    closed: list[bool] = []
    monkeypatch.setattr(connection, "close_at", 0.0)  # obsolete, as with CONN_MAX_AGE=0
    monkeypatch.setattr(connection, "close", lambda: closed.append(True))
    with transaction.atomic():
        Rotation.objects.filter(pk=rotation.pk).update(**notification_fields("set"))
        notifications_set_after_commit([rotation.pk])
    assert closed == []
    queued = [entry.task for entry in OrmQ.objects.all() if entry.task["func"] == TASK]
    assert [task["args"] for task in queued] == [([rotation.pk],)]


def test_a_429_pauses_the_installations_notifications_but_not_its_pushes(
    market, resource, installation
):
    other = Resource.objects.create(
        installation=installation, vercel_id="res_other", product="postgres", name="other"
    )
    market.load_from_database()
    first, second = make_pushed_rotation(resource), make_pushed_rotation(other)
    notifications_request([first.pk, second.pk], wanted="set")
    market.respond_next(
        429,
        {"error": {"code": "rate_limited", "message": "Rate limit exceeded"}},
        headers={"Retry-After": "30"},
    )
    assert rotation_notification_sync(rotation_id=first.pk) == Notification.SETTING
    pause = NotificationPace.objects.get(pk=installation.pk).paused_until
    assert 29 <= (pause - timezone.now()).total_seconds() <= 34
    assert not PushPace.objects.exists()
    sent = len(market.requests)
    # Another task (here the same process, which re-reads the pace after its own 429) waits.
    assert rotation_notification_sync(rotation_id=second.pk) == Notification.SETTING
    assert len(market.requests) == sent
    second.refresh_from_db()
    assert (second.notification_attempts, second.notification_error) == (0, "")
    assert second.notification_next_attempt_at >= pause - timedelta(seconds=1)
    failed = AuditEvent.objects.filter(action="rotation.notification_failed")
    assert list(failed.values_list("rotation_ref", flat=True)) == [first.pk]
    assert notifications_requeue(now=timezone.now() + timedelta(seconds=10)) == []
    NotificationPace.objects.update(paused_until=timezone.now() - timedelta(seconds=1))
    NOTIFICATION_PACER.forget()
    states = rotations_notification_sync(rotation_ids=[first.pk, second.pk])
    assert states == {first.pk: Notification.SET, second.pk: Notification.SET}


def test_notifications_keep_to_the_rate_vercel_announces(fake_vercel, db):
    installation = make_installation("icfg_paced", resources=24)
    fake_vercel.load_from_database()
    ids = [make_pushed_rotation(r).pk for r in installation.resources.order_by("pk")]
    notifications_request(ids, wanted="set")
    fake_vercel.rate = 10  # PATCHes a second, with Vercel's X-RateLimit-* headers
    states = rotations_notification_sync(rotation_ids=ids)
    patches = [r.status for r in fake_vercel.requests if r.method == "PATCH"]
    assert [status for status in patches if status == 429] == []
    assert states == dict.fromkeys(ids, Notification.SET)
    assert NotificationPace.objects.get(pk=installation.pk).rate_limit == 10


@pytest.mark.django_db(transaction=True)
def test_a_group_patches_from_threads_that_read_the_shared_pace(fake_vercel, monkeypatch):
    if connection.vendor == "sqlite":
        pytest.skip("threads need a database their own connections can open (PostgreSQL)")
    patch, threads = notification._patch, set()

    def patch_noting_the_thread(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return patch(*args, **kwargs)

    monkeypatch.setattr(notification, "_patch", patch_noting_the_thread)
    installation = make_installation("icfg_threads", resources=6)
    fake_vercel.load_from_database()
    ids = [make_pushed_rotation(r).pk for r in installation.resources.order_by("pk")]
    notifications_request(ids, wanted="set")
    NotificationPace.objects.create(
        installation=installation, concurrency=8, paused_until=timezone.now() + timedelta(minutes=1)
    )
    assert rotations_notification_sync(rotation_ids=ids) == dict.fromkeys(ids, Notification.SETTING)
    assert fake_vercel.requests == []
    NotificationPace.objects.update(paused_until=None)
    NOTIFICATION_PACER.forget()
    assert rotations_notification_sync(rotation_ids=ids) == dict.fromkeys(ids, Notification.SET)
    assert len([r for r in fake_vercel.requests if r.method == "PATCH"]) == 6
    assert threads == {"notify"}


@pytest.mark.django_db(transaction=True)
def test_an_error_in_a_patching_thread_fails_the_task_and_records_nothing(fake_vercel, monkeypatch):
    if connection.vendor == "sqlite":
        pytest.skip("threads need a database their own connections can open (PostgreSQL)")
    installation = make_installation("icfg_broken", resources=4)
    fake_vercel.load_from_database()
    ids = [make_pushed_rotation(r).pk for r in installation.resources.order_by("pk")]
    notifications_request(ids, wanted="set")

    def broken(rotation):
        raise RuntimeError("the template engine broke")

    monkeypatch.setattr(notification, "notification_text", broken)
    with pytest.raises(RuntimeError):
        rotations_notification_sync(rotation_ids=ids)
    states = set(Rotation.objects.filter(pk__in=ids).values_list("notification_state", flat=True))
    assert states == {Notification.SETTING}  # left for the task's retry, none marked set
