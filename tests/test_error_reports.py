"""Django's error pages (DEBUG on, as in development) show no password, token or secret."""

from __future__ import annotations

import secrets

import pytest
from django.contrib.auth.backends import ModelBackend
from django.test import Client
from django.urls import reverse

from tests.conftest import PASSWORD

# Made at run time: the error page quotes this file's source lines.
NEW_TOKEN = "vci_" + secrets.token_hex(16)


def broken(message: str):
    def explode(*args, **kwargs):
        raise RuntimeError(message)

    return explode


def error_page(response) -> str:
    page = response.content.decode()
    assert response.status_code == 500
    assert "RuntimeError" in page and "Local vars" in page  # Django's technical 500 page
    return page


@pytest.fixture
def debug_client(settings):
    settings.DEBUG = True
    return Client(raise_request_exception=False)


def test_a_failure_during_staff_log_in_does_not_show_the_password(debug_client, alice, monkeypatch):
    monkeypatch.setattr(ModelBackend, "user_can_authenticate", broken("backend broke"))

    response = debug_client.post(
        reverse("admin:login"), {"username": "alice", "password": PASSWORD, "next": "/admin/"}
    )

    assert PASSWORD not in error_page(response)


def test_a_failure_while_replacing_an_access_token_does_not_show_it(
    debug_client, root, installation, monkeypatch
):
    # The key ring fails inside crypto.encrypt, whose frame holds the token's bytes.
    monkeypatch.setattr("rotation.crypto.default_key_ring", broken("key ring broke"))
    debug_client.force_login(root)
    url = reverse("admin:rotation_installation_change", args=[installation.pk])

    response = debug_client.post(
        url,
        {
            "vercel_id": installation.vercel_id,
            "name": installation.name,
            "team_id": installation.team_id,
            "contact_email": installation.contact_email,
            "endpoint": installation.endpoint,
            "status": installation.status,
            "new_access_token": NEW_TOKEN,
        },
    )

    assert NEW_TOKEN not in error_page(response)
