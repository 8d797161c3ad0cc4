"""The inventory check: our resources against Vercel's list, differences reported, names and
statuses applied, missing resources marked removed, nothing deleted, every change audited."""

from __future__ import annotations

import pytest

from rotation.audit import RotationRefused
from rotation.models import AuditEvent, InventoryReport, Resource
from rotation.services.inventory import inventory_check
from tests.conftest import make_installation


def check(**overrides) -> InventoryReport:
    arguments = {"installation_ids": None, "source": "cli", "actor": None, "origin": None}
    arguments.update(overrides)
    return inventory_check(**arguments)


def findings(report) -> set[tuple]:
    return {
        (f.installation_ref, f.resource_ref, f.kind, f.ours, f.theirs, f.applied)
        for f in report.findings.all()
    }


@pytest.fixture
def two(market, installation):
    """A second installation with two resources, both known to the stand-in."""
    make_installation("icfg_two", token="vci_two_token", resources=2)
    market.load_from_database()
    return Resource.objects.filter(installation__vercel_id="icfg_two").order_by("vercel_id")


def test_nothing_differs_when_vercel_holds_what_we_hold(market, installation, two):
    report = check()
    assert report.installations_checked == 2
    assert report.differences == 0
    assert report.finished_at is not None


def test_it_applies_names_and_statuses_and_reports_the_rest(market, installation, two):
    first, second = two
    market.set_resource_on_vercel("icfg_two", first.vercel_id, product="postgres", name="renamed")
    market.set_resource_on_vercel(
        "icfg_two", second.vercel_id, product="redis", name=second.name, status="suspended"
    )
    market.set_resource_on_vercel("icfg_two", "res_new", product="postgres", name="new one")
    report = check()
    assert findings(report) == {
        ("icfg_two", first.vercel_id, "name", "db-0", "renamed", True),
        ("icfg_two", second.vercel_id, "product", "postgres", "redis", False),
        ("icfg_two", second.vercel_id, "status", "ready", "suspended", True),
        ("icfg_two", "res_new", "unknown", "", "new one (postgres)", False),
    }
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.name == "renamed"
    assert second.status == "suspended"
    assert second.product == "postgres"  # reported, not applied
    assert not Resource.objects.filter(vercel_id="res_new").exists()
    assert report.changes_applied == 2
    updates = AuditEvent.objects.filter(action="inventory.resource_updated")
    assert {e.resource_ref: e.details["changes"] for e in updates} == {
        first.vercel_id: {"name": {"from": "db-0", "to": "renamed"}},
        second.vercel_id: {"status": {"from": "ready", "to": "suspended"}},
    }


def test_a_resource_missing_on_vercel_is_marked_removed_never_deleted(market, installation):
    resource = installation.resources.get()
    market.remove_resource_on_vercel(installation.vercel_id, resource.vercel_id)
    report = check()
    resource.refresh_from_db()
    assert resource.status == "removed"
    assert findings(report) == {
        (installation.vercel_id, resource.vercel_id, "missing", "ready", "", True)
    }
    # A second run has nothing new to say.
    assert check().differences == 0
    assert Resource.objects.filter(pk=resource.pk).exists()


def test_a_vercel_error_for_one_installation_is_reported_and_the_others_go_on(
    market, installation, two
):
    first, _ = two
    market.set_resource_on_vercel("icfg_two", first.vercel_id, product="postgres", name="renamed")
    # icfg_test1 is checked first (by id): its call gets the error.
    market.respond_next(403, {"error": {"code": "forbidden", "message": "Not authorized"}})
    report = check()
    assert report.installations_failed == 1
    assert report.installations_checked == 1
    error = report.findings.get(kind="error")
    assert error.installation_ref == installation.vercel_id
    assert "Not authorized" in error.message
    first.refresh_from_db()
    assert first.name == "renamed"
    failed = AuditEvent.objects.get(action="inventory.installation_failed")
    assert failed.outcome == "failure"


def test_it_checks_only_the_installations_asked_for(market, installation, two):
    report = check(installation_ids=[installation.pk])
    assert report.installations == [installation.vercel_id]
    assert report.installations_checked == 1
    assert {r.path for r in market.requests} == {
        f"/v1/installations/{installation.vercel_id}/resources"
    }


def test_it_follows_pages(market, installation, two):
    market.resources_page_size = 1
    assert check(installation_ids=[two[0].installation_id]).differences == 0
    assert len(market.requests) == 2


def test_staff_need_the_permission(market, alice, lead, installation):
    with pytest.raises(RotationRefused):
        check(actor=alice, source="admin")
    assert AuditEvent.objects.get(action="inventory.checked").outcome == "denied"
    assert check(actor=lead, source="admin").installations_checked == 1
