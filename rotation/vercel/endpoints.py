"""Which Update Resource Secrets endpoint a push calls, as Vercel retires the deprecated one.

An installation is set to `current` or `deprecated` (CONTRACT.md section 1). From the sunset
date (`VERCEL_DEPRECATED_ENDPOINT_SUNSET`, a UTC day) every push goes through the current
endpoint, whatever the installation says. Before it, a push on the deprecated endpoint that
Vercel answers with 410 or 404 may be tried once on the current one
(`VERCEL_DEPRECATED_ENDPOINT_FALLBACK`). Settings are read at call time; nothing here imports
models.
"""

from __future__ import annotations

from datetime import date

from django.conf import settings
from django.utils import timezone

from rotation.vercel.errors import VercelError

CURRENT = "current"
DEPRECATED = "deprecated"
# What Vercel answers on a path it has removed (newer SDKs list 410 for the deprecated one).
GONE_STATUSES = frozenset({404, 410})


def deprecated_sunset() -> date | None:
    """The day from which the deprecated endpoint is no longer called, or None."""
    return settings.VERCEL_DEPRECATED_ENDPOINT_SUNSET


def deprecated_retired(today: date | None = None) -> bool:
    """Whether the sunset date has come (UTC)."""
    sunset = deprecated_sunset()
    return sunset is not None and (today or timezone.now().date()) >= sunset


def endpoint_in_effect(endpoint: str, today: date | None = None) -> str:
    """The endpoint a push for an installation set to `endpoint` calls today."""
    if endpoint == DEPRECATED and deprecated_retired(today):
        return CURRENT
    return endpoint


def falls_back(endpoint: str, error: VercelError) -> bool:
    """Whether a failed call on `endpoint` is worth one try on the current endpoint."""
    return (
        endpoint == DEPRECATED
        and error.status in GONE_STATUSES
        and bool(settings.VERCEL_DEPRECATED_ENDPOINT_FALLBACK)
    )
