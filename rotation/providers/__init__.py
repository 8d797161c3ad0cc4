"""Credential providers: make new credentials in the partner's backend and expire old ones.

`ROTATION_PROVIDERS` maps a product id to a provider class (a dotted path);
`ROTATION_CREDENTIAL_PROVIDER` is the default for every other product. A provider offers:

- `metadata_fields`: the resource metadata keys it needs (import and admin refuse a resource
  that lacks one or carries another);
- `secret_names`: the secret names it can produce, or `None` for any (import and admin refuse
  a secret template naming another);
- `create(*, resource, rotation_id) -> list[dict]`: new credentials, already valid in the
  partner's backend (the old ones keep working), as Vercel's `secrets` list (`name`,
  `value`, optional `prefix` and `environmentOverrides`). Idempotent per rotation: a second
  call with the same `rotation_id` (a retry after a crash between create and record) must not
  leave a second login behind; it may hand out a new password for the same login.
- `expire(*, resource, version) -> None`: revoke the credentials of a `CredentialVersion`
  (called while its ciphertext is still readable; the caller wipes it afterwards).
  Idempotent: a retry after a crash calls it again for the same version.
- optionally `verify(*, resource, secrets) -> bool`: check that new credentials work.

Values never reach a log line, a statement or an exception message. Callers never hold row
locks while calling a provider: it talks to another system. Development's demo provider lives
in `rotation.devtools.demo_provider`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol, cast

from django.conf import settings
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from rotation.models import CredentialVersion, Resource


class CredentialProviderError(Exception):
    """The partner's backend could not create, expire or verify credentials."""


class CredentialProvider(Protocol):
    metadata_fields: ClassVar[tuple[str, ...]]
    secret_names: ClassVar[tuple[str, ...] | None]

    def create(self, *, resource: Resource, rotation_id: int) -> list[dict]: ...

    def expire(self, *, resource: Resource, version: CredentialVersion) -> None: ...


def provider_path(product: str | None = None) -> str:
    """The dotted path of the provider for `product` (read at call time)."""
    return settings.ROTATION_PROVIDERS.get(product or "", settings.ROTATION_CREDENTIAL_PROVIDER)


def get_provider(product: str | None = None) -> CredentialProvider:
    """An instance of the provider configured for `product` (the default without one)."""
    return cast("CredentialProvider", import_string(provider_path(product))())
