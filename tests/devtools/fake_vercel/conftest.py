"""The stand-in knowing the installation of `api_calls`, and a plain HTTP session."""

import pytest
import requests

from tests.devtools.fake_vercel.api_calls import INSTALLATION, PRODUCT, RESOURCE, TOKEN


@pytest.fixture
def fake(fake_vercel):
    fake_vercel.add_installation(INSTALLATION, TOKEN, {RESOURCE: PRODUCT})
    return fake_vercel


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session
