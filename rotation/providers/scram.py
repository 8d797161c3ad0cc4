"""SCRAM-SHA-256 password verifiers (RFC 5802, RFC 7677), in PostgreSQL's stored format.

A verifier is a key-derivation result, not the password: PostgreSQL stores it as given in
`CREATE ROLE ... PASSWORD 'SCRAM-SHA-256$...'`, so the password itself never appears in a
statement, a server log line or `pg_stat_statements`. No maintained SCRAM library is
installed here, so this follows the RFCs with the standard library:

    SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations)
    StoredKey      = SHA-256(HMAC(SaltedPassword, "Client Key"))
    ServerKey      = HMAC(SaltedPassword, "Server Key")
    stored as      SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>

Passwords must be printable ASCII, for which SASLprep (RFC 4013) changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

# PostgreSQL's default `scram_iterations`; the salt length PostgreSQL itself uses.
ITERATIONS = 4096
SALT_BYTES = 16


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    """Hi() of RFC 5802: PBKDF2 with HMAC-SHA-256."""
    if not password.isascii() or not password.isprintable():
        raise ValueError("SCRAM passwords here are printable ASCII (SASLprep is then a no-op)")
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


def scram_sha256_verifier(
    password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS
) -> str:
    """The verifier PostgreSQL stores for `password` (a fresh random salt unless given)."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    salted = salted_password(password, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
