"""PostgreSQL roles as credentials: one login role per rotation, a member of the resource's
group role, which owns the customer's objects.

Each rotation creates the login `<role>_r<rotation id>` (keyed by the rotation, so a retry
after a crash sets a new password on the same login instead of making a second one). The
login is a member of `role` and runs `SET ROLE` to it on login (`ALTER ROLE ... SET role`),
so whatever either login creates is owned by the group role, and the old and new logins
reach the same data during the overlap. Expiry disables the old login, ends its sessions and
drops it; at rest only the current and the previous login exist.

Passwords reach PostgreSQL only as SCRAM-SHA-256 verifiers computed here
(`rotation.providers.scram`), and identifiers are quoted with `psycopg.sql`. Errors carry
PostgreSQL's message and role names, never a value.

Settings: `POSTGRES_PROVIDER_ADMIN_URL` (a role with CREATEROLE, and pg_signal_backend to
end sessions), `POSTGRES_PROVIDER_PUBLIC_HOST`, `_PORT` and `_SSLMODE` for customers' URLs.
Resource metadata: `role` (the group role) and `database`.
"""

from __future__ import annotations

import logging
import secrets as random_source
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlencode

import psycopg
from django.conf import settings
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from rotation.providers import CredentialProviderError
from rotation.providers.scram import scram_sha256_verifier
from rotation.providers.values import secret_value, secrets_from_template

if TYPE_CHECKING:
    from rotation.models import CredentialVersion, Resource

logger = logging.getLogger(__name__)

NAME_LIMIT = 63  # PostgreSQL's identifier length (NAMEDATALEN - 1)
CONNECT_TIMEOUT = 10  # seconds


class PostgresRoleProvider:
    """Create and expire login roles on the partner's PostgreSQL cluster."""

    required_settings: ClassVar[tuple[str, ...]] = ("POSTGRES_PROVIDER_ADMIN_URL",)
    metadata_fields: ClassVar[tuple[str, ...]] = ("role", "database")
    secret_names: ClassVar[tuple[str, ...] | None] = (
        "DATABASE_URL",
        "POSTGRES_URL",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
    )

    def create(self, *, resource: Resource, rotation_id: int) -> list[dict]:
        """A login for this rotation (created, or given a new password on a retry)."""
        group = str(resource.metadata["role"])
        login = login_name(group, rotation_id)
        password = random_source.token_urlsafe(32)
        verifier = sql.Literal(scram_sha256_verifier(password))
        with _admin(resource) as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [group])
            if cur.fetchone() is None:
                raise CredentialProviderError(
                    f"resource {resource.vercel_id}: group role {group!r} does not exist"
                )
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [login])
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(
                sql.SQL(verb + " ROLE {} WITH LOGIN PASSWORD {}").format(
                    sql.Identifier(login), verifier
                )
            )
            cur.execute(
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(login))
            )
            cur.execute(
                sql.SQL("ALTER ROLE {} SET role = {}").format(
                    sql.Identifier(login), sql.Literal(group)
                )
            )
        done = "created" if verb == "CREATE" else "given a new password (retry)"
        logger.info("resource %s: login role %s %s", resource.pk, login, done)
        del verifier
        return secrets_from_template(
            resource=resource,
            values=self._values(resource, login, password),
            default="DATABASE_URL",
        )

    def expire(self, *, resource: Resource, version: CredentialVersion) -> None:
        """Disable the version's login, end its sessions and drop it (idempotent)."""
        login = self._login_of(resource, version)
        ident = sql.Identifier(login)
        with _admin(resource) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [login])
            if cur.fetchone() is None:
                return  # dropped already
            cur.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(ident))
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                [login],
            )
            try:
                cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
            except psycopg.errors.DependentObjectsStillExist:
                # The login owns objects (a session ran RESET ROLE): hand them to the group.
                group = sql.Identifier(str(resource.metadata["role"]))
                cur.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(ident, group))
                cur.execute(sql.SQL("DROP OWNED BY {}").format(ident))
                cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
        logger.info("resource %s: login role %s dropped", resource.pk, login)

    @staticmethod
    def _login_of(resource: Resource, version: CredentialVersion) -> str:
        if version.rotation_id is not None:
            return login_name(str(resource.metadata["role"]), version.rotation_id)
        user = secret_value(version.secrets(), "PGUSER")
        if not user:
            raise CredentialProviderError(f"credential version {version.pk}: no login to expire")
        return user

    @staticmethod
    def _values(resource: Resource, login: str, password: str) -> dict[str, str]:
        admin = conninfo_to_dict(settings.POSTGRES_PROVIDER_ADMIN_URL)
        host = settings.POSTGRES_PROVIDER_PUBLIC_HOST or str(admin.get("host") or "localhost")
        port = str(settings.POSTGRES_PROVIDER_PUBLIC_PORT or admin.get("port") or 5432)
        database = str(resource.metadata["database"])
        query = urlencode({"sslmode": settings.POSTGRES_PROVIDER_PUBLIC_SSLMODE})
        url = (
            f"postgresql://{quote(login, safe='')}:{quote(password, safe='')}@{host}:{port}/"
            f"{quote(database, safe='')}?{query}"
        )
        return {
            "DATABASE_URL": url,
            "POSTGRES_URL": url,
            "PGHOST": host,
            "PGPORT": port,
            "PGUSER": login,
            "PGPASSWORD": password,
            "PGDATABASE": database,
        }


def login_name(group: str, rotation_id: int) -> str:
    """The login role of one rotation: the group's name and the rotation id, within 63 bytes."""
    suffix = f"_r{rotation_id}"
    return group.encode()[: NAME_LIMIT - len(suffix)].decode(errors="ignore") + suffix


class _admin:
    """An autocommit connection to the partner's cluster as the admin role; errors become
    `CredentialProviderError` with PostgreSQL's message (never a value, never the URL)."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.conn: psycopg.Connection[Any] | None = None

    def __enter__(self) -> psycopg.Connection[Any]:
        if not settings.POSTGRES_PROVIDER_ADMIN_URL:
            raise CredentialProviderError("POSTGRES_PROVIDER_ADMIN_URL is not set")
        try:
            self.conn = psycopg.connect(
                settings.POSTGRES_PROVIDER_ADMIN_URL,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT,
            )
        except psycopg.Error as exc:
            raise CredentialProviderError(
                f"cannot connect to the PostgreSQL provider: {type(exc).__name__}"
            ) from None
        return self.conn

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        assert self.conn is not None
        self.conn.close()
        if isinstance(exc, psycopg.Error):
            message = exc.diag.message_primary or type(exc).__name__
            raise CredentialProviderError(
                f"resource {self.resource.vercel_id}: PostgreSQL refused: {message}"
            ) from None
