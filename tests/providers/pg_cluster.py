"""A namespaced corner of the real PostgreSQL at 127.0.0.1:5432 for the provider tests.

Role names are cluster-global, so every role and the schema start with `pp_prov_<random>`,
and everything is dropped afterwards. Authentication is `trust` here: PostgreSQL does not
check passwords, so tests check verifiers with a SCRAM exchange computed locally.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import psycopg
from psycopg import sql

# The database every machine and CI has (README: PostgreSQL at 127.0.0.1:5432, database `test`).
DATABASE = "test"
SUPERUSER_URL = f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"


@dataclass
class Cluster:
    ns: str
    admin: str
    owner: str
    schema: str

    def superuser(self) -> psycopg.Connection:
        return psycopg.connect(SUPERUSER_URL, autocommit=True)

    def logins(self) -> list[str]:
        with self.superuser() as conn:
            rows = conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE %s ORDER BY rolname",
                [self.owner + "\\_r%"],
            ).fetchall()
        return [row[0] for row in rows]

    def role(self, name: str) -> tuple | None:
        with self.superuser() as conn:
            return conn.execute(
                "SELECT a.rolcanlogin, a.rolpassword, r.rolconfig FROM pg_authid a"
                " JOIN pg_roles r ON r.oid = a.oid WHERE a.rolname = %s",
                [name],
            ).fetchone()


def admin_url_of(cluster: Cluster) -> str:
    return f"postgresql://{cluster.admin}@127.0.0.1:5432/{DATABASE}"


def make_cluster() -> Cluster:
    ns = f"pp_prov_{secrets.token_hex(3)}"
    cluster = Cluster(ns=ns, admin=f"{ns}_admin", owner=f"{ns}_owner", schema=ns)
    with cluster.superuser() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE").format(sql.Identifier(cluster.admin))
        )
        conn.execute(sql.SQL("GRANT pg_signal_backend TO {}").format(sql.Identifier(cluster.admin)))
    admin_url = admin_url_of(cluster)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(cluster.owner)))
    with cluster.superuser() as conn:
        conn.execute(
            sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
                sql.Identifier(cluster.schema), sql.Identifier(cluster.owner)
            )
        )
    return cluster


def drop_cluster(cluster: Cluster) -> None:
    with cluster.superuser() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename LIKE %s",
            [cluster.ns + "%"],
        )
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(cluster.ns)))
        roles = conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE %s ORDER BY length(rolname) DESC",
            [cluster.ns + "%"],
        ).fetchall()
        for (role,) in roles:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def scram_login_succeeds(verifier: str, password: str) -> bool:
    """Play both sides of a SCRAM-SHA-256 exchange (RFC 5802 section 3): the client proves
    `password` against the server's stored `verifier`, as PostgreSQL checks it."""
    method, rest = verifier.split("$", 1)
    assert method == "SCRAM-SHA-256"
    iterations_salt, keys = rest.split("$")
    iterations, salt_b64 = iterations_salt.split(":")
    stored_key = base64.b64decode(keys.split(":")[0])
    salt = base64.b64decode(salt_b64)
    # Client side: derive from the password, sign the exchange.
    auth_message = b"n=,r=client-nonce,r=client-nonceserver,s=" + salt_b64.encode() + b",i=4096"
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    signature = hmac.new(hashlib.sha256(client_key).digest(), auth_message, hashlib.sha256)
    proof = bytes(a ^ b for a, b in zip(client_key, signature.digest(), strict=True))
    # Server side: recover ClientKey from the proof with the stored key only.
    server_signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    recovered = bytes(a ^ b for a, b in zip(proof, server_signature, strict=True))
    return hmac.compare_digest(hashlib.sha256(recovered).digest(), stored_key)
