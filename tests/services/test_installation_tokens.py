"""Rotating an installation's access token: rotate, store, check, revoke; crash-safe at
every step, resumed by a re-run or the sweeper, audited, never a token in the open."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from rotation import services
from rotation.audit import RotationRefused
from rotation.models import AuditEvent, Installation
from rotation.services import installation_tokens
from rotation.services.installation_tokens import (
    installation_token_advance,
    installation_tokens_requeue,
    installation_tokens_rotate_request,
)
from tests.conftest import raw_database_bytes

OLD = "vci_test_token_1"


class Crash(BaseException):
    """A worker dying mid-step (not an error the service handles)."""


def request(actor, installation) -> None:
    result = installation_tokens_rotate_request(
        installation_ids=[installation.pk], actor=actor, origin=None
    )
    assert result.started == [installation.vercel_id]


def actions(installation) -> list[str]:
    return list(
        AuditEvent.objects.filter(installation_ref=installation.vercel_id)
        .order_by("id")
        .values_list("action", flat=True)
    )


def assert_rotated(market, installation) -> str:
    installation.refresh_from_db()
    new = installation.access_token()
    assert new != OLD
    assert installation.token_rotation_step == ""
    assert installation.previous_access_token_encrypted == b""
    assert market.live_tokens(installation.vercel_id) == [new]
    assert market.is_revoked(installation.vercel_id, OLD)
    return new


def test_it_rotates_checks_with_the_new_token_and_revokes_the_old(
    market, lead, installation, caplog
):
    caplog.set_level("DEBUG")
    request(lead, installation)
    assert installation_token_advance(installation_id=installation.pk) == ""
    new = assert_rotated(market, installation)
    calls = [(r.operation, r.headers["Authorization"]) for r in market.requests]
    assert calls == [
        ("rotate-installation-credential", f"Bearer {OLD}"),
        ("get-integration-resources", f"Bearer {new}"),
        ("revoke-installation-credential", f"Bearer {new}"),
    ]
    assert market.requests[-1].body["token"] == OLD
    assert actions(installation) == [
        "installation.token_rotation_requested",
        "installation.token_rotated",
        "installation.token_verified",
        "installation.token_old_revoked",
    ]
    assert installation.access_token_set_at > timezone.now() - timedelta(minutes=1)
    raw = raw_database_bytes()
    assert new.encode() not in raw
    assert OLD.encode() not in raw
    assert new not in caplog.text and OLD not in caplog.text
    assert "credentials/revoke" in caplog.text


def test_it_names_the_integration_when_its_client_id_is_configured(
    market, lead, installation, settings
):
    settings.VERCEL_CLIENT_ID = "oac_partner_test"
    request(lead, installation)
    assert installation_token_advance(installation_id=installation.pk) == ""
    bodies = {r.operation: r.body for r in market.requests if r.method == "POST"}
    assert bodies["rotate-installation-credential"]["client_id"] == "oac_partner_test"
    assert bodies["revoke-installation-credential"]["client_id"] == "oac_partner_test"


def test_the_task_runs_after_the_request_commits(
    market, lead, installation, q_sync, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        request(lead, installation)
    assert_rotated(market, installation)


# Where the worker dies: the function that raises instead of returning.
CRASH_POINTS = {
    "after rotate, before storing": "_record_rotated",
    "after storing, before the check": "_check_new_token",
    "after the check, before recording it": "_record_verified",
    "before the revoke": "_revoke_old",
    "after the revoke, before recording it": "_record_revoked",
}


@pytest.mark.parametrize("where", list(CRASH_POINTS))
def test_a_crash_at_any_step_is_resumed_by_the_sweeper(
    market, lead, installation, monkeypatch, django_capture_on_commit_callbacks, where
):
    name = CRASH_POINTS[where]
    real = getattr(installation_tokens, name)

    def crash(*args, **kwargs):
        if name.startswith("_record_"):
            raise Crash  # the call landed on Vercel; our record of it did not
        raise Crash  # the worker died before making the call

    monkeypatch.setattr(installation_tokens, name, crash)
    request(lead, installation)
    with pytest.raises(Crash):
        installation_token_advance(installation_id=installation.pk)
    installation.refresh_from_db()
    # Whatever happened, a token that works is stored, and the rotation is not over.
    assert installation.access_token() in market.live_tokens(installation.vercel_id)
    assert installation.token_rotation_step != ""
    monkeypatch.setattr(installation_tokens, name, real)
    # The lease holds while the task may still be alive; then the sweeper resumes.
    assert installation_tokens_requeue() == []
    assert installation_token_advance(installation_id=installation.pk) != ""
    later = timezone.now() + services.stuck_after() + timedelta(seconds=1)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert installation_tokens_requeue(now=later) == [installation.pk]
    assert len(queued) == 1
    assert installation_token_advance(installation_id=installation.pk) == ""
    installation.refresh_from_db()
    new = installation.access_token()
    assert new != OLD
    assert installation.token_rotation_step == ""
    assert installation.previous_access_token_encrypted == b""
    assert market.is_revoked(installation.vercel_id, OLD)
    live = market.live_tokens(installation.vercel_id)
    assert new in live
    if name == "_record_rotated":
        # The token Vercel issued before the crash never reached us: it cannot be revoked
        # by us (documented); every other crash point ends with one live token.
        assert len(live) == 2
    else:
        assert live == [new]


def _raise(*args, **kwargs):
    raise Crash


def test_a_transient_error_waits_and_is_retried(market, lead, installation, settings):
    settings.ROTATION_PUSH_BACKOFF_BASE = 0.01
    request(lead, installation)
    market.respond_next(503)
    assert installation_token_advance(installation_id=installation.pk) == "requested"
    installation.refresh_from_db()
    assert installation.token_rotation_attempts == 1
    assert "503" in installation.token_rotation_error
    assert installation.token_rotation_next_attempt_at is not None
    later = timezone.now() + timedelta(seconds=5)
    assert installation_tokens_requeue(now=later) == [installation.pk]
    assert installation_token_advance(installation_id=installation.pk) == ""
    assert_rotated(market, installation)
    failed = AuditEvent.objects.get(action="installation.token_rotation_failed")
    assert failed.outcome == "failure"
    assert failed.details["status"] == 503


def test_a_permanent_error_stops_keeping_both_tokens_and_staff_resume_it(
    market, lead, installation, monkeypatch
):
    request(lead, installation)
    # Rotated, but Vercel refuses the check with the new token.
    with monkeypatch.context() as patched:
        patched.setattr(installation_tokens, "_check_new_token", _refused)
        assert installation_token_advance(installation_id=installation.pk) == "rotated"
    installation.refresh_from_db()
    assert installation.token_rotation_next_attempt_at is None
    assert "checking the new token" in installation.token_rotation_error
    assert installation.previous_access_token() == OLD
    assert installation_tokens_requeue(now=timezone.now() + timedelta(days=1)) == []
    # Asking again resumes at the step it stopped at.
    request(lead, installation)
    assert installation_token_advance(installation_id=installation.pk) == ""
    assert_rotated(market, installation)
    resumed = (
        AuditEvent.objects.filter(action="installation.token_rotation_requested")
        .order_by("id")
        .last()
    )
    assert resumed.details == {"resumed_at_step": "rotated"}


def _refused(*args, **kwargs):
    from rotation.vercel import VercelError

    raise VercelError(status=403, code="forbidden", message="Not authorized", permanent=True)


def test_it_refuses_without_the_client_secret(market, lead, installation, settings):
    settings.VERCEL_CLIENT_SECRET = ""
    with pytest.raises(RotationRefused) as caught:
        installation_tokens_rotate_request(
            installation_ids=[installation.pk], actor=lead, origin=None
        )
    assert "VERCEL_CLIENT_SECRET" in caught.value.message
    refused = AuditEvent.objects.get(action="installation.token_rotation_requested")
    assert refused.outcome == "failure"
    assert market.requests == []
    installation.refresh_from_db()
    assert installation.token_rotation_step == ""


def test_support_without_the_permission_is_refused(market, alice, installation):
    with pytest.raises(RotationRefused):
        installation_tokens_rotate_request(
            installation_ids=[installation.pk], actor=alice, origin=None
        )
    assert AuditEvent.objects.get(action="installation.token_rotation_requested").outcome == (
        "denied"
    )


def test_a_running_rotation_is_not_started_twice(market, lead, installation):
    request(lead, installation)
    again = installation_tokens_rotate_request(
        installation_ids=[installation.pk], actor=lead, origin=None
    )
    assert again.started == []
    assert again.refused == [(installation.vercel_id, "a token rotation is already running")]


def test_a_second_copy_of_the_task_does_nothing_while_the_first_holds_the_lease(
    market, lead, installation
):
    request(lead, installation)
    Installation.objects.filter(pk=installation.pk).update(
        token_rotation_lease_until=timezone.now() + timedelta(minutes=5)
    )
    assert installation_token_advance(installation_id=installation.pk) == "requested"
    assert market.requests == []
