"""What a product's provider declares: the resource metadata it needs and the secret names it
can produce. Import and the admin check resources against it, naming resource and field."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.utils.module_loading import import_string

from rotation.providers import provider_path


def provider_declaration(product: str) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """(metadata fields, secret names or None for any) of the provider of `product`."""
    provider = import_string(provider_path(product))
    return tuple(getattr(provider, "metadata_fields", ())), getattr(provider, "secret_names", None)


def resource_declaration_problems(
    *, label: str, product: str, metadata: Any, secret_names: Iterable[str]
) -> list[str]:
    """Why a resource's metadata or secret template does not fit its provider (empty: fits)."""
    try:
        fields, names = provider_declaration(product)
    except ImportError as exc:
        return [f"{label}: the provider of product {product!r} cannot be imported: {exc}"]
    path = provider_path(product).rsplit(".", 1)[-1]
    if not isinstance(metadata, dict):
        return [f"{label}: field 'metadata' must be an object"]
    problems = [
        f"{label}: metadata field {key!r} is not used by {path} "
        f"(it uses: {', '.join(fields) or 'none'})"
        for key in metadata
        if key not in fields
    ]
    problems += [
        f"{label}: metadata field {key!r} is required by {path}"
        for key in fields
        if key not in metadata
    ]
    problems += [
        f"{label}: metadata field {key!r} must be a string or a whole number"
        for key, value in metadata.items()
        if key in fields and (isinstance(value, bool) or not isinstance(value, (str, int)))
    ]
    if names is not None:
        problems += [
            f"{label}: secret {name!r} is not one {path} can produce (it makes: {', '.join(names)})"
            for name in secret_names
            if name not in names
        ]
    return problems
