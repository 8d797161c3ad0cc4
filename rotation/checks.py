"""System checks run at start-up (`manage.py check`, runserver, qcluster)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.utils.module_loading import import_string


@register()
def credential_provider_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The configured provider imports and offers `create` and `expire`."""
    path = settings.ROTATION_CREDENTIAL_PROVIDER
    try:
        provider = import_string(path)
    except ImportError as exc:
        return [
            Error(
                f"ROTATION_CREDENTIAL_PROVIDER {path!r} cannot be imported: {exc}",
                id="rotation.E001",
            )
        ]
    missing = [name for name in ("create", "expire") if not callable(getattr(provider, name, None))]
    if missing:
        return [
            Error(
                f"ROTATION_CREDENTIAL_PROVIDER {path!r} lacks {', '.join(missing)}",
                hint="See rotation.providers for the provider contract.",
                id="rotation.E002",
            )
        ]
    return []
