"""`manage.py rotate_resources`: the admin action's twin."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django_q.conf import Conf

from rotation import services
from rotation.audit import AuditAction
from rotation.management.commands import rotate_resources
from rotation.models import AuditEvent, Installation, Resource, Rotation, RotationBatch
from tests.conftest import make_installation, make_user


def rotate(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("rotate_resources", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def comparable(batch: RotationBatch) -> dict:
    return {
        "requested_by": batch.requested_by_id,
        "reason": batch.reason,
        "ticket": batch.ticket,
        "emergency": batch.emergency,
        "refused": batch.refused,
        "rotations": sorted(
            batch.rotations.values_list("resource_id", "emergency", "attempts", "last_error")
        ),
    }


def test_it_prints_the_batch_id(alice, installation):
    out, err = rotate("icfg_test1_res0", "--actor", "alice", "--reason", "leak", "--ticket", "T-9")
    batch = RotationBatch.objects.get()
    assert out.strip() == str(batch.pk)
    assert batch.source == "cli"
    assert batch.ticket == "T-9"
    assert batch.rotations.get().resource.vercel_id == "icfg_test1_res0"
    assert "1 rotation(s) requested" in err
    event = AuditEvent.objects.get(action=AuditAction.ROTATION_REQUESTED)
    assert event.actor_username == "alice"
    assert event.details["source"] == "cli"


def test_it_makes_the_same_batch_as_the_service(alice, db):
    make_installation("icfg_a", resources=3)
    make_installation("icfg_b", resources=1)
    earlier = Resource.objects.get(vercel_id="icfg_a_res2")
    services.rotation_request(resource_ids=[earlier.pk], actor=alice, reason="earlier")
    wanted = ["icfg_a_res0", "icfg_a_res1", "icfg_a_res2", "icfg_b_res0"]
    out, _ = rotate(*wanted, "--actor", "alice", "--reason", "quarterly", "--ticket", "OPS-1")
    from_cli = RotationBatch.objects.get(pk=int(out))
    # Close the CLI's rotations so the service meets the same world, then ask it the same.
    from_cli.rotations.update(state=Rotation.State.CANCELLED)
    ids = [Resource.objects.get(vercel_id=vercel_id).pk for vercel_id in wanted]
    from_service = services.rotation_request(
        resource_ids=ids, actor=alice, reason="quarterly", ticket="OPS-1"
    )
    assert comparable(from_cli) == comparable(from_service)
    assert len(from_cli.rotations.all()) == 3
    assert [entry["resource"] for entry in from_cli.refused] == [earlier.pk]
    assert (from_cli.source, from_service.source) == ("cli", "admin")


def test_it_applies_the_same_permission_check(dave, installation):
    with pytest.raises(CommandError, match="permission"):
        rotate("icfg_test1_res0", "--actor", "dave", "--reason", "x")
    assert not RotationBatch.objects.exists()
    assert AuditEvent.objects.get(action=AuditAction.ROTATION_REQUEST_DENIED).outcome == "denied"


def test_it_needs_the_emergency_permission(alice, root, installation):
    with pytest.raises(CommandError, match="emergency"):
        rotate("icfg_test1_res0", "--actor", "alice", "--reason", "x", "--emergency")
    rotate("icfg_test1_res0", "--actor", "root", "--reason", "x", "--emergency")
    assert RotationBatch.objects.get().emergency is True
    assert Rotation.objects.get().emergency is True


def test_it_refuses_an_unknown_actor(installation):
    with pytest.raises(CommandError, match="no user"):
        rotate("icfg_test1_res0", "--actor", "nobody", "--reason", "x")


def test_it_needs_installation_when_an_id_is_ambiguous(alice, db):
    for icfg in ("icfg_x", "icfg_y"):
        installation = Installation.objects.create(vercel_id=icfg)
        Resource.objects.create(
            installation=installation, vercel_id="shared", product="p", name="n"
        )
    with pytest.raises(CommandError, match="ambiguous"):
        rotate("shared", "--actor", "alice", "--reason", "x")
    out, _ = rotate("shared", "--actor", "alice", "--reason", "x", "--installation", "icfg_y")
    rotation = RotationBatch.objects.get(pk=int(out)).rotations.get()
    assert rotation.resource.installation.vercel_id == "icfg_y"


def test_it_refuses_unknown_resource_ids(alice, installation):
    with pytest.raises(CommandError, match="nope: no such resource"):
        rotate("icfg_test1_res0", "nope", "--actor", "alice", "--reason", "x")
    assert not RotationBatch.objects.exists()


def test_it_reports_refused_resources(alice, installation):
    rotate("icfg_test1_res0", "--actor", "alice", "--reason", "x")
    with pytest.raises(CommandError, match="refused"):
        rotate("icfg_test1_res0", "--actor", "alice", "--reason", "again")
    batch = RotationBatch.objects.order_by("pk").last()
    assert "still open" in batch.refused[0]["reason"]


def test_it_waits_and_reports_each_failure(alice, installation, monkeypatch):
    def worker_fails_the_push(seconds: float) -> None:
        Rotation.objects.update(
            state=Rotation.State.FAILED, last_error_code="forbidden", last_error="token refused"
        )

    monkeypatch.setattr(rotate_resources.time, "sleep", worker_fails_the_push)
    err = StringIO()
    with pytest.raises(CommandError, match=r"^1 rotation\(s\) failed$"):
        call_command(
            "rotate_resources",
            "icfg_test1_res0",
            *("--actor", "alice", "--reason", "x", "--wait"),
            stdout=StringIO(),
            stderr=err,
        )
    lines = err.getvalue().splitlines()
    assert lines[1:] == [
        "  0% requested=1",
        "100% failed=1",
        "failed icfg_test1_res0: forbidden token refused",
    ]


@pytest.mark.django_db(transaction=True)
def test_it_waits_until_the_batch_is_done(fake_vercel, monkeypatch):
    from rotation.roles import SUPPORT, roles_sync

    monkeypatch.setattr(Conf, "SYNC", True)
    roles_sync()
    make_user("alice", group=SUPPORT)
    make_installation("icfg_wait", resources=2)
    fake_vercel.load_from_database()
    out, err = rotate(
        "icfg_wait_res0",
        "icfg_wait_res1",
        "--actor",
        "alice",
        "--reason",
        "x",
        "--wait",
        "--poll",
        "0.05",
    )
    batch = RotationBatch.objects.get(pk=int(out))
    assert "100% awaiting_redeploy=2" in err
    assert set(batch.rotations.values_list("state", flat=True)) == {"awaiting_redeploy"}
    assert fake_vercel.secrets_of("icfg_wait", "icfg_wait_res1")
