"""The audit trail service: hash chain, canonical form, fail-closed writes, append-only rows."""

import datetime as dt
import decimal
import itertools
import uuid

import pytest
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

from rotation.audit import (
    AuditAction,
    Origin,
    audit_batch,
    audit_record,
    audit_record_many,
    fingerprint,
)
from rotation.audit.chain import GENESIS_HASH, event_hash
from rotation.audit.verify import audit_log_verify
from rotation.models import AuditEvent, AuditEventImmutable, Installation
from tests.conftest import make_installation


def test_it_chains_events_and_survives_a_database_round_trip(alice):
    first = audit_record(action=AuditAction.INSTALLATION_CHANGED, actor=alice, reason="first")
    tricky = {
        "float": 0.1,
        "tiny": 1.5e-7,
        "big_float": 1e20,
        "integral_float": 2.0,
        "big_int": 2**70,
        "nan": float("nan"),
        "unicode": "Zürich 東京 \U0001f510",
        "nul": "a\x00b",
        "nested": {"b": [1, {"z": None, "a": True}], "a": "x"},
        "when": dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC),
        "amount": decimal.Decimal("12.50"),
        "uuid": uuid.UUID(int=5),
        "set": {3, 1, 2},
        7: "int key",
    }
    second = audit_record(
        action=AuditAction.RESOURCE_CHANGED,
        outcome="failure",
        installation="icfg_x",
        resource="res_1",
        rotation=12,
        batch="3",
        ticket="SUP-1",
        origin=Origin(ip="::ffff:10.0.0.1", user_agent="Mozilla\x00/5.0"),
        details=tricky,
    )
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    for event in AuditEvent.objects.order_by("id"):
        assert event_hash(event) == event.hash
    stored = AuditEvent.objects.get(pk=second.pk)
    assert stored.details["big_float"] == 10**20
    assert stored.details["nan"] == "nan"
    assert stored.details["7"] == "int key"
    assert "\x00" not in stored.details["nul"]
    assert audit_log_verify().intact


@pytest.mark.skipif(
    connection.vendor != "sqlite", reason="the VALUES insert is SQLite's; PostgreSQL's is JSON"
)
def test_sqlite_stores_each_column_as_the_orm_would(alice):
    event = audit_record(
        action=AuditAction.RESOURCE_CHANGED,
        actor=alice,
        outcome="failure",
        installation="icfg_x",
        resource="res_1",
        rotation=12,
        batch="3",
        origin=Origin(ip="2001:0db8:0000:0000:0000:0000:0000:0001", user_agent="UA"),
        details={"when": dt.datetime(2026, 1, 2, tzinfo=dt.UTC), "n": 1.5, "s": "zoë"},
    )
    fields = AuditEvent._meta.concrete_fields
    expected = [
        field.get_db_prep_save(getattr(event, field.attname), connection) for field in fields
    ]
    with connection.cursor() as cursor:  # quote(): the stored value and its type, as SQL text
        quoted = ", ".join(f"quote({connection.ops.quote_name(field.column)})" for field in fields)
        cursor.execute(f"SELECT {quoted} FROM rotation_auditevent WHERE id = %s", [event.pk])  # noqa: S608 (column names)
        stored = cursor.fetchone()
        cursor.execute(f"SELECT {', '.join(['quote(%s)'] * len(fields))}", expected)
        assert stored == cursor.fetchone()
    assert "'2001:db8::1'" in stored


def test_it_rolls_back_the_event_with_the_change(db):
    with pytest.raises(RuntimeError), transaction.atomic():
        Installation.objects.create(vercel_id="icfg_rolled")
        audit_record(action=AuditAction.INSTALLATION_CHANGED, installation="icfg_rolled")
        raise RuntimeError("the change fails after its audit event was written")
    assert not Installation.objects.filter(vercel_id="icfg_rolled").exists()
    assert not AuditEvent.objects.exists()


