"""Credential providers: make new credentials in the partner's backend and expire old ones.

`ROTATION_CREDENTIAL_PROVIDER` names the provider class (a dotted path). A provider offers:

- `create(*, resource) -> list[dict]`: new credentials, already valid in the partner's backend
  (the old ones keep working), as Vercel's `secrets` list (`name`, `value`, optional
  `prefix` and `environmentOverrides`).
- `expire(*, resource, version) -> None`: revoke the credentials of a `CredentialVersion`
  (called while its ciphertext is still readable; the caller wipes it afterwards).
  Idempotent: a retry after a crash calls it again for the same version.
- optionally `verify(*, resource, secrets) -> bool`: check that new credentials work.

Callers never hold row locks while calling a provider: it talks to another system.
Development's demo provider lives in `rotation.devtools.demo_provider`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, cast

from django.conf import settings
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from rotation.models import CredentialVersion, Resource


class CredentialProviderError(Exception):
    """The partner's backend could not create, expire or verify credentials."""


class CredentialProvider(Protocol):
    def create(self, *, resource: Resource) -> list[dict]: ...

    def expire(self, *, resource: Resource, version: CredentialVersion) -> None: ...


def get_provider() -> CredentialProvider:
    """An instance of the configured provider (read at call time)."""
    return cast("CredentialProvider", import_string(settings.ROTATION_CREDENTIAL_PROVIDER)())
