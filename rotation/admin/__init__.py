"""Admin registrations, one module per area."""

import rotation.admin.audit  # noqa: F401
from rotation.admin import installations, redeploy, rotations  # noqa: F401
