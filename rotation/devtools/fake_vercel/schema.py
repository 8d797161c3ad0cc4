"""The stand-in's strict reading of Vercel's published request schemas (stdlib only)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from rotation.vercel.contract import is_valid_env_name

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "vercel_openapi.json"

_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


@lru_cache
def request_schemas() -> dict[str, dict]:
    """Request body schemas of the copied OpenAPI subset, by operationId."""
    document = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    schemas = {}
    for operations in document["paths"].values():
        for operation in operations.values():
            body = operation.get("requestBody")
            if body:
                schemas[operation["operationId"]] = body["content"]["application/json"]["schema"]
    return schemas


def schema_problems(schema: dict, value: Any, where: str = "body") -> list[str]:
    """Problems of `value` against an OpenAPI schema, strictly; never quotes a value.

    Strict: an object that lists its properties accepts no other key, even where the
    schema leaves `additionalProperties` out (as for `environmentOverrides`).
    """
    if value is None and schema.get("nullable"):
        return []
    if "oneOf" in schema:
        results = [schema_problems(option, value, where) for option in schema["oneOf"]]
        matches = sum(1 for problems in results if not problems)
        if matches == 1:
            return []
        if matches > 1:
            return [f"`{where}` matches more than one allowed shape"]
        return min(results, key=len)
    expected = schema.get("type")
    if expected and not _TYPES[expected](value):
        return [f"`{where}` should be {expected}"]
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(map(str, schema["enum"]))
        return [f"`{where}` should be equal to one of the allowed values: {allowed}"]
    problems: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                problems.append(f"`{where}` should have required property `{key}`")
        closed = schema.get("additionalProperties") is False or bool(properties)
        for key, item in value.items():
            if key in properties:
                problems += schema_problems(properties[key], item, f"{where}.{key}")
            elif closed:
                problems.append(f"`{where}` should NOT have additional property `{key}`")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problems += schema_problems(schema["items"], item, f"{where}[{index}]")
    return problems


def name_problems(body: dict) -> list[str]:
    """Vercel's naming rules the schema does not state: valid and unique variable names."""
    problems = []
    seen: set[str] = set()
    for index, secret in enumerate(body["secrets"]):
        full_name = f"{secret.get('prefix', '')}{secret['name']}"
        if not is_valid_env_name(full_name):
            problems.append(f"`secrets[{index}].name` is not a valid environment variable name")
        elif full_name in seen:
            problems.append(f"`secrets[{index}].name` is a duplicate")
        seen.add(full_name)
    return problems
