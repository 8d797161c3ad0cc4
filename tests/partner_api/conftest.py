"""Vercel calling us: the stand-in signs tokens and serves its JWKS; the portal checks them."""

from __future__ import annotations

import pytest

from tests.partner_api.tokens import CLIENT_ID


@pytest.fixture
def vercel_oidc(settings, fake_vercel):
    """The portal trusts the stand-in's keys (JWKS on 127.0.0.1) as it trusts Vercel's."""
    settings.VERCEL_CLIENT_ID = CLIENT_ID
    settings.VERCEL_OIDC_JWKS_URL = fake_vercel.jwks_url
    settings.VERCEL_OIDC_ISSUER = fake_vercel.url
    settings.VERCEL_OIDC_JWKS_REFETCH_SECONDS = 0
    fake_vercel.partner.client_id = CLIENT_ID
    return fake_vercel
