"""Checking the OIDC token Vercel sends when it calls us (Request Secrets Rotation).

PyJWT does the cryptography and the standard claims: RS256 only (so `alg: none` and an
HS256 token keyed with the public key are refused before any key is used), `iss`, `aud`,
`exp`, `nbf` and `iat` with a small leeway. Vercel's keys come from its JWKS through
PyJWT's `PyJWKClient`: cached, refetched for an unknown `kid` at most once per
VERCEL_OIDC_JWKS_REFETCH_SECONDS, and never followed through a redirect. This module then
checks Vercel's own claims: the installation, who is asking and their role.

The JWKS fetch is the only network call. It needs no models, and nothing here logs a token.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import jwt
from django.conf import settings
from jwt import PyJWK, PyJWKClient

from rotation.audit.origin import VercelActor
from rotation.vercel.client import USER_AGENT, is_https_or_loopback

ALGORITHMS = ["RS256"]
# Clock skew allowed on exp, nbf and iat.
LEEWAY_SECONDS = 30
REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "sub", "account_id", "installation_id"]
# Contract §5: a system token's subject is `account:<hex>`, a user's `account:<hex>:user:<hex>`.
SYSTEM_SUBJECT = re.compile(r"account:[0-9a-f]+", re.IGNORECASE)
USER_SUBJECT = re.compile(r"account:[0-9a-f]+:user:[0-9a-f]+", re.IGNORECASE)
ALLOWED_ROLE = "ADMIN"
# What a refused token is told (first match wins; anything else is "not valid").
DECODE_REFUSALS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "The token has expired."),
    (jwt.ImmatureSignatureError, "The token is not valid yet."),
    (jwt.InvalidAudienceError, "The token is meant for another integration (aud)."),
    (jwt.InvalidIssuerError, "The token was not issued by Vercel (iss)."),
    (jwt.InvalidSignatureError, "The token's signature is not valid."),
)


class NotConfigured(Exception):
    """The endpoint cannot check tokens: VERCEL_CLIENT_ID is unset or the JWKS URL unsafe."""


class KeysUnavailable(Exception):
    """Vercel's JWKS could not be fetched or read; Vercel should retry later (503)."""


class TokenRefused(Exception):
    """The token is refused: `status` 401 (not a valid Vercel token for us) or 403 (valid,
    but its holder may not do this). `message` is safe to send back and to audit."""

    def __init__(self, status: int, message: str, *, actor: VercelActor | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.actor = actor


_clients: dict[tuple[str, float, float, float], PyJWKClient] = {}
_clients_lock = threading.Lock()


def _jwks_client() -> PyJWKClient:
    """One client per JWKS URL and cache settings, shared by the process's threads."""
    url = settings.VERCEL_OIDC_JWKS_URL
    if not is_https_or_loopback(url):
        raise NotConfigured("VERCEL_OIDC_JWKS_URL must be https:// (plain http:// only locally)")
    key = (
        url,
        float(settings.VERCEL_OIDC_JWKS_CACHE_SECONDS),
        float(settings.VERCEL_OIDC_JWKS_REFETCH_SECONDS),
        float(settings.VERCEL_READ_TIMEOUT),
    )
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            # Reference: https://pyjwt.readthedocs.io/en/stable/usage.html#retrieve-rsa-signing-keys-from-a-jwks-endpoint
            client = _clients[key] = PyJWKClient(
                url,
                cache_jwk_set=True,
                lifespan=max(key[1], 1.0),
                cooldown_duration=key[2],
                timeout=key[3],
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            )
        return client


def _unavailable(exc: Exception) -> KeysUnavailable:
    return KeysUnavailable(f"Vercel's signing keys are unavailable ({type(exc).__name__})")


def _signing_key(kid: str) -> PyJWK:
    """The key named `kid`; an unknown one triggers one bounded refetch of the JWKS."""
    client = _jwks_client()
    try:
        # Reference: https://marketplace.vercel.com/.well-known/jwks
        key = client.match_kid(client.get_signing_keys(), kid)
    except (jwt.PyJWKClientError, jwt.PyJWKSetError, ValueError) as exc:
        raise _unavailable(exc) from None
    if key is not None:
        return key
    try:
        return client.get_signing_key(kid)  # refetches unless one happened moments ago
    except jwt.PyJWKClientConnectionError as exc:
        raise _unavailable(exc) from None
    except (jwt.PyJWKClientError, jwt.PyJWKSetError, ValueError):
        raise TokenRefused(401, "The token is signed with a key Vercel does not publish.") from None


def _decode(token: str, key: PyJWK) -> dict[str, Any]:
    try:
        return jwt.decode(
            token,
            key=key,
            algorithms=ALGORITHMS,
            audience=settings.VERCEL_CLIENT_ID,
            issuer=settings.VERCEL_OIDC_ISSUER,
            leeway=LEEWAY_SECONDS,
            options={"require": REQUIRED_CLAIMS, "strict_aud": False},
        )
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRefused(401, f"The token lacks the {exc.claim!r} claim.") from None
    except jwt.PyJWTError as exc:
        message = next(
            (text for kind, text in DECODE_REFUSALS if isinstance(exc, kind)),
            "The token is not valid.",
        )
        raise TokenRefused(401, message) from None


def _text_claim(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name, "")
    if not isinstance(value, str):
        raise TokenRefused(401, f"The token's {name!r} claim must be a string.")
    return value


def _actor_of(claims: dict[str, Any]) -> VercelActor:
    """Who the verified claims name; refuses subjects and roles the contract does not allow."""
    names = ("sub", "account_id", "installation_id", "user_id", "user_role", "user_email")
    text = {name: _text_claim(claims, name) for name in (*names, "user_name")}
    actor = VercelActor(**text)
    if SYSTEM_SUBJECT.fullmatch(actor.sub):
        if actor.user_id:
            raise TokenRefused(401, "A system token must not name a user.")
        return VercelActor(
            sub=actor.sub, account_id=actor.account_id, installation_id=actor.installation_id
        )
    if not USER_SUBJECT.fullmatch(actor.sub):
        raise TokenRefused(401, "The token's subject is neither a Vercel user nor a system.")
    for name in ("user_id", "user_role"):
        if not text[name]:
            raise TokenRefused(401, f"The token lacks the {name!r} claim.")
    if actor.user_role != ALLOWED_ROLE:
        raise TokenRefused(
            403,
            f"Vercel role {actor.user_role[:32]!r} may not rotate secrets; an ADMIN may.",
            actor=actor,
        )
    return actor


def vercel_token_verify(*, token: str, installation_id: str) -> VercelActor:
    """The actor of a valid Vercel token for `installation_id`.

    Raises NotConfigured, KeysUnavailable, or TokenRefused (401 or 403).
    """
    if not settings.VERCEL_CLIENT_ID:
        raise NotConfigured("VERCEL_CLIENT_ID is not set")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenRefused(401, "The bearer token is not a JWT.") from None
    if header.get("alg") not in ALGORITHMS:
        raise TokenRefused(401, "The token must be signed with RS256.")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenRefused(401, "The token names no signing key (kid).")
    claims = _decode(token, _signing_key(kid))
    actor = _actor_of(claims)
    if actor.installation_id != installation_id:
        raise TokenRefused(403, "The token is for another installation.", actor=actor)
    return actor
