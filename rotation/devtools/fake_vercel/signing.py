"""The stand-in's OIDC signing key, as Vercel signs the tokens it sends partners.

An RSA key made at start (RS256, a fresh `kid`), published at `/.well-known/jwks`. Tests
can rotate it: the new key signs from then on and the JWKS lists only the new one, so a
partner holding the old set must refetch. Tokens are signed with PyJWT, as partners verify.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

TOKEN_LIFETIME_SECONDS = 300


class SigningKey:
    """The current RSA key and its `kid`; safe to share between handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key, self._kid = self._new()

    @staticmethod
    def _new() -> tuple[rsa.RSAPrivateKey, str]:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048), (
            f"fake-{secrets.token_hex(6)}"
        )

    def rotate(self) -> str:
        """Sign with a new key from now on (the JWKS lists only it); returns its kid."""
        key, kid = self._new()
        with self._lock:
            self._key, self._kid = key, kid
        return kid

    @property
    def kid(self) -> str:
        with self._lock:
            return self._kid

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set with the public key, as Vercel publishes its own."""
        with self._lock:
            public = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
            kid = self._kid
        return {"keys": [{**public, "kid": kid, "use": "sig", "alg": "RS256"}]}

    def sign(self, claims: dict[str, Any], *, add_times: bool = True) -> str:
        """An RS256 token with these claims (iat, nbf and exp added unless `add_times` is
        off: tests forge tokens without them)."""
        now = int(time.time())
        times = {"iat": now, "nbf": now, "exp": now + TOKEN_LIFETIME_SECONDS} if add_times else {}
        payload = {**times, **claims}
        with self._lock:
            key, kid = self._key, self._kid
        return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})
