"""Audit sign-ins, sign-outs and failed sign-ins (django.contrib.auth signals)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction

from rotation.audit.chain import fingerprint
from rotation.audit.origin import Origin
from rotation.audit.trail import audit_record
from rotation.models import AuditAction


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
    """A refused sign-in; an unknown user name is fingerprinted (it may be a mistyped password)."""
    user_model = get_user_model()
    attempted = str(credentials.get(user_model.USERNAME_FIELD) or "")
    known = (
        bool(attempted)
        and user_model._default_manager.filter(**{user_model.USERNAME_FIELD: attempted}).exists()
    )
    details: dict[str, Any] = {"username_known": known}
    if attempted and not known:
        details["username_fingerprint"] = fingerprint(attempted)
    with transaction.atomic():
        audit_record(
            action=AuditAction.AUTH_LOGIN_FAILED,
            outcome="failure",
            actor_type="anonymous",
            actor_username=attempted if known else "",
            origin=Origin.of(request),
            details=details,
        )


def connect() -> None:
    """Called once from RotationConfig.ready()."""
    user_logged_in.connect(audit_login, dispatch_uid="rotation.audit_login")
    user_logged_out.connect(audit_logout, dispatch_uid="rotation.audit_logout")
    user_login_failed.connect(audit_login_failed, dispatch_uid="rotation.audit_login_failed")
