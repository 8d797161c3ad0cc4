"""The stand-in's strict reading of Vercel's published request schemas."""

import jsonschema
import pytest

from rotation.devtools.fake_vercel import request_schemas, schema_problems
from tests.devtools.fake_vercel.api_calls import BODY, VALUE


@pytest.mark.parametrize(
    "body",
    [
        {"secrets": [{"name": "A", "value": VALUE}], "replace": True},
        {"secrets": [{"name": "A", "value": VALUE, "target": "x"}]},
        {"secrets": [{"name": "A", "value": 42}]},
        {"secrets": [{"name": "A", "value": VALUE}], "partial": "yes"},
        {"secrets": [{"name": "A"}]},
        {"partial": True},
        {"secrets": {"name": "A", "value": VALUE}},
        [BODY],
    ],
)
def test_its_schema_check_refuses_what_jsonschema_refuses(body):
    schema = request_schemas()["update-resource-secrets-by-id"]

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, schema)
    assert schema_problems(schema, body)


def test_it_checks_schemas_strictly_without_quoting_values():
    schema = {
        "type": "object",
        "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}}},
    }

    assert schema_problems(schema, {"a": {"b": "x"}}) == []
    assert schema_problems(schema, {"a": {"c": "secret-ish"}}) == [
        "`body.a` should NOT have additional property `c`"
    ]
    assert "secret-ish" not in " ".join(schema_problems(schema, {"a": {"b": ["secret-ish"]}}))
