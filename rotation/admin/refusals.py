"""The admin's permission refusal: audited through `rotation.audit.refusal_record`, then 403."""

from __future__ import annotations

from typing import Any, NoReturn

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from rotation.audit import Origin, refusal_record
from rotation.audit.refusals import PERMISSION_DENIED


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
    raise PermissionDenied(message)
