"""Tokens as Vercel signs them (and as an attacker would forge them), and the call itself."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def rotate_url(installation_id: str, resource_id: str) -> str:
    return f"/v1/installations/{installation_id}/resources/{resource_id}/secrets/rotate"


def claims_for(fake, for_installation: str, *, role: str = "ADMIN", **changes: Any) -> dict:
    """Valid claims for the stand-in's issuer; `changes` replace some (None removes one)."""
    now = int(time.time())
    claims = {
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        **fake.partner.claims(for_installation, role=role),
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def signed(fake, claims: dict) -> str:
    """Signed with the stand-in's current key (as Vercel signs)."""
    return fake.partner.key.sign(claims, add_times=False)


def signed_by_stranger(fake, claims: dict) -> str:
    """Signed with a key generated here, under the stand-in's kid: a wrong signature."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": fake.partner.key.kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(fake, claims: dict) -> str:
    """`alg: none`: no signature at all."""
    header = {"alg": "none", "typ": "JWT", "kid": fake.partner.key.kid}
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."


def hs256_with_public_key(fake, claims: dict) -> str:
    """The classic confusion: HS256 keyed with the RSA public key (PEM) the JWKS publishes.

    Built by hand: PyJWT itself refuses to use a PEM public key as an HMAC secret.
    """
    public_jwk = fake.partner.key.jwks()["keys"][0]
    public = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(public_jwk))
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": fake.partner.key.kid}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def post_rotate(
    client, installation_id: str, resource_id: str, token: str | None, body=None, **headers
):
    """POST the rotate request through Django's test client."""
    extra = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
    if token is not None:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    data = body if isinstance(body, bytes | str) else json.dumps({} if body is None else body)
    return client.post(
        rotate_url(installation_id, resource_id),
        data=data,
        content_type="application/json",
        **extra,
    )
