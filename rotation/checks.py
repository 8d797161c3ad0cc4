"""System checks run at start-up (`manage.py check`, runserver, qcluster)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.utils.module_loading import import_string


def _provider_errors(setting: str, path: Any) -> list[CheckMessage]:
    """A provider path imports and offers `create` and `expire`."""
    if not isinstance(path, str):
        return [Error(f"{setting} must be a dotted path, not {path!r}", id="rotation.E001")]
    try:
        provider = import_string(path)
    except ImportError as exc:
        return [Error(f"{setting} {path!r} cannot be imported: {exc}", id="rotation.E001")]
    missing = [name for name in ("create", "expire") if not callable(getattr(provider, name, None))]
    if missing:
        return [
            Error(
                f"{setting} {path!r} lacks {', '.join(missing)}",
                hint="See rotation.providers for the provider contract.",
                id="rotation.E002",
            )
        ]
    return [
        Error(f"{setting} {path!r} needs {name} to be set", id="rotation.E003")
        for name in getattr(provider, "required_settings", ())
        if not getattr(settings, name, "")
    ]


@register()
def credential_provider_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The default provider and every provider in ROTATION_PROVIDERS import and offer
    `create` and `expire`."""
    errors = _provider_errors("ROTATION_CREDENTIAL_PROVIDER", settings.ROTATION_CREDENTIAL_PROVIDER)
    providers = settings.ROTATION_PROVIDERS
    if not isinstance(providers, dict):
        return [*errors, Error("ROTATION_PROVIDERS must be a JSON object", id="rotation.E001")]
    for product, path in providers.items():
        errors += _provider_errors(f"ROTATION_PROVIDERS[{product!r}]", path)
    return errors
