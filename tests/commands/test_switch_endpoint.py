"""`manage.py switch_endpoint`: the admin action's twin."""

from __future__ import annotations

from datetime import date
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from rotation.audit import AuditAction
from rotation.models import AuditEvent, Installation
from tests.conftest import make_installation


@pytest.fixture
def old_ones(db, fake_vercel):
    """Installations Vercel knows: a switch to current lists their resources there first."""
    installations = [
        make_installation("icfg_a", endpoint="deprecated"),
        make_installation("icfg_b", endpoint="deprecated"),
        make_installation("icfg_c", endpoint="current"),
    ]
    fake_vercel.load_from_database()
    return installations


def switch(*args: str) -> str:
    out = StringIO()
    call_command("switch_endpoint", *args, stdout=out)
    return out.getvalue()


def endpoints() -> dict[str, str]:
    return dict(Installation.objects.values_list("vercel_id", "endpoint"))


def switch_events():
    return AuditEvent.objects.filter(action=AuditAction.INSTALLATION_ENDPOINT_SWITCHED)


def test_it_switches_installations_and_audits_each(lead, old_ones):
    out = switch("icfg_a", "icfg_b", "icfg_c", "--to", "current", "--actor", "lena")
    assert out.splitlines() == [
        "icfg_a: switched to current",
        "icfg_b: switched to current",
        "icfg_c: already current",
    ]
    assert set(endpoints().values()) == {"current"}
    events = switch_events().order_by("id")
    assert [(e.installation_ref, e.actor_username, e.outcome) for e in events] == [
        ("icfg_a", "lena", "success"),
        ("icfg_b", "lena", "success"),
    ]
    assert events[0].details == {
        "from": "deprecated",
        "to": "current",
        "automatic": False,
        "source": "cli",
        "checked": True,
    }


def test_it_switches_back_to_deprecated(lead, old_ones):
    assert switch("icfg_c", "--to", "deprecated", "--actor", "lena") == (
        "icfg_c: switched to deprecated\n"
    )
    assert endpoints()["icfg_c"] == "deprecated"
    assert switch_events().get().details["from"] == "current"


def test_it_names_every_unknown_installation_and_switches_nothing(lead, old_ones):
    with pytest.raises(CommandError) as raised:
        switch("icfg_a", "icfg_nope", "icfg_gone", "--to", "current", "--actor", "lena")
    assert str(raised.value) == (
        "icfg_nope: no such installation; icfg_gone: no such installation; nothing switched"
    )
    assert endpoints()["icfg_a"] == "deprecated"
    assert not switch_events().exists()


def test_it_refuses_an_unknown_actor(old_ones):
    with pytest.raises(CommandError, match="no user 'nobody'"):
        switch("icfg_a", "--to", "current", "--actor", "nobody")


@pytest.mark.parametrize("persona", ["alice", "carol"])
def test_it_refuses_staff_without_the_permission_and_audits_it(persona, request, old_ones):
    user = request.getfixturevalue(persona)
    with pytest.raises(CommandError, match="You do not have permission to switch"):
        switch("icfg_a", "--to", "current", "--actor", user.username)
    assert endpoints()["icfg_a"] == "deprecated"
    refusal = switch_events().get()
    assert (refusal.outcome, refusal.actor_username) == ("denied", user.username)
    assert refusal.details["message"] == "You do not have permission to switch secrets endpoints."
    assert refusal.details["source"] == "cli"


def test_it_refuses_switching_back_after_the_sunset(lead, old_ones, settings):
    settings.VERCEL_DEPRECATED_ENDPOINT_SUNSET = date(2020, 1, 1)
    with pytest.raises(CommandError, match="retired here since 2020-01-01"):
        switch("icfg_c", "--to", "deprecated", "--actor", "lena")
    assert endpoints()["icfg_c"] == "current"
    assert switch_events().get().outcome == "failure"


def test_it_rejects_an_unknown_endpoint_as_a_usage_error(lead, old_ones):
    with pytest.raises(CommandError, match="invalid choice: 'legacy'"):
        switch("icfg_a", "--to", "legacy", "--actor", "lena")


def test_it_switches_only_after_vercels_current_api_answered_for_the_installation(
    lead, old_ones, fake_vercel
):
    switch("icfg_a", "--to", "current", "--actor", lead.username)
    assert [r.method for r in fake_vercel.requests] == ["GET"]
    assert fake_vercel.requests[0].path == "/v1/installations/icfg_a/resources"
    assert switch_events().get().details["checked"] is True

    unknown_to_vercel = make_installation("icfg_stranger", endpoint="deprecated")
    with pytest.raises(CommandError, match="icfg_stranger: Vercel's current API refused"):
        switch("icfg_b", "icfg_stranger", "--to", "current", "--actor", lead.username)
    assert endpoints()["icfg_b"] == "deprecated"  # all or nothing
    assert Installation.objects.get(pk=unknown_to_vercel.pk).endpoint == "deprecated"
    refusal = switch_events().filter(outcome="failure").get()
    assert "icfg_stranger: Vercel's current API refused" in refusal.details["message"]
