"""Admin registrations, one module per area.

Areas: `installations` (installations and resources, with the action from `rotate_action`
and those of `marketplace`: token rotation and inventory check), `inventory` (its reports),
`batches`, `rotations`, `redeploy` (dashboard, confirm a redeploy, roll back, webhook
deliveries), `policies` (rotation policies, credential ages), `audit` and `lockouts`
(sign-in lockouts). Parts they share: `staff_actions` (permission, audited refusal, service
call), `refusals` (`deny`, the audited 403 handler), `login` (the sign-in form), `read_only`,
`list_filters` and `large_lists` (paginator, per-row counts).
"""

from django.contrib import admin

from rotation.admin import (  # noqa: F401
    audit,
    batches,
    installations,
    inventory,
    lockouts,
    policies,
    redeploy,
    rotations,
)
from rotation.admin.login import AuditedAdminAuthenticationForm

admin.site.login_form = AuditedAdminAuthenticationForm