def fail_audit_inserts():
    """A real database failure on every audit insert (as if the table were unwritable)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION test_audit_down() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'audit store unavailable'; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                "CREATE TRIGGER test_audit_down BEFORE INSERT ON rotation_auditevent "
                "FOR EACH ROW EXECUTE FUNCTION test_audit_down()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER test_audit_down BEFORE INSERT ON rotation_auditevent "
                "BEGIN SELECT RAISE(ABORT, 'audit store unavailable'); END"
            )


def import_document(token="vci_known_token_7f3a9c", vercel_id="icfg_imp"):
    return {
        "installations": [
            {
                "id": vercel_id,
                "name": "Imported",
                "access_token": token,
                "resources": [
                    {
                        "id": f"{vercel_id}_r1",
                        "product": "postgres",
                        "name": "db",
                        "secrets": [{"name": "DATABASE_URL"}],
                    }
                ],
            }
        ]
    }


def test_it_aborts_the_change_when_the_audit_write_fails(alice):
    from rotation.importer import installations_import

    fail_audit_inserts()
    with pytest.raises(DatabaseError, match="audit store unavailable"):
        installations_import(data=import_document(), actor=alice)
    assert not Installation.objects.filter(vercel_id="icfg_imp").exists()


def test_it_refuses_unknown_actions_and_secret_looking_details(db):
    with pytest.raises(ValueError, match="unknown audit action"):
        audit_record(action="rotation.typo")
    with pytest.raises(ValueError, match="fingerprint"), transaction.atomic():
        Installation.objects.create(vercel_id="icfg_leak")
        audit_record(action=AuditAction.INSTALLATION_CHANGED, details={"token": "vci_plain"})
    assert not Installation.objects.filter(vercel_id="icfg_leak").exists()
    event = audit_record(
        action=AuditAction.INSTALLATION_CHANGED, details={"token": fingerprint("vci_plain")}
    )
    assert event.details["token"].startswith("hmac-sha256:")


def test_it_refuses_to_change_or_delete_events_through_the_orm(root):
    event = audit_record(action=AuditAction.INSTALLATION_CHANGED, actor=root, reason="kept")
    event.reason = "rewritten"
    with pytest.raises(AuditEventImmutable):
        event.save()
    with pytest.raises(AuditEventImmutable):
        event.delete()
    with pytest.raises(AuditEventImmutable):
        AuditEvent.objects.filter(pk=event.pk).update(reason="rewritten")
    with pytest.raises(AuditEventImmutable):
        AuditEvent.objects.all().delete()
    with pytest.raises(AuditEventImmutable):
        AuditEvent.objects.create(action=AuditAction.INSTALLATION_CHANGED, actor_type="system")
    assert AuditEvent.objects.get(pk=event.pk).reason == "kept"


def test_it_rejects_direct_sql_update_and_delete_on_sqlite_and_postgresql(db):
    """PostgreSQL's trigger is migration 0004's, SQLite's two are 0014's."""
    event = audit_record(action=AuditAction.INSTALLATION_CHANGED, reason="kept")
    for sql in (
        "UPDATE rotation_auditevent SET reason = 'rewritten' WHERE id = %s",
        "DELETE FROM rotation_auditevent WHERE id = %s",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql, [event.pk])
    assert AuditEvent.objects.get(pk=event.pk).reason == "kept"


def test_it_never_stores_a_secret_value(client, root):
    from rotation.importer import installations_import

    token, new_token = "vci_known_token_7f3a9c", "vci_replaced_token_c0ffee"
    installations_import(data=import_document(token), actor=root, source="test.json")
    installation = Installation.objects.get(vercel_id="icfg_imp")
    client.force_login(root)
    response = client.post(
        f"/admin/rotation/installation/{installation.pk}/change/",
        {
            "vercel_id": "icfg_imp",
            "name": "Imported",
            "team_id": "",
            "contact_email": "",
            "endpoint": "current",
            "status": "active",
            "new_access_token": new_token,
        },
    )
    assert response.status_code == 302
    client.logout()
    client.post("/admin/login/", {"username": "root", "password": "hunter2-wrong-password"})
    client.post("/admin/login/", {"username": new_token, "password": "x"})
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM rotation_auditevent")
        rows = cursor.fetchall()
    assert len(rows) >= 5
    raw = repr(rows)
    for secret in (token, new_token, "hunter2-wrong-password"):
        assert secret not in raw
    assert fingerprint(new_token) in raw


def test_it_audits_sign_in_sign_out_and_failed_sign_in(client, carol):
    client.post("/admin/login/", {"username": "carol", "password": "wrong"})
    client.post(
        "/admin/login/",
        {"username": "carol", "password": "correct horse battery staple"},
        HTTP_USER_AGENT="pytest-browser",
        REMOTE_ADDR="192.0.2.7",
    )
    client.post("/admin/logout/")
    failed, login, logout = AuditEvent.objects.order_by("id")
    assert (failed.action, failed.outcome, failed.actor_type) == (
        "auth.login_failed",
        "failure",
        "anonymous",
    )
    assert failed.actor_username == "carol" and failed.details["username_known"] is True
    assert (login.action, login.actor_user_id, login.actor_username) == (
        "auth.login",
        carol.pk,
        "carol",
    )
    assert (login.source_ip, login.user_agent) == ("192.0.2.7", "pytest-browser")
    assert (logout.action, logout.actor_username) == ("auth.logout", "carol")
    assert audit_log_verify().intact


def test_it_keeps_the_chain_intact_after_mixed_activity(client, alice, carol, root):
    from django.core.management import call_command

    from rotation.importer import installations_import

    make_installation("icfg_mixed", resources=2)
    installations_import(data=import_document(), actor=alice)
    installations_import(data=import_document("vci_second_token_99"), actor=alice)
    client.post("/admin/login/", {"username": "carol", "password": "nope"})
    client.force_login(carol)
    client.get("/admin/rotation/auditevent/export/csv/?action=auth.login_failed")
    client.force_login(alice)
    client.get("/admin/rotation/auditevent/export/jsonl/")
    audit_record(action=AuditAction.SECRETS_REENCRYPTED, details={"count": 3})
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(action=AuditAction.INSTALLATION_CHANGED, reason="rolled back")
        raise RuntimeError
    count = AuditEvent.objects.count()
    assert count >= 6
    assert not AuditEvent.objects.filter(reason="rolled back").exists()
    report = audit_log_verify(chunk_size=2)
    assert report.intact and report.count == count
    out = __import__("io").StringIO()
    call_command("verify_audit_log", stdout=out)
    assert f"audit chain intact: {count} events" in out.getvalue()


def test_it_fingerprints_a_value_read_on_stdin(db, monkeypatch, capsys):
    import io

    from django.core.management import call_command

    monkeypatch.setattr("sys.stdin", io.StringIO("vci_some_token\n"))
    out = io.StringIO()
    call_command("audit_fingerprint", stdout=out)
    assert out.getvalue().strip() == fingerprint("vci_some_token")
    event = AuditEvent.objects.get()
    assert event.action == AuditAction.AUDIT_FINGERPRINTED
    assert "vci_some_token" not in repr(event.details)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_keeps_one_chain_with_eight_concurrent_writers():
    import threading

    from django.db import connections

    threads_count, per_thread = 8, 25
    barrier = threading.Barrier(threads_count)
    errors = []

    def writer(number):
        try:
            barrier.wait()
            if number % 2:  # half the writers append five events at a time
                for start in range(0, per_thread, 5):
                    with transaction.atomic():
                        audit_record_many(
                            {
                                "action": AuditAction.INSTALLATION_CHANGED,
                                "details": {"writer": number, "index": index},
                            }
                            for index in range(start, start + 5)
                        )
                return
            for index in range(per_thread):
                with transaction.atomic():
                    audit_record(
                        action=AuditAction.INSTALLATION_CHANGED,
                        details={"writer": number, "index": index},
                    )
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert AuditEvent.objects.count() == threads_count * per_thread
    seen = {(e["writer"], e["index"]) for e in AuditEvent.objects.values_list("details", flat=True)}
    assert len(seen) == threads_count * per_thread
    report = audit_log_verify(chunk_size=50)
    assert report.intact and report.count == threads_count * per_thread


def test_it_appends_many_events_in_order_in_one_go(db, django_assert_max_num_queries):
    audit_record(action=AuditAction.INSTALLATION_CHANGED, reason="before")
    with django_assert_max_num_queries(8), transaction.atomic():
        events = audit_record_many(
            {"action": AuditAction.RESOURCE_CHANGED, "resource": f"res_{index}"}
            for index in range(40)
        )
    audit_record(action=AuditAction.INSTALLATION_CHANGED, reason="after")
    stored = list(AuditEvent.objects.order_by("id"))
    assert [event.resource_ref for event in stored[1:41]] == [f"res_{i}" for i in range(40)]
    assert [event.pk for event in events] == [event.pk for event in stored[1:41]]
    for previous, event in itertools.pairwise(stored):
        assert event.prev_hash == previous.hash
    assert audit_log_verify().intact
    assert audit_record_many([]) == []


def test_it_appends_a_batch_in_order_with_one_insert_when_the_block_ends(db):
    audit_record(action=AuditAction.INSTALLATION_CHANGED, reason="before")
    with transaction.atomic(), CaptureQueriesContext(connection) as queries, audit_batch():
        audit_record(action=AuditAction.RESOURCE_CHANGED, resource="res_1")
        audit_record_many([{"action": AuditAction.RESOURCE_CHANGED, "resource": "res_2"}])
        audit_record(action=AuditAction.RESOURCE_CHANGED, resource="res_3")
        assert AuditEvent.objects.count() == 1  # nothing written before the block ends
    stored = list(AuditEvent.objects.order_by("id"))
    assert [event.resource_ref for event in stored] == ["", "res_1", "res_2", "res_3"]
    inserts = [q for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 1
    assert audit_log_verify().intact


def test_it_appends_a_nested_batch_with_the_outer_one_in_the_order_built(db):
    with transaction.atomic(), audit_batch():
        audit_record(action=AuditAction.RESOURCE_CHANGED, resource="res_1")
        with audit_batch():
            audit_record(action=AuditAction.RESOURCE_CHANGED, resource="res_2")
        assert not AuditEvent.objects.exists()
        audit_record(action=AuditAction.RESOURCE_CHANGED, resource="res_3")
    stored = AuditEvent.objects.order_by("id").values_list("resource_ref", flat=True)
    assert list(stored) == ["res_1", "res_2", "res_3"]
    assert audit_log_verify().intact


def test_it_appends_nothing_from_a_batch_left_by_an_error(db):
    with pytest.raises(RuntimeError), transaction.atomic(), audit_batch():
        audit_record(action=AuditAction.RESOURCE_CHANGED, resource="res_1")
        raise RuntimeError("the change failed")
    with transaction.atomic(), pytest.raises(ValueError, match="unknown"), audit_batch():
        audit_record(action="rotation.made_up")  # refused when built, inside the block
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_batch_outside_a_transaction():
    with pytest.raises(transaction.TransactionManagementError), audit_batch():
        pass


def test_it_appends_nothing_when_one_of_many_events_is_invalid(db):
    with pytest.raises(ValueError, match="unknown audit action"):
        audit_record_many(
            [{"action": AuditAction.RESOURCE_CHANGED}, {"action": "rotation.made_up"}]
        )
    assert not AuditEvent.objects.exists()


def test_it_records_a_refusal_with_who_and_where(rf, alice):
    from rotation.audit import refusal_record

    request = rf.post("/admin/rotation/resource/", REMOTE_ADDR="2001:DB8::0001")
    event = refusal_record(
        action=AuditAction.INSTALLATION_CHANGED,
        message="You do not have permission to do this.",
        actor=alice,
        origin=Origin.of(request),
        installation="icfg_x",
        details={"needed": "rotation.change_installation"},
    )
    assert (event.outcome, event.actor_username, event.source_ip) == (
        "denied",
        "alice",
        "2001:db8::1",
    )
    assert event.details == {
        "message": "You do not have permission to do this.",
        "needed": "rotation.change_installation",
    }
    assert AuditEvent.objects.get(pk=event.pk).hash == event_hash(event)


def test_it_refuses_an_empty_value_to_fingerprint(db, monkeypatch):
    import io

    from django.core.management import CommandError, call_command

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(CommandError, match="no value"):
        call_command("audit_fingerprint")


def test_it_records_a_refusal_of_nobody_signed_in_as_anonymous(rf, db):
    from django.contrib.auth.models import AnonymousUser

    from rotation.audit import RotationRefused, refuse

    request = rf.post("/webhooks/vercel/", REMOTE_ADDR="192.0.2.7")
    with pytest.raises(RotationRefused, match="Sign in first"):
        refuse(
            action=AuditAction.ROTATION_REQUEST_DENIED,
            message="Sign in first.",
            actor=AnonymousUser(),
            origin=Origin.of(request),
        )
    event = AuditEvent.objects.get()
    assert (event.actor_type, event.actor_username, event.outcome) == ("anonymous", "", "denied")
    assert (event.source_ip, event.details) == ("192.0.2.7", {"message": "Sign in first."})
