"""Admin registrations, one module per area."""

from rotation.admin import installations, redeploy, rotations  # noqa: F401
