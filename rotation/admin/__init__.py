"""Admin registrations, one module per area."""

from rotation.admin import installations, rotations  # noqa: F401
