"""Redis ACL users as credentials: each rotation adds a password to the resource's ACL user.

Redis keeps several passwords per user, so old and new work at the same time. `create`
creates the user with the resource's key pattern when it does not exist and adds a fresh
password by its SHA-256 (`#<hash>`), so the plaintext never reaches Redis. It is keyed by
the rotation: each rotation's password hash (what `ACL GETUSER` shows anyway) is kept in
the hash `RECORD_KEY`, so a retry after a crash first removes the password the lost attempt
added. `expire` removes the old
password and disconnects the user's clients, which reconnect with the current one; clients
still holding the old password cannot log in again. At rest the user has the current and
the previous password.

Settings: `REDIS_PROVIDER_ADMIN_URL` (a user allowed to run `ACL` and `CLIENT KILL`).
Resource metadata: `acl_user`, `keys` (a key pattern) and `db`.
"""

from __future__ import annotations

import hashlib
import logging
import secrets as random_source
from typing import TYPE_CHECKING, Any, ClassVar, cast
from urllib.parse import quote, urlsplit

import redis
from django.conf import settings

from rotation.providers import CredentialProviderError
from rotation.providers.values import secret_value, secrets_from_template

if TYPE_CHECKING:
    from rotation.models import CredentialVersion, Resource

logger = logging.getLogger(__name__)

RECORD_KEY = "partnerportal:rotation-passwords:{user}"
TIMEOUT = 10  # seconds, to connect and per command
# What a customer's user may run: everything but administration and dangerous commands.
NEW_USER_RULES = ("+@all", "-@admin", "-@dangerous", "resetchannels")


def _sha256(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


class RedisAclProvider:
    """Create and expire passwords of ACL users on the partner's Redis."""

    required_settings: ClassVar[tuple[str, ...]] = ("REDIS_PROVIDER_ADMIN_URL",)
    metadata_fields: ClassVar[tuple[str, ...]] = ("acl_user", "keys", "db")
    secret_names: ClassVar[tuple[str, ...] | None] = (
        "REDIS_URL",
        "KV_URL",
        "REDIS_PASSWORD",
        "REDIS_USERNAME",
    )

    def create(self, *, resource: Resource, rotation_id: int) -> list[dict]:
        """A new password on the resource's ACL user (replacing a lost attempt's)."""
        user = str(resource.metadata["acl_user"])
        password = random_source.token_urlsafe(32)
        record = RECORD_KEY.format(user=user)
        with _admin(resource) as admin:
            found = _user(admin, user)
            lost = admin.hget(record, str(rotation_id))
            rules = [] if found else list(NEW_USER_RULES)
            if found and lost in found.get("passwords", []):
                rules.append(f"!{lost}")  # the password a lost attempt of this rotation added
            # `#<sha256>` adds the password by its hash: the plaintext never crosses to Redis.
            rules += ["on", "resetkeys", f"~{resource.metadata['keys']}", f"#{_sha256(password)}"]
            admin.hset(record, str(rotation_id), _sha256(password))
            admin.execute_command("ACL", "SETUSER", user, *rules)
        del rules
        logger.info("resource %s: password added to ACL user %s", resource.pk, user)
        return secrets_from_template(
            resource=resource, values=self._values(resource, user, password), default="REDIS_URL"
        )

    def expire(self, *, resource: Resource, version: CredentialVersion) -> None:
        """Remove the version's password and disconnect the user's clients (idempotent)."""
        user = str(resource.metadata["acl_user"])
        password = self._password_of(version)
        digest = _sha256(password)
        with _admin(resource) as admin:
            found = _user(admin, user)
            if found is not None and digest in found.get("passwords", []):
                admin.execute_command("ACL", "SETUSER", user, f"!{digest}")
            if found is not None:
                admin.execute_command("CLIENT", "KILL", "USER", user)
            if version.rotation_id is not None:
                admin.hdel(RECORD_KEY.format(user=user), str(version.rotation_id))
        logger.info("resource %s: password removed from ACL user %s", resource.pk, user)

    @staticmethod
    def _password_of(version: CredentialVersion) -> str:
        made = version.secrets()
        password = secret_value(made, "REDIS_PASSWORD")
        for name in ("REDIS_URL", "KV_URL"):
            url = secret_value(made, name)
            if not password and url:
                password = urlsplit(url).password
        if not password:
            raise CredentialProviderError(f"credential version {version.pk}: no password to expire")
        return password

    @staticmethod
    def _values(resource: Resource, user: str, password: str) -> dict[str, str]:
        admin = urlsplit(settings.REDIS_PROVIDER_ADMIN_URL)
        host = f"{admin.hostname}:{admin.port or 6379}"
        url = f"{admin.scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{host}/"
        url += str(resource.metadata["db"])
        return {"REDIS_URL": url, "KV_URL": url, "REDIS_PASSWORD": password, "REDIS_USERNAME": user}


def _user(admin: redis.Redis, user: str) -> dict[str, Any] | None:
    """`ACL GETUSER` (None when the user does not exist)."""
    return cast("dict[str, Any] | None", admin.acl_getuser(user))


class _admin:
    """A connection to the partner's Redis as the admin user; errors become
    `CredentialProviderError` with the error's class only (Redis echoes ACL rules, which
    carry the password, in its messages)."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.client: redis.Redis | None = None

    def __enter__(self) -> redis.Redis:
        if not settings.REDIS_PROVIDER_ADMIN_URL:
            raise CredentialProviderError("REDIS_PROVIDER_ADMIN_URL is not set")
        self.client = redis.Redis.from_url(
            settings.REDIS_PROVIDER_ADMIN_URL,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
            decode_responses=True,
        )
        return self.client

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        assert self.client is not None
        self.client.close()
        if isinstance(exc, redis.RedisError):
            raise CredentialProviderError(
                f"resource {self.resource.vercel_id}: Redis refused ({type(exc).__name__})"
            ) from None
