"""Import installations and resources from the JSON import format (README, "Commands").

Validation runs over the whole file first and reports every problem with its path
(`installations[0] (icfg_1).resources[2].secrets[0].name`); only a clean file is written,
in one transaction, as an upsert keyed by Vercel ids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from rotation.audit import AuditAction, audit_record
from rotation.models import Installation, Resource
from rotation.providers.declarations import resource_declaration_problems
from rotation.validators import (
    ECHO_LIMIT,
    VERCEL_ID,
    access_token_problem,
    shown,
    vercel_id_problem,
)
from rotation.vercel import endpoints
from rotation.vercel.contract import ENVIRONMENTS, is_valid_env_name

INSTALLATION_FIELDS = {
    "id": True,
    "name": False,
    "team_id": False,
    "contact_email": False,
    "access_token": True,
    "endpoint": False,
    "resources": False,
}
RESOURCE_FIELDS = {"id": True, "product": True, "name": True, "secrets": True, "metadata": False}
SECRET_FIELDS = {"name": True, "prefix": False, "environments": False}
ENDPOINTS = {choice.value for choice in Installation.Endpoint}


class ImportRefused(Exception):
    """The file was refused whole; `problems` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"import refused, nothing written ({len(problems)} problems)")


@dataclass
class ImportResult:
    installations_created: int = 0
    installations_updated: int = 0
    resources_created: int = 0
    resources_updated: int = 0
    # Imported anyway: e.g. an installation set to the deprecated endpoint after its sunset.
    warnings: list[str] = field(default_factory=list)


def _check_keys(
    problems: list[str], where: str, entry: Any, fields: dict[str, bool]
) -> dict[str, Any]:
    if not isinstance(entry, dict):
        problems.append(f"{where}: must be an object")
        return {}
    for key in sorted(set(entry) - set(fields)):
        problems.append(f"{where}: unknown field {shown(key)}")
    for key, required in fields.items():
        if required and key not in entry:
            problems.append(f"{where}: missing field {key!r}")
    return entry


def _check_str(
    problems: list[str],
    where: str,
    entry: dict,
    key: str,
    *,
    required: bool,
    limit: int,
    rule: Callable[[str], str | None] | None = None,
) -> None:
    """A string field: its type, presence, length, then `rule` (rotation.validators)."""
    if key not in entry:
        return
    value = entry[key]
    if not isinstance(value, str):
        problems.append(f"{where}.{key}: must be a string, not {_json_type(value)}")
    elif required and not value.strip():
        problems.append(f"{where}.{key}: must not be empty")
    elif len(value) > limit:
        problems.append(f"{where}.{key}: longer than {limit} characters")
    elif value and rule is not None and (problem := rule(value)):
        problems.append(f"{where}.{key}: {problem}")


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _label(where: str, value: Any) -> str:
    """`where` with the entry's id for the reader, capped and escaped when it is odd."""
    if not isinstance(value, str) or not value:
        return where
    plain = VERCEL_ID.fullmatch(value) and len(value) <= ECHO_LIMIT
    return f"{where} ({value if plain else shown(value)})"


def _validate_secret(problems: list[str], where: str, secret: Any) -> None:
    secret = _check_keys(problems, where, secret, SECRET_FIELDS)
    if "name" in secret and not is_valid_env_name(secret["name"]):
        problems.append(
            f"{where}.name: {shown(secret['name'])} is not a valid environment variable name "
            "(letters, digits and underscore, not starting with a digit)"
        )
    _check_str(problems, where, secret, "prefix", required=False, limit=100)
    prefix = secret.get("prefix")
    if isinstance(prefix, str) and prefix and not is_valid_env_name(prefix):
        problems.append(f"{where}.prefix: {shown(prefix)} is not a valid name prefix")
    if "environments" in secret:
        environments = secret["environments"]
        if not isinstance(environments, list) or not environments:
            problems.append(f"{where}.environments: must be a non-empty list")
        else:
            for env_name in environments:
                if not isinstance(env_name, str) or env_name not in ENVIRONMENTS:
                    problems.append(
                        f"{where}.environments: {shown(env_name)} is not one of "
                        f"{', '.join(ENVIRONMENTS)}"
                    )
            if len(set(map(repr, environments))) != len(environments):
                problems.append(f"{where}.environments: lists an environment twice")


def _validate_resource(problems: list[str], where: str, resource: Any) -> None:
    resource = _check_keys(problems, where, resource, RESOURCE_FIELDS)
    _check_str(problems, where, resource, "id", required=True, limit=128, rule=vercel_id_problem)
    _check_str(problems, where, resource, "product", required=True, limit=128)
    _check_str(problems, where, resource, "name", required=True, limit=200)
    secrets = resource.get("secrets")
    if "secrets" in resource and (not isinstance(secrets, list) or not secrets):
        problems.append(f"{where}.secrets: must be a non-empty list")
        return
    seen: set[str] = set()
    for index, secret in enumerate(secrets or []):
        _validate_secret(problems, f"{where}.secrets[{index}]", secret)
        name = secret.get("name") if isinstance(secret, dict) else None
        full_name = f"{secret.get('prefix') or ''}{name}" if isinstance(name, str) else None
        if full_name is not None:
            if full_name in seen:
                problems.append(f"{where}.secrets[{index}].name: duplicate name {shown(full_name)}")
            seen.add(full_name)
    _validate_metadata(problems, where, resource)


