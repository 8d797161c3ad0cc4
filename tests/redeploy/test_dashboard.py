"""The rotation dashboard: its numbers match the data; only staff who may view rotations see it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from rotation.models import Rotation, RotationBatch
from rotation.redeploy.dashboard import dashboard_figures

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
URL = "/admin/redeploy/dashboard/"
State = Rotation.State


def rotation_at(resource, batch, *, created: datetime, state: str, **fields) -> Rotation:
    with time_machine.travel(created, tick=False):
        rotation = Rotation.objects.create(batch=batch, resource=resource, state=state, **fields)
    return rotation


@pytest.fixture
def data(db):
    from tests.conftest import make_installation

    installation = make_installation(resources=8)
    resources = list(installation.resources.all())
    batch = RotationBatch.objects.create(reason="dashboard")
    made = {
        "oldest": rotation_at(
            resources[0],
            batch,
            created=NOW - timedelta(days=20),
            state=State.ESCALATED,
            pushed_at=NOW - timedelta(days=20),
            redeploy_deadline_at=NOW - timedelta(days=6),
        ),
        "waiting": rotation_at(
            resources[1],
            batch,
            created=NOW - timedelta(days=2),
            state=State.AWAITING_REDEPLOY,
            pushed_at=NOW - timedelta(days=2),
            redeploy_deadline_at=NOW + timedelta(days=12),
        ),
        "late": rotation_at(
            resources[2],
            batch,
            created=NOW - timedelta(days=15),
            state=State.AWAITING_REDEPLOY,
            pushed_at=NOW - timedelta(days=15),
            redeploy_deadline_at=NOW - timedelta(hours=1),
        ),
        "failed_recent": rotation_at(
            resources[3],
            batch,
            created=NOW - timedelta(hours=3),
            state=State.FAILED,
            state_changed_at=NOW - timedelta(hours=2),
        ),
        "failed_old": rotation_at(
            resources[4],
            batch,
            created=NOW - timedelta(days=2),
            state=State.FAILED,
            state_changed_at=NOW - timedelta(hours=30),
        ),
        "done": rotation_at(
            resources[5], batch, created=NOW - timedelta(days=2), state=State.COMPLETED
        ),
        "ancient": rotation_at(
            resources[6], batch, created=NOW - timedelta(days=45), state=State.COMPLETED
        ),
        "expiring": rotation_at(
            resources[7],
            batch,
            created=NOW,
            state=State.EXPIRING,
            last_error="Expiring the old credentials failed: boom",
        ),
    }
    return made


def test_it_counts_what_the_data_says(data):
    figures = dashboard_figures(now=NOW)

    assert figures["awaiting_count"] == 3
    assert figures["awaiting_oldest"] == data["oldest"]
    assert figures["overdue_count"] == 2
    assert figures["escalated_count"] == 1
    assert figures["failed_24h_count"] == 1
    assert figures["expiry_failing_count"] == 1
    per_day = dict(figures["per_day"])
    assert len(per_day) == 30
    assert min(per_day) == (NOW - timedelta(days=29)).date()
    assert max(per_day) == NOW.date()
    assert per_day[NOW.date()] == 2  # failed_recent (3 h ago, same day) and expiring
    assert per_day[(NOW - timedelta(days=2)).date()] == 3
    assert per_day[(NOW - timedelta(days=15)).date()] == 1
    assert per_day[(NOW - timedelta(days=20)).date()] == 1
    assert sum(per_day.values()) == 7  # the 45-day-old rotation is outside the window


def test_it_shows_the_numbers_and_an_inline_svg_chart(client, data, alice):
    client.force_login(alice)
    with time_machine.travel(NOW, tick=False):
        response = client.get(URL)

    assert response.status_code == 200
    page = response.content.decode()

    def figure(name: str) -> int:
        match = re.search(rf'id="figure-{name}">[^<]*<strong>(\d+)</strong>', page)
        assert match, name
        return int(match.group(1))

    assert figure("awaiting") == 3
    assert figure("overdue") == 2
    assert figure("failed") == 1
    assert figure("expiry-failing") == 1
    assert f"/admin/rotation/rotation/{data['oldest'].pk}/change/" in page
    assert '<svg xmlns="http://www.w3.org/2000/svg" id="rotations-per-day"' in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing from a CDN
    bars = re.findall(r'<rect class="bar"[^>]*><title>([\d-]+): (\d+)</title>', page)
    assert len(bars) == 30
    assert dict(bars)[NOW.date().isoformat()] == "2"
    assert sum(int(count) for _, count in bars) == 7


def test_it_is_only_for_staff_who_may_view_rotations(client, data, dave, carol):
    client.force_login(dave)
    assert client.get(URL).status_code == 403
    client.force_login(carol)
    assert client.get(URL).status_code == 403
    client.logout()
    assert client.get(URL).status_code == 302  # to the login page


def test_it_links_the_dashboard_from_the_admin_index(client, alice, dave):
    client.force_login(alice)
    assert URL in client.get("/admin/").content.decode()
    client.force_login(dave)
    assert URL not in client.get("/admin/").content.decode()
