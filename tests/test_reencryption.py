import pytest
from django.core.management import call_command

from rotation import crypto
from rotation.crypto import CryptoError
from rotation.models import CredentialVersion, Installation
from tests.conftest import make_installation

OLD = crypto.generate_key("k2025")
NEW = crypto.generate_key("k2026")


@pytest.fixture
def old_data(db, settings):
    settings.FIELD_ENCRYPTION_KEYS = OLD
    installation = make_installation("icfg_rk", token="vci_rekey_token", resources=2)
    for resource in installation.resources.all():
        version = CredentialVersion(resource=resource, stage="current")
        version.seal([{"name": "PGPASSWORD", "value": f"pw-{resource.vercel_id}"}])
        version.save()
    return installation


def test_an_old_key_still_decrypts_after_a_new_key_is_added(old_data, settings):
    settings.FIELD_ENCRYPTION_KEYS = f"{NEW},{OLD}"
    installation = Installation.objects.get(pk=old_data.pk)
    assert installation.access_token() == "vci_rekey_token"
    assert installation.access_token_key_id == "k2025"


def test_reencrypt_moves_everything_to_the_newest_key_and_the_old_key_can_go(
    old_data, settings, capsys
):
    settings.FIELD_ENCRYPTION_KEYS = f"{NEW},{OLD}"
    call_command("reencrypt_secrets", "--chunk-size", "1")
    assert "Re-encrypted 1 access tokens and 2 credential versions" in capsys.readouterr().out
    settings.FIELD_ENCRYPTION_KEYS = NEW
    installation = Installation.objects.get(pk=old_data.pk)
    assert installation.access_token() == "vci_rekey_token"
    assert installation.access_token_key_id == "k2026"
    values = sorted(v.secrets()[0]["value"] for v in CredentialVersion.objects.all())
    assert values == ["pw-icfg_rk_res0", "pw-icfg_rk_res1"]
    assert set(CredentialVersion.objects.values_list("key_id", flat=True)) == {"k2026"}


def test_a_second_run_has_nothing_left_to_do(old_data, settings, capsys):
    settings.FIELD_ENCRYPTION_KEYS = f"{NEW},{OLD}"
    call_command("reencrypt_secrets")
    capsys.readouterr()
    call_command("reencrypt_secrets")
    out = capsys.readouterr().out
    assert "Re-encrypted 0 access tokens and 0 credential versions; 3 were already" in out


def test_without_the_old_key_nothing_decrypts(old_data, settings):
    settings.FIELD_ENCRYPTION_KEYS = NEW
    with pytest.raises(CryptoError):
        Installation.objects.get(pk=old_data.pk).access_token()


def test_it_stops_with_an_error_when_a_value_cannot_be_decrypted(old_data, settings):
    settings.FIELD_ENCRYPTION_KEYS = NEW  # the old key is missing
    with pytest.raises(Exception, match="stopped: no key with id 'k2025'"):
        call_command("reencrypt_secrets")
