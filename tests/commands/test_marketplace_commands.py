"""`rotate_installation_tokens` and `sync_vercel_resources`: the admin's twins."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from rotation.models import AuditEvent, InventoryReport

OLD = "vci_test_token_1"


def run(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_rotate_installation_tokens_rotates_and_revokes(market, lead, installation):
    out, _ = run("rotate_installation_tokens", installation.vercel_id, "--actor", "lena")
    assert out == f"{installation.vercel_id}: rotated, old token revoked\n"
    installation.refresh_from_db()
    assert installation.access_token() != OLD
    assert market.is_revoked(installation.vercel_id, OLD)
    assert OLD not in out


def test_rotate_installation_tokens_refuses_clearly(market, alice, lead, installation, settings):
    with pytest.raises(CommandError, match="no such installation: icfg_nope"):
        run("rotate_installation_tokens", "icfg_nope", "--actor", "lena")
    with pytest.raises(CommandError, match="no user 'nobody'"):
        run("rotate_installation_tokens", installation.vercel_id, "--actor", "nobody")
    with pytest.raises(CommandError, match="permission"):
        run("rotate_installation_tokens", installation.vercel_id, "--actor", "alice")
    settings.VERCEL_CLIENT_SECRET = ""
    with pytest.raises(CommandError, match="VERCEL_CLIENT_SECRET is not set"):
        run("rotate_installation_tokens", installation.vercel_id, "--actor", "lena")
    assert market.requests == []


def test_rotate_installation_tokens_reports_a_stopped_rotation(market, lead, installation):
    market.respond_next(403, {"error": {"code": "forbidden", "message": "Invalid client"}})
    with pytest.raises(CommandError, match="0 rotated, 1 stopped"):
        run("rotate_installation_tokens", installation.vercel_id, "--actor", "lena")
    installation.refresh_from_db()
    assert installation.access_token() == OLD
    assert "Invalid client" in installation.token_rotation_error


def test_sync_vercel_resources_prints_differences(market, installation):
    resource = installation.resources.get()
    market.set_resource_on_vercel(
        installation.vercel_id, resource.vercel_id, product="postgres", name="db-renamed"
    )
    out, err = run("sync_vercel_resources", "--installation", installation.vercel_id)
    assert f"{resource.vercel_id} name 'db-0' -> 'db-renamed' (applied)" in out
    report = InventoryReport.objects.get()
    assert f"report {report.pk}: 1 checked, 0 failed, 1 difference(s)" in err
    assert report.source == "cli"
    assert AuditEvent.objects.filter(action="inventory.resource_updated").count() == 1


def test_sync_vercel_resources_fails_when_an_installation_was_not_checked(market, installation):
    market.respond_next(503)
    with pytest.raises(CommandError, match="1 installation"):
        run("sync_vercel_resources")
    assert InventoryReport.objects.get().installations_failed == 1
