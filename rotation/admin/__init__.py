"""Admin registrations, one module per area.

Areas: `installations` (installations and resources, with the action from `rotate_action`
and those of `marketplace`: token rotation and inventory check), `inventory` (its reports),
`batches`, `rotations`, `redeploy` (dashboard, confirm a redeploy, roll back, webhook
deliveries) and `audit`. Parts they share: `staff_actions` (permission, audited refusal,
service call), `refusals` (`deny`), `read_only` and `list_filters`.
"""

from rotation.admin import (  # noqa: F401
    audit,
    batches,
    installations,
    inventory,
    redeploy,
    rotations,
)
