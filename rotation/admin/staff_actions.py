"""What staff do from the admin behind a permission: the check, the audited refusal, the call.

One shape for every button and form: a request by someone without the permission is refused
through `deny` (audited, 403), whatever its method; an allowed POST calls one
service with the user and the request's origin, reports its result or its `RotationRefused`
as a message, and redirects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from django.contrib import messages
from django.http import HttpRequest, HttpResponseRedirect

from rotation.admin.refusals import deny
from rotation.audit import AuditAction, Origin, RotationRefused

T = TypeVar("T")
# What staff are told after the service ran: the text and its `messages` level.
Report = tuple[str, int]


@dataclass(frozen=True)
class StaffAction:
    """An action staff take in the admin: the permission it needs and the audit action
    under which a refusal is recorded."""

    permission: str
    audit_action: str

    def allowed(self, request: HttpRequest) -> bool:
        return request.user.has_perm(self.permission)

    def deny(
        self, request: HttpRequest, *, details: dict[str, Any] | None = None, **refs: Any
    ) -> NoReturn:
        """Audit the refusal (outcome `denied`, `details.message`) and answer 403."""
        deny(request, action=self.audit_action, details=details, **refs)

    def guard(
        self, request: HttpRequest, *, details: dict[str, Any] | None = None, **refs: Any
    ) -> None:
        """Let an allowed user through; refuse (and audit) anybody else."""
        if not self.allowed(request):
            self.deny(request, details=details, **refs)

    def run(
        self,
        request: HttpRequest,
        call: Callable[..., T],
        *,
        report: Callable[[T], Report],
        redirect_to: str,
        **refs: Any,
    ) -> HttpResponseRedirect:
        """Guard, then `call(actor=..., origin=...)`; report the result or the refusal."""
        self.guard(request, **refs)
        try:
            result = call(actor=request.user, origin=Origin.of(request))
        except RotationRefused as exc:
            messages.error(request, exc.message)
        else:
            text, level = report(result)
            messages.add_message(request, level, text)
        return HttpResponseRedirect(redirect_to)


ROTATE = StaffAction("rotation.rotate_resource", AuditAction.ROTATION_REQUEST_DENIED)
BATCH_RETRY_FAILED = StaffAction("rotation.retry_rotation", AuditAction.BATCH_RETRIED)
BATCH_CANCEL = StaffAction("rotation.cancel_rotation", AuditAction.BATCH_CANCELLED)
ROTATION_RETRY = StaffAction("rotation.retry_rotation", AuditAction.ROTATION_RETRIED)
ROTATION_CANCEL = StaffAction("rotation.cancel_rotation", AuditAction.ROTATION_CANCELLED)
REDEPLOY_CONFIRM = StaffAction("rotation.confirm_redeploy", AuditAction.REDEPLOY_CONFIRMED)
ROTATION_ROLLBACK = StaffAction("rotation.rollback_rotation", AuditAction.ROLLBACK_REQUESTED)
ENDPOINT_SWITCH = StaffAction(
    "rotation.switch_endpoint", AuditAction.INSTALLATION_ENDPOINT_SWITCHED
)
