"""Authenticated encryption of secrets at rest: AES-256-GCM with a key ring.

The ring comes from FIELD_ENCRYPTION_KEYS, `id:base64key` entries separated by commas; the
first key encrypts, every key decrypts. Associated data binds a ciphertext to its table,
row and purpose, so bytes copied to another row do not decrypt. Knows nothing of models.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_VERSION = b"\x01"
NONCE_BYTES = 12
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
KEY_BYTES = 32
# Base64 of either alphabet (url-safe is what generate_key writes), padding optional;
# anything else is a typo to refuse, not a character to drop.
KEY_BASE64_PATTERN = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


class CryptoError(Exception):
    """Encryption or decryption failed; the message never contains key or plaintext bytes."""


@dataclass(frozen=True)
class KeyRing:
    """Named AES-256 keys; `primary_id` encrypts."""

    keys: dict[str, bytes]
    primary_id: str

    def __repr__(self) -> str:
        return f"KeyRing(key_ids={list(self.keys)}, primary_id={self.primary_id!r})"

    def key(self, key_id: str) -> bytes:
        try:
            return self.keys[key_id]
        except KeyError:
            raise CryptoError(f"no key with id {key_id!r} in FIELD_ENCRYPTION_KEYS") from None


def parse_key_ring(spec: str) -> KeyRing:
    """Parse `id:base64key[,id:base64key...]`; the first entry is the encrypting key."""
    keys: dict[str, bytes] = {}
    for index, entry in enumerate(_ring_entries(spec)):
        key_id, key = _parse_entry(index, entry)
        if key_id in keys:
            raise CryptoError(f"key id {key_id!r} appears twice")
        keys[key_id] = key
    if not keys:
        raise CryptoError("FIELD_ENCRYPTION_KEYS holds no key")
    return KeyRing(keys=keys, primary_id=next(iter(keys)))


def key_ring_problems(spec: str, *, forbidden: KeyRing | None = None) -> list[str]:
    """Every problem of a ring spec at once, for start-up: malformed entries, repeated ids,
    and keys whose bytes are in `forbidden` (under any id). Messages hold no key bytes."""
    problems: list[str] = []
    seen: set[str] = set()
    banned = set(forbidden.keys.values()) if forbidden else set()
    for index, entry in enumerate(_ring_entries(spec)):
        try:
            key_id, key = _parse_entry(index, entry)
        except CryptoError as exc:
            problems.append(str(exc))
            continue
        if key_id in seen:
            problems.append(f"key id {key_id!r} appears twice")
        if key in banned:
            problems.append(
                f"key {key_id!r} is the development-only key published in this repository"
            )
        seen.add(key_id)
    if not problems and not seen:
        problems.append("FIELD_ENCRYPTION_KEYS holds no key")
    return problems


def _ring_entries(spec: str) -> list[str]:
    return [part.strip() for part in spec.split(",") if part.strip()]


def _parse_entry(index: int, entry: str) -> tuple[str, bytes]:
    key_id, sep, encoded = entry.partition(":")
    if not sep or not KEY_ID_PATTERN.match(key_id):
        raise CryptoError(f"FIELD_ENCRYPTION_KEYS entry {index + 1} is not id:base64key")
    return key_id, _decode_key(key_id, encoded)


def _decode_key(key_id: str, encoded: str) -> bytes:
    # Strict: a junk character is an error, never silently skipped (messages hold no key bytes).
    if not KEY_BASE64_PATTERN.match(encoded):
        raise CryptoError(f"key {key_id!r} is not base64 (stray or missing characters)")
    padded = encoded.rstrip("=")
    padded += "=" * (-len(padded) % 4)
    try:
        key = base64.b64decode(padded.translate(_URLSAFE_TO_STANDARD), validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError(f"key {key_id!r} is not valid base64 (wrong length)") from None
    if len(key) != KEY_BYTES:
        raise CryptoError(f"key {key_id!r} must be {KEY_BYTES} bytes, not {len(key)}")
    return key


@lru_cache(maxsize=4)
def _cached_ring(spec: str) -> KeyRing:
    return parse_key_ring(spec)


def default_key_ring() -> KeyRing:
    """The ring configured in settings (read at call time, never at import)."""
    from django.conf import settings

    return _cached_ring(settings.FIELD_ENCRYPTION_KEYS)


def generate_key(key_id: str) -> str:
    """A new ring entry, ready to prepend to FIELD_ENCRYPTION_KEYS."""
    if not KEY_ID_PATTERN.match(key_id):
        raise CryptoError("key ids are 1-32 letters, digits, dot, dash or underscore")
    return f"{key_id}:{base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()}"


def associated_data(table: str, row: object, purpose: str) -> bytes:
    """The context a ciphertext is bound to."""
    if row is None or row == "":
        raise CryptoError("a ciphertext must be bound to a saved row")
    return f"partnerportal|{table}|{row}|{purpose}".encode()


def encrypt(plaintext: bytes, *, aad: bytes, ring: KeyRing | None = None) -> bytes:
    """Encrypt with the ring's primary key: version | key id length | key id | nonce | ct."""
    ring = ring or default_key_ring()
    key_id = ring.primary_id.encode()
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(ring.key(ring.primary_id)).encrypt(nonce, plaintext, aad)
    return FORMAT_VERSION + bytes([len(key_id)]) + key_id + nonce + sealed


def key_id_of(blob: bytes | memoryview) -> str:
    """The id of the key that sealed `blob`."""
    blob = bytes(blob)
    if len(blob) < 2 or blob[:1] != FORMAT_VERSION:
        raise CryptoError("not a partnerportal ciphertext (unknown format)")
    length = blob[1]
    if len(blob) < 2 + length + NONCE_BYTES + 16:
        raise CryptoError("ciphertext is truncated")
    try:
        key_id = blob[2 : 2 + length].decode("ascii")
    except UnicodeDecodeError:
        raise CryptoError("ciphertext names a key id that is not ASCII") from None
    if not KEY_ID_PATTERN.match(key_id):
        raise CryptoError("ciphertext names a malformed key id")
    return key_id


def decrypt(blob: bytes | memoryview, *, aad: bytes, ring: KeyRing | None = None) -> bytes:
    """Decrypt or raise CryptoError; never returns garbage or the input."""
    ring = ring or default_key_ring()
    blob = bytes(blob)
    key_id = key_id_of(blob)
    start = 2 + len(key_id.encode())
    nonce, sealed = blob[start : start + NONCE_BYTES], blob[start + NONCE_BYTES :]
    try:
        return AESGCM(ring.key(key_id)).decrypt(nonce, sealed, aad)
    except InvalidTag:
        raise CryptoError(
            f"ciphertext failed authentication with key {key_id!r}: wrong key, tampered bytes, "
            "or a value moved from another row"
        ) from None


def needs_reencryption(blob: bytes | memoryview, ring: KeyRing | None = None) -> bool:
    """True when `blob` is sealed with a key other than the primary one."""
    ring = ring or default_key_ring()
    return key_id_of(blob) != ring.primary_id
