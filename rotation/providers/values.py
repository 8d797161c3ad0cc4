"""The secret list a provider returns: the resource's template filled from one credential."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rotation.providers import CredentialProviderError

if TYPE_CHECKING:
    from rotation.models import Resource


def secrets_from_template(
    *, resource: Resource, values: dict[str, str], default: str
) -> list[dict]:
    """One secret per template entry (`default` when the template is empty), its value taken
    from `values` by name. A name the provider cannot fill is an error naming the name only."""
    template = resource.secret_template or [{"name": default, "prefix": ""}]
    result: list[dict] = []
    for entry in template:
        name = entry.get("name")
        if name not in values:
            raise CredentialProviderError(
                f"resource {resource.vercel_id}: the provider cannot produce secret {name!r}"
            )
        secret = {"name": name, "value": values[name]}
        if entry.get("prefix"):
            secret["prefix"] = entry["prefix"]
        result.append(secret)
    return result


def secret_value(secrets: list[dict], name: str) -> str | None:
    """The value of secret `name` in a sealed secret list (None when absent)."""
    return next((s.get("value") for s in secrets if s.get("name") == name), None)
