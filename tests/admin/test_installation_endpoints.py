"""The installation admin and the deprecated secrets endpoint: the list's counts and filter,
the warning on the change page, and the "Switch to the current endpoint" action."""

from __future__ import annotations

from datetime import date

import pytest
from django.urls import reverse

from rotation import services
from rotation.audit import AuditAction
from rotation.models import AuditEvent, Installation
from tests.conftest import make_installation

CHANGELIST = "admin:rotation_installation_changelist"
ACTION = "switch_to_current_endpoint"


@pytest.fixture
def fleet(db, fake_vercel):
    """Installations Vercel knows: a switch to current lists their resources there first."""
    fleet = {
        "old": make_installation("icfg_old", endpoint="deprecated", resources=3),
        "old2": make_installation("icfg_old2", endpoint="deprecated", resources=1),
        "new": make_installation("icfg_new", endpoint="current", resources=2),
    }
    fake_vercel.load_from_database()
    return fleet


def endpoints() -> dict[str, str]:
    return dict(Installation.objects.values_list("vercel_id", "endpoint"))


def switch_events():
    return AuditEvent.objects.filter(action=AuditAction.INSTALLATION_ENDPOINT_SWITCHED)


def post_action(client, *installations, follow=False, **extra):
    return client.post(
        reverse(CHANGELIST),
        {"action": ACTION, "_selected_action": [i.pk for i in installations], **extra},
        follow=follow,
    )


def test_the_list_filters_deprecated_installations_with_their_counts(client, alice, fleet):
    old = fleet["old"]
    two = list(old.resources.values_list("pk", flat=True))[:2]
    services.rotation_request(resource_ids=two, actor=alice, reason="counted")
    client.force_login(alice)
    response = client.get(reverse(CHANGELIST) + "?endpoint__exact=deprecated&status__exact=active")
    assert response.status_code == 200
    rows = {
        row.vercel_id: (row._resource_count, row._open_rotation_count)
        for row in response.context["cl"].result_list
    }
    assert rows == {"icfg_old": (3, 2), "icfg_old2": (1, 0)}
    assert "Open rotations" in response.content.decode()


def test_the_change_page_of_a_deprecated_installation_warns(client, lead, fleet, settings):
    settings.VERCEL_DEPRECATED_ENDPOINT_SUNSET = date(2099, 6, 30)
    client.force_login(lead)
    page = client.get(reverse("admin:rotation_installation_change", args=[fleet["old"].pk]))
    body = page.content.decode()
    assert 'id="deprecated-endpoint-warning"' in body
    assert "still pushes secrets through Vercel&#x27;s deprecated endpoint" in body
    assert "From 2099-06-30 every push goes through the current endpoint." in body
    assert 'id="switch-endpoint"' in body
    current = client.get(reverse("admin:rotation_installation_change", args=[fleet["new"].pk]))
    assert "deprecated-endpoint-warning" not in current.content.decode()


def test_support_sees_the_warning_but_not_the_switch(client, alice, fleet):
    client.force_login(alice)
    page = client.get(reverse("admin:rotation_installation_change", args=[fleet["old"].pk]))
    body = page.content.decode()
    assert 'id="deprecated-endpoint-warning"' in body
    assert 'id="switch-endpoint"' not in body
    changelist = client.get(reverse(CHANGELIST))
    assert ACTION not in changelist.content.decode()


def test_a_support_lead_switches_in_bulk(client, lead, fleet):
    client.force_login(lead)
    assert ACTION in client.get(reverse(CHANGELIST)).content.decode()
    response = post_action(client, fleet["old"], fleet["old2"], fleet["new"], follow=True)
    assert response.status_code == 200
    assert endpoints() == {"icfg_old": "current", "icfg_old2": "current", "icfg_new": "current"}
    assert "2 installation(s) switched to the current endpoint. 1 already used it." in (
        response.content.decode()
    )
    events = switch_events().order_by("id")
    assert [(e.installation_ref, e.actor_username, e.details["source"]) for e in events] == [
        ("icfg_old", "lena", "admin"),
        ("icfg_old2", "lena", "admin"),
    ]
    assert events[0].source_ip == "127.0.0.1"


def test_a_support_lead_switches_one_from_its_page(client, lead, fleet):
    client.force_login(lead)
    old = fleet["old"]
    response = post_action(client, old, _change_page=str(old.pk), index="0")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:rotation_installation_change", args=[old.pk])
    assert endpoints()["icfg_old"] == "current"
    assert endpoints()["icfg_old2"] == "deprecated"
    assert switch_events().get().installation_ref == "icfg_old"


@pytest.mark.parametrize("persona", ["alice", "carol", "dave"])
def test_staff_without_the_permission_are_refused_and_audited(persona, request, client, fleet):
    user = request.getfixturevalue(persona)
    client.force_login(user)
    response = post_action(client, fleet["old"])
    assert response.status_code == 403
    assert endpoints()["icfg_old"] == "deprecated"
    refusal = switch_events().get()
    assert (refusal.outcome, refusal.actor_username) == ("denied", user.username)
    assert refusal.details["message"] == "You do not have permission to do this."
    assert refusal.details["selected"] == 1


def test_a_switch_through_the_change_form_is_audited_as_a_switch(client, root, fleet):
    client.force_login(root)
    old = fleet["old"]
    response = client.post(
        reverse("admin:rotation_installation_change", args=[old.pk]),
        {
            "vercel_id": "icfg_old",
            "name": old.name,
            "team_id": old.team_id,
            "contact_email": old.contact_email,
            "endpoint": "current",
            "status": "active",
            "new_access_token": "",
        },
    )
    assert response.status_code == 302
    assert endpoints()["icfg_old"] == "current"
    event = switch_events().get()
    assert (event.actor_username, event.details["from"], event.details["to"]) == (
        "root",
        "deprecated",
        "current",
    )
    assert event.details["source"] == "admin form"
