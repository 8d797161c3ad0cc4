"""Who acted and from where: the domain values services take instead of an HTTP request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from django.conf import settings

from rotation.audit.chain import clean_ip

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
    from django.http import HttpRequest

# Staff act as Django users; a refused caller may be anonymous or missing.
Actor: TypeAlias = "User"
MaybeActor: TypeAlias = "User | AbstractBaseUser | AnonymousUser | None"


@dataclass(frozen=True)
class Origin:
    """Where a request came from: source IP, user agent and request id (all optional)."""

    ip: str | None = None
    user_agent: str = ""
    request_id: str = ""

    @classmethod
    def of(cls, request: HttpRequest | None) -> Origin | None:
        """The origin of an HTTP request (views and admin call this, services never do)."""
        if request is None:
            return None
        meta = request.META
        return cls(
            ip=client_ip(meta, trusted_proxies=settings.TRUSTED_PROXY_COUNT),
            user_agent=str(meta.get("HTTP_USER_AGENT", "")),
            request_id=str(meta.get("HTTP_X_REQUEST_ID", "")),
        )


def client_ip(meta: Mapping[str, Any], *, trusted_proxies: int) -> str | None:
    """The client's address: REMOTE_ADDR, or behind `trusted_proxies` proxies the entry of
    X-Forwarded-For the outermost of them wrote (entries further left are the client's say)."""
    forwarded = str(meta.get("HTTP_X_FORWARDED_FOR") or "")
    if trusted_proxies <= 0 or not forwarded.strip():
        return clean_ip(meta.get("REMOTE_ADDR"))
    # Each proxy appends the address it was connected from; ours wrote the right-most ones.
    entries = [entry.strip() for entry in forwarded.split(",")]
    return clean_ip(entries[max(len(entries) - trusted_proxies, 0)])


def actor_may(actor: MaybeActor, permission: str) -> bool:
    """Whether an active, signed-in actor holds `permission`."""
    has_perm = getattr(actor, "has_perm", None)
    return bool(
        has_perm is not None
        and getattr(actor, "is_active", False)
        and getattr(actor, "is_authenticated", False)
        and has_perm(permission)
    )


@dataclass(frozen=True)
class VercelActor:
    """Who asked through Vercel, from a verified OIDC token: a Vercel user (ADMIN role) or
    Vercel itself (a system token, `sub` = `account:<id>`)."""

    sub: str
    account_id: str
    installation_id: str
    user_id: str = ""
    user_role: str = ""
    user_email: str = ""
    user_name: str = ""

    @property
    def is_system(self) -> bool:
        return not self.user_id

    @property
    def username(self) -> str:
        """The name audit events and batches show: `vercel:` and the user's email or id."""
        if self.is_system:
            return f"vercel:{self.sub}"
        return f"vercel:{self.user_email or self.user_id}"

    def audit_details(self) -> dict[str, str]:
        """The token's identity claims (never the token), for the audit trail."""
        details = {
            "auth": "system" if self.is_system else "user",
            "sub": self.sub,
            "account_id": self.account_id,
            "user_id": self.user_id,
            "user_role": self.user_role,
            "user_email": self.user_email,
            "user_name": self.user_name,
        }
        return {key: value for key, value in details.items() if value}
