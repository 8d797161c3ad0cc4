"""The Vercel stand-in, knowing the installation of `tests.vercel.stand_in`."""

import pytest

from tests.vercel.stand_in import INSTALLATION, PRODUCT, RESOURCE, TOKEN


@pytest.fixture
def fake(fake_vercel, settings):
    settings.VERCEL_READ_TIMEOUT = 0.5
    settings.VERCEL_CONNECT_TIMEOUT = 0.5
    fake_vercel.add_installation(INSTALLATION, TOKEN, {RESOURCE: PRODUCT, "res_other": "redis"})
    return fake_vercel
