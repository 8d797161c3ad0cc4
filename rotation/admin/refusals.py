"""The admin's permission refusal: audited through `rotation.audit.refusal_record`, then 403.

Every 403 is audited once: `deny` records the refusal under the action that was refused and
raises `AuditedPermissionDenied`; any other `PermissionDenied` (Django's own admin checks, a
page without its view permission) is recorded by `permission_denied_view`, the project's
403 handler, under `admin.access_denied`.
"""

from __future__ import annotations

from typing import Any, NoReturn

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.views.defaults import permission_denied

from rotation.audit import AuditAction, Origin, refusal_record
from rotation.audit.refusals import PERMISSION_DENIED


class AuditedPermissionDenied(PermissionDenied):
    """A 403 whose refusal `deny` has already recorded."""


def deny(
    request: HttpRequest,
    *,
    action: str,
    message: str = PERMISSION_DENIED,
    details: dict[str, Any] | None = None,
    **refs: Any,
) -> NoReturn:
    """Audit a refused admin request (outcome `denied`) and answer 403."""
    refusal_record(
        action=action,
        message=message,
        actor=request.user,
        origin=Origin.of(request),
        details=details,
        **refs,
    )
    raise AuditedPermissionDenied(message)


def permission_denied_view(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The 403 handler (`handler403`): audits a refusal nobody recorded yet, then Django's page."""
    if not isinstance(exception, AuditedPermissionDenied):
        refusal_record(
            action=AuditAction.ACCESS_DENIED,
            message=PERMISSION_DENIED,
            actor=getattr(request, "user", None),
            origin=Origin.of(request),
            details={"method": request.method or "", "path": request.path[:200]},
        )
    return permission_denied(request, exception)
