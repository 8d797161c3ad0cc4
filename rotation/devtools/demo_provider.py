"""The demo credential provider (development and tests only): random values, nothing real.

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
from collections import Counter
from typing import Any, ClassVar

from rotation.models import CredentialVersion, Resource
from rotation.vercel.contract import ENVIRONMENTS

logger = logging.getLogger(__name__)

# Least privileged first: the base `value` of a secret comes from the first listed one.
PRIVILEGE_ORDER = ("development", "preview", "production")
PASSWORD_WORDS = ("PASSWORD", "SECRET", "TOKEN", "KEY")
DEMO_DB_PORT = "5432"


class RandomCredentialProvider:
    """Demo and test provider: strong random values per template; expiring only logs."""

    metadata_fields: ClassVar[tuple[str, ...]] = ()
    secret_names: ClassVar[tuple[str, ...] | None] = None  # any name (see the mapping above)

    def create(self, *, resource: Resource, rotation_id: int | None = None) -> list[dict]:
        """A fresh secret set for `resource`, following the mapping in the module docstring.

        Nothing is made anywhere, so a second call for the same rotation leaves nothing over.
        """
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
        """Nothing to revoke: these credentials open nothing."""
        logger.info("credentials expired: resource %s version %s", resource.pk, version.pk)

    def verify(self, *, resource: Resource, secrets: list[dict]) -> bool:
        """Every template entry is present exactly once with a non-empty value."""
        names = Counter(secret.get("name") for secret in secrets)
        template = resource.secret_template or [{"name": "DATABASE_URL"}]
        return names == Counter(entry["name"] for entry in template) and all(
            isinstance(secret.get("value"), str) and secret["value"] for secret in secrets
        )

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
