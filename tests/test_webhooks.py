"""The Vercel webhook endpoint: signatures, size cap, idempotence, and the events it applies."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from rotation.audit import AuditAction
from rotation.models import AuditEvent, ConnectedProject, Installation, Rotation, WebhookEvent
from rotation.redeploy import events
from rotation.redeploy.events import WebhookOutcome, WebhookResult, webhook_event_handle
from rotation.webhooks import sign_webhook
from tests.redeploy_builders import connect, deployment_event, event, make_pushed_rotation

URL = "/webhooks/vercel/"
SECRET = "whsec_test_client_secret"
PUSH = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def webhook_settings(settings):
    settings.VERCEL_CLIENT_SECRET = SECRET
    settings.VERCEL_WEBHOOK_MAX_BYTES = 1_000_000
    settings.ROTATION_REDEPLOY_TARGETS = []
    return settings


@pytest.fixture
def rotation(resource):
    connect(resource, "prj_a", "prj_b", at=PUSH - timedelta(days=5))
    with time_machine.travel(PUSH, tick=False):
        return make_pushed_rotation(resource)


def post(
    client, body: bytes | dict, *, signature: str | None = None, secret: str = SECRET, **extra
):
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    headers = {}
    if signature is None:
        signature = sign_webhook(body, secret)
    if signature:
        headers["HTTP_X_VERCEL_SIGNATURE"] = signature
    return client.post(URL, data=body, content_type="application/json", **headers, **extra)


def statuses(rotation) -> dict[str, str]:
    return dict(rotation.redeploy_checks.values_list("project_id", "status"))


def test_it_accepts_a_signed_deployment_after_the_push(client, resource, rotation):
    body = deployment_event(resource, "prj_a", PUSH + timedelta(hours=2), "evt_1")

    response = post(client, body)

    assert response.status_code == 200
    assert response.json() == {"outcome": "processed"}
    assert statuses(rotation) == {"prj_a": "redeployed", "prj_b": "waiting"}
    check = rotation.redeploy_checks.get(project_id="prj_a")
    assert check.deployment_id == "dpl_evt_1"
    assert check.deployed_at == PUSH + timedelta(hours=2)
    handled = AuditEvent.objects.get(action=AuditAction.WEBHOOK_RECEIVED)
    assert handled.actor_type == AuditEvent.ActorType.VERCEL
    assert handled.details["event"] == "evt_1"
    assert handled.source_ip == "127.0.0.1"
    redeployed = AuditEvent.objects.get(action=AuditAction.PROJECT_REDEPLOYED)
    assert redeployed.rotation_ref == rotation.pk
    assert redeployed.actor_type == AuditEvent.ActorType.VERCEL


def test_it_rejects_a_body_altered_by_one_byte(client, resource, rotation):
    body = json.dumps(deployment_event(resource, "prj_a", PUSH + timedelta(hours=2), "e")).encode()
    signature = sign_webhook(body, SECRET)
    altered = body.replace(b"prj_a", b"prj_b")
    assert sum(a != b for a, b in zip(altered, body, strict=True)) == 1

    response = post(client, altered, signature=signature)

    assert response.status_code == 403
    assert not WebhookEvent.objects.exists()
    assert statuses(rotation) == {"prj_a": "waiting", "prj_b": "waiting"}


@pytest.mark.parametrize("signature", ["", "0" * 40, "not-hex"])
def test_it_rejects_a_missing_or_wrong_signature(client, resource, signature):
    response = post(client, event("deployment.succeeded"), signature=signature)
    assert response.status_code == 403
    assert not WebhookEvent.objects.exists()


def test_it_rejects_a_signature_made_with_another_secret(client, resource):
    response = post(client, event("deployment.succeeded"), secret="someone-else")
    assert response.status_code == 403


def test_it_refuses_everything_while_the_secret_is_unset(client, db, settings):
    settings.VERCEL_CLIENT_SECRET = ""
    body = json.dumps(event("deployment.succeeded")).encode()
    response = post(client, body, signature=sign_webhook(body, ""))
    assert response.status_code == 403
    assert not WebhookEvent.objects.exists()


def test_it_refuses_a_body_over_the_cap(client, db, settings):
    settings.VERCEL_WEBHOOK_MAX_BYTES = 1000
    body = json.dumps(event("deployment.succeeded", padding="x" * 2000)).encode()
    response = post(client, body)
    assert response.status_code == 413
    assert not WebhookEvent.objects.exists()


def test_it_answers_400_to_malformed_json(client, db):
    assert post(client, b'{"id": "evt_1", "type": ').status_code == 400
    assert post(client, b"[1, 2]").status_code == 400
    assert post(client, {"type": "deployment.succeeded"}).status_code == 400
    assert not WebhookEvent.objects.exists()


def test_it_audits_each_signed_delivery_it_refuses_as_vercels_failed_action(client, db):
    post(client, b'{"id": "evt_1", "type": ', REMOTE_ADDR="203.0.113.9")
    post(client, b"[1, 2]")
    post(client, {"type": "deployment.succeeded"})

    refused = AuditEvent.objects.filter(action=AuditAction.WEBHOOK_REFUSED).order_by("id")
    assert [event.details["message"] for event in refused] == [
        "malformed JSON",
        "the body is not a JSON object",
        "the event needs a string id and type",
    ]
    assert {(event.outcome, event.actor_type) for event in refused} == {("failure", "vercel")}
    assert refused[0].source_ip == "203.0.113.9"


def test_it_does_not_audit_an_unsigned_delivery(client, db):
    assert post(client, b"[1, 2]", signature="0" * 64).status_code == 403
    assert not AuditEvent.objects.filter(action=AuditAction.WEBHOOK_REFUSED).exists()


@pytest.mark.parametrize("signature", ["\u00ff", "\u00ff" * 40, "é" + "0" * 39, "\u2603"])
def test_it_answers_403_to_a_non_ascii_signature_instead_of_failing(client, db, signature):
    response = post(client, event("deployment.succeeded"), signature=signature)

    assert (response.status_code, response.json()) == (403, {"outcome": "bad signature"})
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 20_000 + b"]" * 20_000,
        b'{"id": "evt_deep", "type": "deployment.succeeded", "payload": '
        + b'{"a": ' * 40
        + b"1"
        + b"}" * 41,
    ],
    ids=["20000-levels", "40-levels"],
)
def test_it_answers_400_to_a_signed_body_nested_too_deeply(client, db, body):
    response = post(client, body)

    assert (response.status_code, response.json()) == (400, {"outcome": "JSON nested too deeply"})
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize("char", ["\x00", "\ud800", "\udfff"], ids=["nul", "high", "low"])
@pytest.mark.parametrize("where", ["event id", "resource id", "project id", "a key", "a value"])
def test_it_answers_400_to_a_character_no_column_takes(client, resource, rotation, where, char):
    body = deployment_event(resource, "prj_a", PUSH + timedelta(hours=1), "evt_nul")
    payload = body["payload"]
    if where == "event id":
        body["id"] = f"evt{char}"
    elif where == "resource id":
        payload["integrations"][0]["resources"][0]["externalResourceId"] = f"res{char}"
    elif where == "project id":
        payload["project"]["id"] = f"prj_a{char}"
    elif where == "a key":
        payload[f"meta{char}"] = 1
    else:
        payload["meta"] = ["text", {"deep": char}]

    response = post(client, body)

    assert (response.status_code, response.json()) == (
        400,
        {"outcome": "NUL or lone surrogate in a string"},
    )
    assert not WebhookEvent.objects.exists()
    assert statuses(rotation) == {"prj_a": "waiting", "prj_b": "waiting"}


def test_it_answers_400_to_an_event_naming_too_many_resources(client, resource, rotation):
    body = deployment_event(resource, "prj_a", PUSH + timedelta(hours=1), "evt_many")
    named = body["payload"]["integrations"][0]["resources"]
    named += [{"externalResourceId": f"res_{index}"} for index in range(20_000)]

    response = post(client, body)

    assert (response.status_code, response.json()) == (
        400,
        {"outcome": "the event names more than 100 resources"},
    )
    assert statuses(rotation) == {"prj_a": "waiting", "prj_b": "waiting"}


def fail_in_service(monkeypatch):
    def explode(**kwargs):
        raise RuntimeError("the service broke")

    monkeypatch.setattr("rotation.webhooks.webhook_event_handle", explode)


def fail_in_signature_check(monkeypatch):
    def explode(expected, given):
        raise RuntimeError("the comparison broke")

    monkeypatch.setattr("rotation.webhooks.hmac.compare_digest", explode)


@pytest.mark.parametrize("break_it", [fail_in_service, fail_in_signature_check])
def test_the_debug_error_page_and_the_log_never_show_the_webhook_secret(
    db, settings, monkeypatch, caplog, break_it
):
    from django.test import Client

    settings.DEBUG = True
    break_it(monkeypatch)
    body = json.dumps(event("deployment.succeeded", id="evt_boom")).encode()

    response = Client(raise_request_exception=False).post(
        URL,
        data=body,
        content_type="application/json",
        HTTP_X_VERCEL_SIGNATURE=sign_webhook(body, SECRET),
        REDIS_URL="redis://:redis-password-in-meta@127.0.0.1:6379/0",
    )

    page = response.content.decode()
    assert response.status_code == 500
    assert "RuntimeError" in page and "Local vars" in page  # Django's technical 500 page
    assert SECRET not in page
    assert sign_webhook(body, SECRET) not in page
    assert "redis-password-in-meta" not in page
    assert SECRET not in caplog.text


def test_it_only_takes_post(client, db):
    assert client.get(URL).status_code == 405


def test_it_answers_200_to_event_types_it_ignores(client, db):
    response = post(client, event("deployment.succeeded", id="evt_x", type="deployment.error"))
    assert response.status_code == 200
    assert response.json() == {"outcome": "ignored"}
    assert WebhookEvent.objects.get().status == WebhookEvent.Status.IGNORED


def test_it_applies_a_redelivered_event_once(client, resource, rotation):
    body = deployment_event(resource, "prj_a", PUSH + timedelta(hours=2), "evt_dup")
    assert post(client, body).json() == {"outcome": "processed"}
    assert post(client, body).json() == {"outcome": "duplicate"}
    assert WebhookEvent.objects.count() == 1
    assert AuditEvent.objects.filter(action=AuditAction.PROJECT_REDEPLOYED).count() == 1
    assert AuditEvent.objects.filter(action=AuditAction.WEBHOOK_RECEIVED).count() == 1


def test_it_hands_back_a_typed_outcome_and_the_handlers_result(resource, rotation):
    body = deployment_event(resource, "prj_a", PUSH + timedelta(hours=2), "evt_typed")
    handled = webhook_event_handle(event=body)
    assert handled.outcome is WebhookOutcome.PROCESSED
    assert handled.result and handled.result == WebhookEvent.objects.get().result
    assert webhook_event_handle(event=body) == WebhookResult(WebhookOutcome.DUPLICATE)
    other = event("deployment.succeeded", id="evt_other", type="deployment.error")
    assert webhook_event_handle(event=other) == WebhookResult(WebhookOutcome.IGNORED)


def test_it_answers_processed_whatever_the_handler_reports(client, resource, rotation, monkeypatch):
    # The outcome is typed, so a handler's text that reads like an outcome cannot pass for one.
    monkeypatch.setitem(events.HANDLERS, "deployment.succeeded", lambda *args: "duplicate")
    response = post(client, deployment_event(resource, "prj_a", PUSH, "evt_words"))
    assert (response.status_code, response.json()) == (200, {"outcome": "processed"})
    assert WebhookEvent.objects.get().result == "duplicate"


def test_it_does_not_count_a_project_not_connected_to_the_resource(client, resource, rotation):
    body = deployment_event(resource, "prj_stranger", PUSH + timedelta(hours=2), "evt_s")
    assert post(client, body).status_code == 200
    assert statuses(rotation) == {"prj_a": "waiting", "prj_b": "waiting"}
    assert "not waited for" in WebhookEvent.objects.get().result


def test_it_does_not_count_a_deployment_before_the_push(client, resource, rotation):
    body = deployment_event(resource, "prj_a", PUSH - timedelta(minutes=1), "evt_old")
    assert post(client, body).status_code == 200
    assert statuses(rotation) == {"prj_a": "waiting", "prj_b": "waiting"}
    assert "before the push" in WebhookEvent.objects.get().result


def test_it_does_not_count_a_deployment_started_before_the_push(client, resource, rotation):
    created = event(
        "deployment.succeeded",
        id="evt_created",
        type="deployment.created",
        createdAt=int((PUSH - timedelta(minutes=2)).timestamp() * 1000),
        deployment={"id": "dpl_evt_late"},
    )
    assert post(client, created).status_code == 200
    body = deployment_event(resource, "prj_a", PUSH + timedelta(minutes=3), "evt_late")
    assert post(client, body).status_code == 200
    assert statuses(rotation)["prj_a"] == "waiting"


def test_it_does_not_count_a_deployment_for_another_installations_resource(
    client, resource, rotation
):
    body = deployment_event(resource, "prj_a", PUSH + timedelta(hours=2), "evt_other")
    body["payload"]["integrations"][0]["installationId"] = "icfg_someone_else"
    assert post(client, body).status_code == 200
    assert statuses(rotation)["prj_a"] == "waiting"


def test_it_takes_deployments_in_any_order_and_finishes_when_all_redeployed(
    client, resource, rotation
):
    later = deployment_event(resource, "prj_b", PUSH + timedelta(hours=5), "evt_b")
    earlier = deployment_event(resource, "prj_a", PUSH + timedelta(hours=1), "evt_a")
    ready = deployment_event(resource, "prj_a", PUSH + timedelta(hours=1), "evt_a2")
    ready["type"] = "deployment.ready"

    post(client, later)
    rotation.refresh_from_db()
    assert rotation.redeployed_at is None
    post(client, earlier)
    post(client, ready)

    rotation.refresh_from_db()
    assert statuses(rotation) == {"prj_a": "redeployed", "prj_b": "redeployed"}
    assert rotation.redeployed_at is not None
    assert AuditEvent.objects.filter(action=AuditAction.REDEPLOY_DONE).count() == 1


def connection_event(kind: str, resource, project_id: str, at: datetime, event_id: str) -> dict:
    return {
        "id": event_id,
        "type": f"integration-resource.project-{kind}",
        "createdAt": int(at.timestamp() * 1000),
        "payload": {
            "project": {"id": project_id},
            "resource": {"id": resource.vercel_id},
            "configuration": {"id": resource.installation.vercel_id},
        },
    }


def test_it_keeps_connected_projects_from_connection_events(client, resource):
    at = PUSH - timedelta(days=1)
    post(client, connection_event("connected", resource, "prj_new", at, "evt_c1"))

    project = ConnectedProject.objects.get(resource=resource, project_id="prj_new")
    assert project.source == ConnectedProject.Source.WEBHOOK
    assert project.connected_at == at
    assert project.disconnected_at is None

    later = at + timedelta(hours=1)
    post(client, connection_event("disconnected", resource, "prj_new", later, "evt_d1"))
    project.refresh_from_db()
    assert project.disconnected_at == later
    assert AuditEvent.objects.filter(action=AuditAction.PROJECT_CONNECTED).count() == 1
    assert AuditEvent.objects.filter(action=AuditAction.PROJECT_DISCONNECTED).count() == 1


def test_it_parses_the_integrations_form_of_connection_events(client, resource):
    body = deployment_event(resource, "prj_int", PUSH, "evt_int")
    body["type"] = "integration-resource.project-connected"
    post(client, body)
    assert ConnectedProject.objects.filter(resource=resource, project_id="prj_int").exists()


def test_it_ignores_a_stale_disconnect_delivered_after_a_newer_connect(client, resource):
    at = PUSH - timedelta(days=1)
    post(client, connection_event("connected", resource, "prj_x", at, "evt_1"))
    post(client, connection_event("disconnected", resource, "prj_x", at + timedelta(hours=2), "e2"))
    post(client, connection_event("connected", resource, "prj_x", at + timedelta(hours=4), "e3"))
    # Delivered late: the first disconnect again, under a new id, older than the reconnect.
    post(client, connection_event("disconnected", resource, "prj_x", at + timedelta(hours=2), "e4"))
    # A connect older than the current connection changes nothing either.
    post(client, connection_event("connected", resource, "prj_x", at, "evt_5"))

    project = ConnectedProject.objects.get(resource=resource, project_id="prj_x")
    assert project.disconnected_at is None
    assert project.connected_at == at + timedelta(hours=4)


def test_it_stops_waiting_for_a_project_that_disconnects(client, resource, rotation):
    post(client, deployment_event(resource, "prj_a", PUSH + timedelta(hours=1), "evt_a"))
    gone = PUSH + timedelta(hours=2)
    post(client, connection_event("disconnected", resource, "prj_b", gone, "evt_d"))

    rotation.refresh_from_db()
    assert statuses(rotation) == {"prj_a": "redeployed", "prj_b": "disconnected"}
    assert rotation.redeployed_at is not None


def test_it_marks_the_installation_removed_and_stops_its_rotations(client, resource, rotation):
    body = event("integration-configuration.removed", id="evt_rm")
    body["payload"]["configuration"]["id"] = resource.installation.vercel_id

    response = post(client, body)

    assert response.status_code == 200
    installation = Installation.objects.get(pk=resource.installation_id)
    assert installation.status == Installation.Status.REMOVED
    assert installation.removed_at is not None
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.CANCELLED
    assert "removed" in rotation.last_error
    assert not rotation.reminders.filter(status="scheduled").exists()
    stopped = AuditEvent.objects.get(action=AuditAction.ROTATION_STOPPED)
    assert stopped.actor_type == AuditEvent.ActorType.VERCEL
    assert stopped.rotation_ref == rotation.pk
    assert AuditEvent.objects.filter(action=AuditAction.INSTALLATION_REMOVED).count() == 1


def test_it_ignores_the_removal_of_an_installation_that_is_not_ours(client, resource):
    response = post(client, event("integration-configuration.removed"))
    assert response.status_code == 200
    assert Installation.objects.get().status == Installation.Status.ACTIVE


def test_it_queues_the_expiry_at_once_when_there_is_no_safety_delay(
    client, resource, rotation, settings, django_capture_on_commit_callbacks
):
    from django_q.models import OrmQ

    from rotation.tasks_redeploy import rotation_expire_old_task

    settings.ROTATION_EXPIRE_SAFETY_DELAY_MINUTES = 0
    post(client, deployment_event(resource, "prj_a", PUSH + timedelta(hours=1), "evt_a"))
    assert not OrmQ.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        post(client, deployment_event(resource, "prj_b", PUSH + timedelta(hours=2), "evt_b"))

    queued = [(task.task["func"], task.task["args"]) for task in OrmQ.objects.all()]
    assert queued == [("rotation.tasks_redeploy.rotation_expire_old_task", (rotation.pk,))]
    assert rotation_expire_old_task(rotation.pk) is True
    rotation.refresh_from_db()
    assert rotation.state == Rotation.State.COMPLETED


def run_rotation(resource, actor) -> Rotation:
    """Request, prepare and push through the real services, as the cluster would."""
    from rotation import services, tasks

    batch = services.rotation_request(resource_ids=[resource.pk], actor=actor, reason="e2e")
    tasks.rotations_process(list(batch.rotations.values_list("pk", flat=True)))
    return batch.rotations.get()


@pytest.fixture
def pushed_twice(resource, alice, fake_vercel, settings):
    """A resource rotated once (completed) and again (pushed, waiting for its two projects)."""
    fake_vercel.load_from_database()
    connect(resource, "prj_a", "prj_b")
    first = run_rotation(resource, alice)
    Rotation.objects.filter(pk=first.pk).update(state=Rotation.State.COMPLETED)
    second = run_rotation(resource, alice)
    assert second.state == Rotation.State.AWAITING_REDEPLOY
    return first, second


def test_it_completes_a_real_rotation_once_every_project_redeployed(
    client, resource, pushed_twice, fake_vercel, settings, django_capture_on_commit_callbacks
):
    from django.utils import timezone
    from django_q.models import OrmQ

    from rotation.models import CredentialVersion
    from rotation.tasks_redeploy import rotation_expire_old_task

    settings.ROTATION_EXPIRE_SAFETY_DELAY_MINUTES = 0
    _, second = pushed_twice
    old = CredentialVersion.objects.get(resource=resource, stage="previous")
    OrmQ.objects.all().delete()
    later = timezone.now() + timedelta(seconds=5)
    with django_capture_on_commit_callbacks(execute=True):
        for index, project in enumerate(["prj_a", "prj_b"]):
            body = deployment_event(resource, project, later, f"evt_e2e_{index}")
            assert post(client, body).status_code == 200

    for task in OrmQ.objects.all():
        assert task.task["func"] == "rotation.tasks_redeploy.rotation_expire_old_task"
        rotation_expire_old_task(*task.task["args"])
    second.refresh_from_db()
    assert second.state == Rotation.State.COMPLETED
    old.refresh_from_db()
    assert old.stage == "expired" and bytes(old.secrets_encrypted) == b""
    assert old.expired_at is not None


def test_it_rolls_back_a_real_rotation_to_the_values_vercel_had_before(
    resource, pushed_twice, fake_vercel, root, django_capture_on_commit_callbacks
):
    from rotation.models import CredentialVersion
    from rotation.services import rotation_rollback
    from tests.redeploy_builders import run_queued

    _, second = pushed_twice
    installation = resource.installation
    old = CredentialVersion.objects.get(resource=resource, stage="previous")
    before = {s["name"]: s for s in old.secrets()}
    assert {
        s["name"]: s for s in fake_vercel.secrets_of(installation.vercel_id, resource.vercel_id)
    } != before

    newer = CredentialVersion.objects.get(resource=resource, stage="current")
    with django_capture_on_commit_callbacks(execute=True):
        rotation_rollback(rotation=second, actor=root, reason="the new password is rejected")
    with django_capture_on_commit_callbacks(execute=True):
        assert run_queued("rotation.tasks_redeploy.rotation_rollback_task") == [True]

    held = fake_vercel.secrets_of(installation.vercel_id, resource.vercel_id)
    assert {s["name"]: s for s in held} == before
    old.refresh_from_db()
    assert old.stage == "current"
    newer.refresh_from_db()
    assert newer.stage == "expired" and bytes(newer.secrets_encrypted) == b""


@pytest.mark.django_db(transaction=True)
def test_it_takes_signed_deliveries_over_real_http(live_server, installation, settings):
    from tests.redeploy_builders import post_signed

    resource = installation.resources.get()
    connect(resource, "prj_a", at=PUSH - timedelta(days=1))
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)
    url = live_server.url + URL
    body = deployment_event(resource, "prj_a", PUSH + timedelta(minutes=5), "evt_http")

    assert post_signed(url, body, "wrong-secret").status_code == 403
    response = post_signed(url, body, SECRET)

    assert (response.status_code, response.json()) == (200, {"outcome": "processed"})
    rotation.refresh_from_db()
    assert rotation.redeployed_at is not None


def queries_of(client, body: dict) -> tuple[dict, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        response = post(client, body)
    assert response.status_code == 200
    return response.json(), [query["sql"] for query in queries.captured_queries]


@pytest.mark.parametrize("named", ["resource with a finished rotation", "resource not ours"])
def test_it_answers_a_deployment_no_rotation_waits_for_with_one_lookup_and_nothing_else(
    client, resource, named
):
    connect(resource, "prj_a", at=PUSH - timedelta(days=1))
    finished = make_pushed_rotation(resource, pushed_at=PUSH)
    Rotation.objects.filter(pk=finished.pk).update(state=Rotation.State.COMPLETED)
    audited = AuditEvent.objects.count()
    body = deployment_event(resource, "prj_a", PUSH + timedelta(hours=1), "evt_unrelated")
    if named == "resource not ours":
        body["payload"]["integrations"][0]["resources"][0]["externalResourceId"] = "res_other"

    answer, sql = queries_of(client, body)

    assert answer == {"outcome": "unrelated"}
    assert len(sql) == 1 and sql[0].startswith("SELECT")
    assert "FOR UPDATE" not in sql[0]
    assert not WebhookEvent.objects.exists()
    assert AuditEvent.objects.count() == audited
    assert statuses(finished) == {"prj_a": "waiting"}  # a finished rotation is left as it was


def test_it_locks_and_records_a_deployment_a_rotation_waits_for(client, resource, rotation):
    body = deployment_event(resource, "prj_a", PUSH + timedelta(hours=1), "evt_relevant")

    answer, sql = queries_of(client, body)

    assert answer == {"outcome": "processed"}
    assert statuses(rotation) == {"prj_a": "redeployed", "prj_b": "waiting"}
    assert WebhookEvent.objects.get().event_id == "evt_relevant"
    # Both events of the delivery are chained in one append.
    assert list(AuditEvent.objects.order_by("-id").values_list("action", flat=True)[:2]) == [
        AuditAction.WEBHOOK_RECEIVED,
        AuditAction.PROJECT_REDEPLOYED,
    ]
    assert sum(q.startswith('INSERT INTO "rotation_auditevent"') for q in sql) == 1
    if connection.vendor == "postgresql":
        assert sum("FOR UPDATE" in q for q in sql) == 1


def test_it_does_not_count_an_unrelated_deployment_redelivered_after_a_push(client, resource):
    connect(resource, "prj_a", at=PUSH - timedelta(days=1))
    body = deployment_event(resource, "prj_a", PUSH - timedelta(minutes=5), "evt_early")
    assert post(client, body).json() == {"outcome": "unrelated"}
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)

    # Vercel redelivers the same event once the rotation waits: it predates the push.
    assert post(client, body).json() == {"outcome": "processed"}
    assert statuses(rotation) == {"prj_a": "waiting"}
    assert "before the push" in WebhookEvent.objects.get().result
    assert not AuditEvent.objects.filter(action=AuditAction.PROJECT_REDEPLOYED).exists()


def test_it_rolls_back_the_handler_of_a_redelivery_and_keeps_the_first_result(
    client, resource, rotation
):
    body = deployment_event(resource, "prj_a", PUSH + timedelta(hours=1), "evt_twice")
    assert post(client, body).json() == {"outcome": "processed"}
    first = WebhookEvent.objects.get()
    audited = AuditEvent.objects.count()

    assert post(client, body).json() == {"outcome": "duplicate"}

    assert list(WebhookEvent.objects.values_list("pk", "result")) == [(first.pk, first.result)]
    assert AuditEvent.objects.count() == audited
    assert statuses(rotation) == {"prj_a": "redeployed", "prj_b": "waiting"}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_completes_a_rotation_once_when_its_last_deployments_arrive_at_once(installation):
    import threading

    from django.db import connections

    resource = installation.resources.get()
    connect(resource, "prj_a", "prj_b", at=PUSH - timedelta(days=1))
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)
    bodies = [
        deployment_event(resource, project, PUSH + timedelta(minutes=5), f"evt_{project}")
        for project in ("prj_a", "prj_b", "prj_a")  # the last one: prj_a's event again
    ]
    barrier = threading.Barrier(len(bodies))
    outcomes, errors = [], []

    def deliver(body):
        try:
            barrier.wait()
            outcomes.append(webhook_event_handle(event=body).outcome)
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=deliver, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(outcomes) == ["duplicate", "processed", "processed"]
    rotation.refresh_from_db()
    assert rotation.redeployed_at is not None
    assert statuses(rotation) == {"prj_a": "redeployed", "prj_b": "redeployed"}
    assert AuditEvent.objects.filter(action=AuditAction.PROJECT_REDEPLOYED).count() == 2
    assert AuditEvent.objects.filter(action=AuditAction.REDEPLOY_DONE).count() == 1
    assert WebhookEvent.objects.count() == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("second", ["prj_b", "prj_a"])
def test_it_holds_a_second_deployment_until_the_first_commits(installation, monkeypatch, second):
    import threading

    from django.db import connections

    resource = installation.resources.get()
    connect(resource, "prj_a", "prj_b", at=PUSH - timedelta(days=1))
    with time_machine.travel(PUSH, tick=False):
        rotation = make_pushed_rotation(resource)
    # The first delivery pauses once it has counted prj_a, before it commits.
    counted, resume = threading.Event(), threading.Event()
    audit_record = events.audit_record

    def pausing_audit_record(**fields):
        if threading.current_thread().name == "first":
            counted.set()
            resume.wait(timeout=10)
        return audit_record(**fields)

    monkeypatch.setattr(events, "audit_record", pausing_audit_record)
    results, errors = {}, []

    def deliver(name, project):
        try:
            body = deployment_event(resource, project, PUSH + timedelta(minutes=5), f"evt_{name}")
            results[name] = webhook_event_handle(event=body).result
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = {
        name: threading.Thread(target=deliver, args=(name, project), name=name)
        for name, project in (("first", "prj_a"), ("second", second))
    }
    threads["first"].start()
    assert counted.wait(timeout=10)
    threads["second"].start()
    threads["second"].join(timeout=1)
    held = threads["second"].is_alive()  # on the rotation's lock, which the first one holds
    resume.set()
    for thread in threads.values():
        thread.join()

    assert errors == []
    assert held
    assert AuditEvent.objects.filter(action=AuditAction.PROJECT_REDEPLOYED).count() == 2 - (
        second == "prj_a"
    )
    rotation.refresh_from_db()
    if second == "prj_b":  # it saw prj_a counted, and finished the rotation
        assert "all projects redeployed" in results["second"]
        assert rotation.redeployed_at is not None
        assert AuditEvent.objects.filter(action=AuditAction.REDEPLOY_DONE).count() == 1
    else:  # prj_a's second deployment counts for nothing
        assert "not waited for" in results["second"]
        assert rotation.redeployed_at is None
