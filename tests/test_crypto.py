import base64

import pytest
from django.db import connection

from rotation import crypto
from rotation.crypto import CryptoError, KeyRing, parse_key_ring
from rotation.models import CredentialVersion
from tests.conftest import make_installation

OLD = crypto.generate_key("old")
NEW = crypto.generate_key("new")
AAD = crypto.associated_data("t", 1, "p")


def test_it_round_trips_and_binds_to_the_primary_key():
    ring = parse_key_ring(f"{NEW},{OLD}")
    blob = crypto.encrypt(b"s3cr3t-value", aad=AAD, ring=ring)
    assert b"s3cr3t-value" not in blob
    assert crypto.key_id_of(blob) == "new"
    assert crypto.decrypt(blob, aad=AAD, ring=ring) == b"s3cr3t-value"


def test_it_uses_a_fresh_nonce_every_time():
    ring = parse_key_ring(NEW)
    assert crypto.encrypt(b"x", aad=AAD, ring=ring) != crypto.encrypt(b"x", aad=AAD, ring=ring)


@pytest.mark.parametrize("position", [-1, -20, 10])
def test_it_rejects_tampered_bytes(position):
    ring = parse_key_ring(NEW)
    blob = bytearray(crypto.encrypt(b"s3cr3t-value", aad=AAD, ring=ring))
    blob[position] ^= 0x01
    with pytest.raises(CryptoError):
        crypto.decrypt(bytes(blob), aad=AAD, ring=ring)


def test_it_rejects_a_wrong_key_with_the_same_id():
    blob = crypto.encrypt(b"value", aad=AAD, ring=parse_key_ring(NEW))
    impostor = crypto.generate_key("new")
    with pytest.raises(CryptoError, match="failed authentication"):
        crypto.decrypt(blob, aad=AAD, ring=parse_key_ring(impostor))


def test_it_rejects_an_unknown_key_id():
    blob = crypto.encrypt(b"value", aad=AAD, ring=parse_key_ring(OLD))
    with pytest.raises(CryptoError, match="no key with id 'old'"):
        crypto.decrypt(blob, aad=AAD, ring=parse_key_ring(NEW))


def test_it_rejects_a_ciphertext_from_another_row():
    ring = parse_key_ring(NEW)
    blob = crypto.encrypt(b"value", aad=crypto.associated_data("t", 1, "p"), ring=ring)
    with pytest.raises(CryptoError):
        crypto.decrypt(blob, aad=crypto.associated_data("t", 2, "p"), ring=ring)
    with pytest.raises(CryptoError):
        crypto.decrypt(blob, aad=crypto.associated_data("t", 1, "other"), ring=ring)


@pytest.mark.parametrize("blob", [b"", b"\x02abc", b"\x01\x03new", b"plaintext-token"])
def test_it_rejects_garbage(blob):
    with pytest.raises(CryptoError):
        crypto.decrypt(blob, aad=AAD, ring=parse_key_ring(NEW))


@pytest.mark.parametrize(
    "spec",
    ["", "nokey", "a:not-base64!!", "a:" + "QUFB", f"{NEW},{NEW}", "bad id:" + NEW[4:]],
)
def test_it_refuses_bad_key_ring_specs(spec):
    with pytest.raises(CryptoError):
        parse_key_ring(spec)


@pytest.mark.parametrize("junk", ["*", " ", "\n", "\u00e9", "."])
def test_it_refuses_a_key_with_a_junk_character_instead_of_dropping_it(junk):
    key_id, _, encoded = NEW.partition(":")
    spec = f"{key_id}:{encoded[:10]}{junk}{encoded[10:]}"

    with pytest.raises(CryptoError, match="not base64") as raised:
        parse_key_ring(spec)

    assert encoded[:10] not in str(raised.value) and encoded[10:] not in str(raised.value)


def test_it_reads_keys_of_either_base64_alphabet_with_or_without_padding():
    key = bytes(range(251, 256)) + bytes(range(27))
    standard = base64.b64encode(key).decode()
    assert "+" in standard or "/" in standard
    for encoded in (standard, standard.rstrip("="), base64.urlsafe_b64encode(key).decode()):
        assert parse_key_ring(f"k:{encoded}").keys["k"] == key


@pytest.mark.parametrize("key_id", [b"n\xffw", b"a b", b""])
def test_it_refuses_a_ciphertext_whose_key_id_is_not_a_key_id(key_id):
    blob = b"\x01" + bytes([len(key_id)]) + key_id + b"0" * (crypto.NONCE_BYTES + 16)

    with pytest.raises(CryptoError, match="key id"):
        crypto.key_id_of(blob)


def test_it_lists_every_problem_of_a_key_ring_at_once():
    forbidden = parse_key_ring(OLD)
    spec = f"{NEW},garbage,short:QUFB,{OLD.replace('old:', 'reused:')},{NEW}"

    problems = crypto.key_ring_problems(spec, forbidden=forbidden)

    assert problems == [
        "FIELD_ENCRYPTION_KEYS entry 2 is not id:base64key",
        "key 'short' must be 32 bytes, not 3",
        "key 'reused' is the development-only key published in this repository",
        "key id 'new' appears twice",
    ]
    assert crypto.key_ring_problems(f"{NEW},{OLD}", forbidden=parse_key_ring(NEW)) == [
        "key 'new' is the development-only key published in this repository"
    ]
    assert crypto.key_ring_problems(" , ") == ["FIELD_ENCRYPTION_KEYS holds no key"]
    assert crypto.key_ring_problems(f"{NEW},{OLD}") == []


def test_the_key_ring_repr_shows_no_key_bytes():
    ring = parse_key_ring(NEW)
    assert isinstance(ring, KeyRing)
    assert NEW.split(":")[1] not in repr(ring)
    assert "new" in repr(ring)


def test_it_refuses_to_bind_to_an_unsaved_row():
    with pytest.raises(CryptoError):
        crypto.associated_data("t", None, "p")


def test_a_token_moved_to_another_installation_does_not_decrypt(db):
    first = make_installation("icfg_a", token="vci_token_of_a", resources=0)
    second = make_installation("icfg_b", token="vci_token_of_b", resources=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE rotation_installation SET access_token_encrypted = "
            "(SELECT access_token_encrypted FROM rotation_installation WHERE id = %s) "
            "WHERE id = %s",
            [first.pk, second.pk],
        )
    second.refresh_from_db()
    with pytest.raises(CryptoError):
        second.access_token()
    first.refresh_from_db()
    assert first.access_token() == "vci_token_of_a"


def test_a_secret_set_swapped_between_versions_does_not_decrypt(installation):
    resource_a = installation.resources.get()
    other = make_installation("icfg_other", resources=1).resources.get()
    a = CredentialVersion(resource=resource_a, stage="current")
    a.seal([{"name": "A", "value": "value-of-a"}])
    a.save()
    b = CredentialVersion(resource=other, stage="current")
    b.seal([{"name": "B", "value": "value-of-b"}])
    b.save()
    CredentialVersion.objects.filter(pk=b.pk).update(secrets_encrypted=a.secrets_encrypted)
    b.refresh_from_db()
    with pytest.raises(CryptoError):
        b.secrets()
    a.refresh_from_db()
    assert a.secrets() == [{"name": "A", "value": "value-of-a"}]
