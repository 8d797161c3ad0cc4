"""Credential providers: make new credentials in the partner's backend and expire old ones.

`ROTATION_CREDENTIAL_PROVIDER` names the provider class (a dotted path). A provider offers:

- `create(*, resource) -> list[dict]`: new credentials, already valid in the partner's backend
  (the old ones keep working), as Vercel's `secrets` list (`name`, `value`, optional
  `prefix` and `environmentOverrides`).
- `expire(*, resource, version) -> None`: revoke the credentials of a `CredentialVersion`
  (called while its ciphertext is still readable; the caller wipes it afterwards).
- optionally `verify(*, resource, secrets) -> bool`: check that new credentials work.

Mapping of a resource's `secret_template` (entries `{"name", "prefix", "environments"}`) to
the secret list, used by `RandomCredentialProvider`:

- The provider makes one credential (user and password) per environment that any template
  entry lists (an entry with no `environments` means all three), so a leaked preview value
  does not open production.
- Each entry becomes one secret. Its `value` is the value of its *least* privileged listed
  environment (development < preview < production); the other listed environments get their
  own values through `environmentOverrides`. An environment an entry does not list therefore
  receives the base value, never production's, unless production is the only one listed.
- The value by name: a name ending in `URL` is a composed `postgres://user:password@host/db`
  URL; a name containing `PASSWORD` (or `SECRET`, `TOKEN`, `KEY`) is the password; a name
  ending in `USER` or `USERNAME` is the user; `HOST`, `PORT` and `DATABASE` give those parts;
  any other name gets its own random value.
"""

from __future__ import annotations

import logging
import secrets as random_source
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from rotation.contract import ENVIRONMENTS

if TYPE_CHECKING:
    from rotation.models import CredentialVersion, Resource

logger = logging.getLogger(__name__)

# Least privileged first: the base `value` of a secret comes from the first listed one.
PRIVILEGE_ORDER = ("development", "preview", "production")
PASSWORD_WORDS = ("PASSWORD", "SECRET", "TOKEN", "KEY")
DEMO_DB_PORT = "5432"


class CredentialProviderError(Exception):
    """The partner's backend could not create, expire or verify credentials."""


class CredentialProvider(Protocol):
    def create(self, *, resource: Resource) -> list[dict]: ...

    def expire(self, *, resource: Resource, version: CredentialVersion) -> None: ...


@dataclass(frozen=True)
class ExpiryRecord:
    """What the demo provider remembers of an expiry (ids only)."""

    resource_id: int
    version_id: str
    expired_at: Any


class RandomCredentialProvider:
    """Demo and test provider: strong random values per template; remembers expiries."""

    # Process-wide, like a real backend's own record; tests read and clear it.
    expiries: list[ExpiryRecord] = []
    _lock = threading.Lock()

    def create(self, *, resource: Resource) -> list[dict]:
        """A fresh secret set for `resource`, following the mapping in the module docstring."""
        template = resource.secret_template or [{"name": "DATABASE_URL", "prefix": ""}]
        wanted = {env for entry in template for env in _environments(entry)}
        accounts = {env: self._account(resource, env) for env in PRIVILEGE_ORDER if env in wanted}
        result: list[dict] = []
        for entry in template:
            envs = [env for env in PRIVILEGE_ORDER if env in _environments(entry)]
            values = {env: _value_for(entry["name"], accounts[env]) for env in envs}
            secret: dict[str, Any] = {"name": entry["name"], "value": values[envs[0]]}
            if entry.get("prefix"):
                secret["prefix"] = entry["prefix"]
            overrides = {env: values[env] for env in envs[1:]}
            if overrides:
                secret["environmentOverrides"] = overrides
            result.append(secret)
        return result

    def expire(self, *, resource: Resource, version: CredentialVersion) -> None:
        """Record that the version's credentials no longer work."""
        with self._lock:
            self.expiries.append(
                ExpiryRecord(
                    resource_id=resource.pk, version_id=str(version.pk), expired_at=timezone.now()
                )
            )
        logger.info("credentials expired: resource %s version %s", resource.pk, version.pk)

    def verify(self, *, resource: Resource, secrets: list[dict]) -> bool:
        """Every template entry is present exactly once with a non-empty value."""
        names = [secret.get("name") for secret in secrets]
        template = resource.secret_template or [{"name": "DATABASE_URL"}]
        return sorted(names) == sorted(entry["name"] for entry in template) and all(
            isinstance(secret.get("value"), str) and secret["value"] for secret in secrets
        )

    @classmethod
    def expired_version_ids(cls) -> list[str]:
        with cls._lock:
            return [record.version_id for record in cls.expiries]

    @staticmethod
    def _account(resource: Resource, env: str) -> dict[str, str]:
        suffix = random_source.token_hex(4)
        return {
            "user": f"r{resource.pk}_{env[:4]}_{suffix}",
            "password": random_source.token_urlsafe(32),
            "host": f"{env}.{resource.product}.db.partner.example",
            "database": f"db_{resource.pk}",
        }


def _environments(entry: dict) -> list[str]:
    listed = [env for env in entry.get("environments") or [] if env in ENVIRONMENTS]
    return listed or list(ENVIRONMENTS)


def _value_for(name: str, account: dict[str, str]) -> str:
    upper = name.upper()
    if upper.endswith("URL"):
        return (
            f"postgres://{account['user']}:{account['password']}@{account['host']}:"
            f"{DEMO_DB_PORT}/{account['database']}?sslmode=require"
        )
    if any(word in upper for word in PASSWORD_WORDS):
        return account["password"]
    if upper.endswith(("USER", "USERNAME")):
        return account["user"]
    if upper.endswith("HOST"):
        return account["host"]
    if upper.endswith("PORT"):
        return DEMO_DB_PORT
    if upper.endswith(("DATABASE", "DB", "DBNAME")):
        return account["database"]
    return random_source.token_urlsafe(32)


def get_provider() -> Any:
    """An instance of the configured provider (read at call time)."""
    return import_string(settings.ROTATION_CREDENTIAL_PROVIDER)()
