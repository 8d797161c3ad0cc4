"""What the stand-in holds: the installations it knows (bearer token, resources and their
products) and the secrets pushed to each resource, keyed by prefixed name as Vercel keys them.

Handler threads read and write it at once; every method takes the one lock.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from rotation.devtools.fake_vercel.marketplace import CredentialLedger

Secret = dict[str, Any]
# (installation id, resource id, product, secrets held) for the page at `/`.
PageRow = tuple[str, str, str, list[Secret]]


@dataclass
class KnownInstallation:
    token: str
    resources: dict[str, str] = field(default_factory=dict)  # resource id -> product


def _by_full_name(secrets: list[Secret]) -> dict[str, Secret]:
    return {f"{secret.get('prefix', '')}{secret['name']}": dict(secret) for secret in secrets}


class InstallationStore:
    """Installations, tokens, resources and secrets held, safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._installations: dict[str, KnownInstallation] = {}
        self._secrets: dict[tuple[str, str], dict[str, Secret]] = {}
        # Rotated and revoked tokens, and what Vercel holds of each resource (marketplace.py).
        self.credentials = CredentialLedger()

    def add(self, installation_id: str, token: str, resources: dict[str, str]) -> None:
        """Know an installation, or give a known one this token and more resources."""
        if not installation_id or not token:
            raise ValueError("an installation needs an id and a token")
        with self._lock:
            known = self._installations.get(installation_id)
            if known is None:
                self._installations[installation_id] = KnownInstallation(token, dict(resources))
            else:
                known.token = token
                known.resources.update(resources)

    def replace(self, installation_id: str, token: str, resources: dict[str, str]) -> None:
        """Know exactly this token and these resources (resources not listed are forgotten)."""
        with self._lock:
            self._installations[installation_id] = KnownInstallation(token, dict(resources))

    def remove(self, installation_id: str) -> None:
        """Forget an installation (as if uninstalled): its calls then answer 404."""
        with self._lock:
            self._installations.pop(installation_id, None)

    def load_config(self, data: object) -> None:
        """Learn installations from the `import_installations` JSON format."""
        if not isinstance(data, dict) or not isinstance(data.get("installations"), list):
            raise ValueError("expected {'installations': [...]}")
        for index, entry in enumerate(data["installations"]):
            try:
                resources = {
                    resource["id"]: resource["product"] for resource in entry.get("resources", [])
                }
                self.add(entry["id"], entry["access_token"], resources)
            except (KeyError, TypeError, AttributeError):
                raise ValueError(
                    f"installations[{index}]: needs id, access_token and resources[].id/product"
                ) from None

    def token_of(self, installation_id: str) -> str | None:
        """The installation's bearer token, or None when the installation is unknown."""
        with self._lock:
            known = self._installations.get(installation_id)
            return None if known is None else known.token

    def product_of(self, installation_id: str, resource_id: str) -> str | None:
        """The resource's product, or None when the installation or resource is unknown."""
        with self._lock:
            known = self._installations.get(installation_id)
            return None if known is None else known.resources.get(resource_id)

    def installation_ids(self) -> list[str]:
        """The installations known, by id."""
        with self._lock:
            return sorted(self._installations)

    def resources_of(self, installation_id: str) -> dict[str, str]:
        """The installation's resources (id -> product); empty when unknown."""
        with self._lock:
            known = self._installations.get(installation_id)
            return {} if known is None else dict(known.resources)

    def forget_resource(self, installation_id: str, resource_id: str) -> None:
        """Vercel no longer holds this resource."""
        with self._lock:
            known = self._installations.get(installation_id)
            if known is not None:
                known.resources.pop(resource_id, None)

    def put_secrets(
        self, installation_id: str, resource_id: str, secrets: list[Secret], *, partial: bool
    ) -> None:
        """Apply a push: `partial` merges by prefixed name, otherwise the set replaces all."""
        incoming = _by_full_name(secrets)
        with self._lock:
            key = (installation_id, resource_id)
            if partial:
                self._secrets.setdefault(key, {}).update(incoming)
            else:
                self._secrets[key] = incoming

    def set_secrets(self, installation_id: str, resource_id: str, secrets: list[Secret]) -> None:
        """Preload a resource's secrets (as if pushed earlier)."""
        self.put_secrets(installation_id, resource_id, secrets, partial=False)

    def secrets_of(self, installation_id: str, resource_id: str) -> list[Secret]:
        """The secrets this resource holds now (copies, in the order they were set)."""
        with self._lock:
            held = self._secrets.get((installation_id, resource_id), {})
            return [json.loads(json.dumps(secret)) for secret in held.values()]

    def page_rows(self) -> list[PageRow]:
        """Every known or pushed-to resource, those holding secrets first, then by ids."""
        with self._lock:
            products = {
                (installation_id, resource_id): product
                for installation_id, installation in self._installations.items()
                for resource_id, product in installation.resources.items()
            }
            held = {key: list(secrets.values()) for key, secrets in self._secrets.items()}
        # Resources holding pushed secrets first, so a demo sees its push at the top.
        keys = sorted(set(products) | set(held), key=lambda key: (not held.get(key), key))
        return [(*key, products.get(key, "?"), held.get(key, [])) for key in keys]
