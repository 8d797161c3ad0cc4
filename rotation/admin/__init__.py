"""Admin registrations, one module per area."""

from rotation.admin import installations  # noqa: F401
