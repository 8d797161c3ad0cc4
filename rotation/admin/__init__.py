"""Admin registrations, one module per area.

Areas: `installations` (installations and resources, with the action from `rotate_action`),
`batches`, `rotations`, `redeploy` (dashboard, confirm a redeploy, roll back, webhook
deliveries), `policies` (rotation policies, credential ages) and `audit`. Parts they share:
`staff_actions` (permission, audited refusal, service call), `refusals` (`deny`),
`read_only` and `list_filters`.
"""

from rotation.admin import audit, batches, installations, policies, redeploy, rotations  # noqa: F401
