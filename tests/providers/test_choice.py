"""Choosing the credential provider: a dotted path read at call time."""

from rotation.devtools.demo_provider import RandomCredentialProvider
from rotation.providers import get_provider
from tests.provider_doubles import PartnerBackendProvider


def test_it_loads_the_configured_provider_at_call_time(settings):
    assert isinstance(get_provider(), RandomCredentialProvider)
    settings.ROTATION_CREDENTIAL_PROVIDER = "tests.provider_doubles.PartnerBackendProvider"
    assert isinstance(get_provider(), PartnerBackendProvider)