def _validate_metadata(problems: list[str], where: str, resource: dict) -> None:
    """The resource's metadata and secret names fit what its product's provider declares."""
    product = resource.get("product")
    secrets = resource.get("secrets")
    if not isinstance(product, str) or not isinstance(secrets, list):
        return  # reported above
    names = [s["name"] for s in secrets if isinstance(s, dict) and isinstance(s.get("name"), str)]
    problems.extend(
        resource_declaration_problems(
            label=where, product=product, metadata=resource.get("metadata", {}), secret_names=names
        )
    )


def _validate_installation(problems: list[str], where: str, entry: Any) -> None:
    entry = _check_keys(problems, where, entry, INSTALLATION_FIELDS)
    _check_str(problems, where, entry, "id", required=True, limit=64, rule=vercel_id_problem)
    _check_str(problems, where, entry, "name", required=False, limit=200)
    _check_str(problems, where, entry, "team_id", required=False, limit=64, rule=vercel_id_problem)
    _check_str(
        problems, where, entry, "access_token", required=True, limit=4096, rule=access_token_problem
    )
    _check_str(problems, where, entry, "contact_email", required=False, limit=254)
    if isinstance(entry.get("contact_email"), str) and entry["contact_email"]:
        try:
            validate_email(entry["contact_email"])
        except ValidationError:
            problems.append(f"{where}.contact_email: not a valid email address")
    endpoint = entry.get("endpoint")
    if "endpoint" in entry and not (isinstance(endpoint, str) and endpoint in ENDPOINTS):
        problems.append(f"{where}.endpoint: must be 'current' or 'deprecated'")
    resources = entry.get("resources", [])
    if not isinstance(resources, list):
        problems.append(f"{where}.resources: must be a list")
        return
    seen: set[str] = set()
    for index, resource in enumerate(resources):
        label = resource.get("id") if isinstance(resource, dict) else None
        resource_where = _label(f"{where}.resources[{index}]", label)
        _validate_resource(problems, resource_where, resource)
        if isinstance(label, str):
            if label in seen:
                problems.append(f"{resource_where}.id: duplicate resource id {shown(label)}")
            seen.add(label)


def validate_import(data: Any) -> list[str]:
    """Every problem in an import document, or an empty list."""
    problems: list[str] = []
    data = _check_keys(problems, "file", data, {"installations": True})
    installations = data.get("installations")
    if "installations" in data and not isinstance(installations, list):
        problems.append("file.installations: must be a list")
        return problems
    seen: set[str] = set()
    for index, entry in enumerate(installations or []):
        label = entry.get("id") if isinstance(entry, dict) else None
        where = _label(f"installations[{index}]", label)
        _validate_installation(problems, where, entry)
        if isinstance(label, str):
            if label in seen:
                problems.append(f"{where}.id: duplicate installation id {shown(label)}")
            seen.add(label)
    return problems


def _secret_template(secrets: list[dict]) -> list[dict]:
    return [
        {
            "name": secret["name"],
            "prefix": secret.get("prefix", ""),
            "environments": secret.get("environments", list(ENVIRONMENTS)),
        }
        for secret in secrets
    ]


def sunset_warnings(data: dict[str, Any]) -> list[str]:
    """Installations (of a valid document) set to the deprecated endpoint after its sunset."""
    if not endpoints.deprecated_retired():
        return []
    sunset = endpoints.deprecated_sunset()
    return [
        f"installations[{index}] ({entry['id']}).endpoint: 'deprecated' is past Vercel's "
        f"sunset ({sunset}); its pushes go through the current endpoint"
        for index, entry in enumerate(data["installations"])
        if entry.get("endpoint") == Installation.Endpoint.DEPRECATED
    ]


def installations_import(*, data: Any, actor: Any = None, source: str = "") -> ImportResult:
    """Validate then upsert the whole document atomically, auditing each installation."""
    problems = validate_import(data)
    if problems:
        raise ImportRefused(problems)
    result = ImportResult(warnings=sunset_warnings(data))
    with transaction.atomic():
        for entry in data["installations"]:
            installation, created = Installation.objects.select_for_update().get_or_create(
                vercel_id=entry["id"]
            )
            installation.name = entry.get("name", installation.name)
            installation.team_id = entry.get("team_id", installation.team_id)
            installation.contact_email = entry.get("contact_email", installation.contact_email)
            installation.endpoint = entry.get("endpoint", installation.endpoint)
            token_changed = not installation.has_access_token or (
                installation.access_token() != entry["access_token"]
            )
            if token_changed:
                installation.set_access_token(entry["access_token"])
            installation.save()
            counts = {"created": 0, "updated": 0}
            for resource_entry in entry.get("resources", []):
                _, resource_created = Resource.objects.update_or_create(
                    installation=installation,
                    vercel_id=resource_entry["id"],
                    defaults={
                        "product": resource_entry["product"],
                        "name": resource_entry["name"],
                        "secret_template": _secret_template(resource_entry["secrets"]),
                        "metadata": resource_entry.get("metadata", {}),
                    },
                )
                counts["created" if resource_created else "updated"] += 1
            result.installations_created += created
            result.installations_updated += not created
            result.resources_created += counts["created"]
            result.resources_updated += counts["updated"]
            audit_record(
                action=AuditAction.INSTALLATION_IMPORTED,
                actor=actor,
                installation=installation,
                details={
                    "created": created,
                    "token_replaced": token_changed,
                    "resources_created": counts["created"],
                    "resources_updated": counts["updated"],
                    "source": source,
                },
            )
    return result
