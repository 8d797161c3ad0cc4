"""Audit sign-ins, sign-outs, failed sign-ins and lockouts (django.contrib.auth and
django-axes signals).

Throttling (django-axes, configured in settings) bounds what an unauthenticated caller can
add to the trail: each failure is audited until the user name and IP are locked out, the
lockout is audited once, and attempts made while locked out are not audited at all.
"""

from __future__ import annotations

from typing import Any

from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.http import HttpRequest

from rotation.audit.chain import fingerprint
from rotation.audit.origin import Origin
from rotation.audit.trail import audit_record
from rotation.models import AuditAction


def client_ip(request: HttpRequest) -> str | None:
    """The client IP django-axes locks out: the one the audit trail records."""
    origin = Origin.of(request)
    return origin.ip if origin else None


def _attempted(username: str) -> tuple[str, dict[str, Any]]:
    """The user name to record (a known one) and details; an unknown name is fingerprinted
    (it may be a mistyped password)."""
    user_model = get_user_model()
    known = (
        bool(username)
        and user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).exists()
    )
    details: dict[str, Any] = {"username_known": known}
    if username and not known:
        details["username_fingerprint"] = fingerprint(username)
    return (username if known else ""), details


def _record_attempt(
    *, action: str, outcome: str, request: Any, username: str, **details: Any
) -> None:
    """An event about a sign-in attempt by somebody not signed in."""
    recorded, more = _attempted(username)
    with transaction.atomic():
        audit_record(
            action=action,
            outcome=outcome,
            actor_type="anonymous",
            actor_username=recorded,
            origin=Origin.of(request),
            details={**more, **details},
        )


def _while_locked_out(request: Any) -> bool:
    # django-axes refused this attempt before checking the password (the lockout was already
    # audited); the attempt that causes the lockout has its failure count set.
    return bool(getattr(request, "axes_locked_out", False)) and (
        getattr(request, "axes_failures_since_start", None) is None
    )


def audit_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """A successful sign-in; fails the sign-in if the event cannot be written."""
    with transaction.atomic():
        audit_record(action=AuditAction.AUTH_LOGIN, actor=user, origin=Origin.of(request))


def audit_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """A sign-out (user is None when nobody was signed in)."""
    with transaction.atomic():
        audit_record(
            action=AuditAction.AUTH_LOGOUT,
            actor=user,
            actor_type=None if user else "anonymous",
            origin=Origin.of(request),
        )


def audit_login_failed(sender: Any, credentials: dict, request: Any = None, **kwargs: Any) -> None:
    """A refused sign-in, unless it was refused because of a lockout."""
    if _while_locked_out(request):
        return
    _record_attempt(
        action=AuditAction.AUTH_LOGIN_FAILED,
        outcome="failure",
        request=request,
        username=str(credentials.get(get_user_model().USERNAME_FIELD) or ""),
    )


def audit_locked_out(sender: Any, request: Any, username: Any = None, **kwargs: Any) -> None:
    """A user name and IP locked out: once, when the limit is reached (django-axes sends this
    signal again for every attempt made while locked out)."""
    failures = getattr(request, "axes_failures_since_start", None)
    if failures is None:
        return
    _record_attempt(
        action=AuditAction.AUTH_LOCKED_OUT,
        outcome="denied",
        request=request,
        username=str(username or ""),
        failures=failures,
        failure_limit=settings.LOGIN_FAILURE_LIMIT,
        lockout_minutes=settings.LOGIN_LOCKOUT_MINUTES,
    )


def connect() -> None:
    """Called once from RotationConfig.ready()."""
    user_logged_in.connect(audit_login, dispatch_uid="rotation.audit_login")
    user_logged_out.connect(audit_logout, dispatch_uid="rotation.audit_logout")
    user_login_failed.connect(audit_login_failed, dispatch_uid="rotation.audit_login_failed")
    user_locked_out.connect(audit_locked_out, dispatch_uid="rotation.audit_locked_out")
