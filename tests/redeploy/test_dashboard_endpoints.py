"""The dashboard and the deprecated secrets endpoint: who still uses it, the sunset warning,
and the switches pushes made by themselves."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

import pytest
import time_machine

from rotation import services
from rotation.models import Installation
from tests.conftest import make_installation

URL = "/admin/redeploy/dashboard/"
NOW = datetime(2027, 3, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def fleet(alice):
    old = make_installation("icfg_old", endpoint="deprecated", resources=3)
    make_installation("icfg_old2", endpoint="deprecated", resources=2)
    make_installation("icfg_new", endpoint="current", resources=4)
    removed = make_installation("icfg_gone", endpoint="deprecated", resources=5)
    Installation.objects.filter(pk=removed.pk).update(status=Installation.Status.REMOVED)
    services.rotation_request(resource_ids=old.resources.all(), actor=alice, reason="open")
    return old


def card(page: str) -> str:
    match = re.search(r'id="figure-deprecated-endpoint"[^>]*>(.*?)</div>', page, re.S)
    assert match
    return " ".join(match.group(1).split())


def test_it_counts_active_installations_still_on_the_deprecated_endpoint(client, alice, fleet):
    client.force_login(alice)
    page = client.get(URL).content.decode()
    assert card(page).startswith(
        "Still on the deprecated secrets endpoint<strong>2</strong> installations; "
        "5 resources, 3 open rotations."
    )
    assert "/admin/rotation/installation/?endpoint__exact=deprecated&amp;status__exact=active" in (
        page
    )
    assert "deprecated-endpoint-sunset" not in page
    assert "endpoint-switches" not in page


def test_it_counts_down_to_the_sunset_then_says_it_has_come(client, alice, fleet, settings):
    settings.VERCEL_DEPRECATED_ENDPOINT_SUNSET = date(2027, 4, 1)
    with time_machine.travel(NOW, tick=False):
        client.force_login(alice)
        before = client.get(URL).content.decode()
    assert "From 2027-04-01 (in 12 days) every push goes through Vercel" in before
    assert "2 installations still set to the deprecated one." in before
    with time_machine.travel(datetime(2027, 4, 1, 0, 5, tzinfo=UTC), tick=False):
        client.force_login(alice)
        after = client.get(URL).content.decode()
    assert "Since 2027-04-01 every push goes through Vercel" in after


def test_it_lists_the_switches_pushes_made_by_themselves(
    client, alice, fleet, fake_vercel, q_sync, django_capture_on_commit_callbacks
):
    new_one = make_installation("icfg_fb", endpoint="deprecated", resources=2, product="pg")
    fake_vercel.load_from_database()
    fake_vercel.gone_deprecated = 410
    with django_capture_on_commit_callbacks(execute=True):
        services.rotation_request(resource_ids=new_one.resources.all(), actor=alice, reason="x")
    client.force_login(alice)
    page = client.get(URL).content.decode()
    table = re.search(r'<table id="endpoint-switches">(.*?)</table>', page, re.S)
    assert table
    rows = re.findall(r"<tr><td>.*?</tr>", table.group(1), re.S)
    assert len(rows) == 1
    cells = [" ".join(c.split()) for c in re.findall(r"<td>(.*?)</td>", rows[0], re.S)]
    assert cells[1:] == ["icfg_fb", "icfg_fb_res0", "410 gone", "2xx accepted"]
    assert card(page).startswith("Still on the deprecated secrets endpoint<strong>2</strong>")
