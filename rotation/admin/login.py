"""The admin sign-in form: a correct password for an account that may not use the admin
(not staff) is refused like Django does, and audited (no other signal reports it)."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError

from rotation.audit import AuditAction, Origin, refusal_record


class AuditedAdminAuthenticationForm(AdminAuthenticationForm):
    def confirm_login_allowed(self, user: Any) -> None:
        try:
            super().confirm_login_allowed(user)
        except ValidationError:
            refusal_record(
                action=AuditAction.AUTH_LOGIN_DENIED,
                message="This account may not sign in to the admin.",
                actor=user,
                origin=Origin.of(self.request),
                details={"is_staff": bool(user.is_staff), "is_active": bool(user.is_active)},
            )
            raise
