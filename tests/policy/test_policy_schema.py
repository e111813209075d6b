"""``rerund schema``: the JSON Schema editors validate policy files with.

``jsonschema`` is not a dependency, so a small validator of the subset of JSON Schema that
pydantic emits (type, properties, required, additionalProperties, items, enum/const, pattern,
minimum/maximum, $ref, anyOf/oneOf, not) checks the shipped policies against the schema, and
known-bad documents against it too (so the check can fail).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from rerund.policy.model import PolicyFile
from rerund.policy.schema import policy_schema

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(
    [
        *(REPO / "policies").glob("*.yaml"),
        *(REPO / "policies" / "examples").glob("*.yaml"),
        *(REPO / "policies" / "library").glob("*.yaml"),
    ]
)
TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "integer": int,
    "number": (int, float),
}


def errors(schema: dict[str, Any], value: Any, root: dict[str, Any], path: str = "$") -> list[str]:
    """Why ``value`` does not validate against ``schema`` (empty list = it does)."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return errors(root["$defs"][name], value, root, path)
    out: list[str] = []
    if "anyOf" in schema and all(errors(s, value, root, path) for s in schema["anyOf"]):
        out.append(f"{path}: matches none of anyOf")
    if "oneOf" in schema and sum(not errors(s, value, root, path) for s in schema["oneOf"]) != 1:
        out.append(f"{path}: does not match exactly one of oneOf")
    if "not" in schema and not errors(schema["not"], value, root, path):
        out.append(f"{path}: matches a 'not' schema")
    if "const" in schema and value != schema["const"]:
        out.append(f"{path}: is not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{path}: {value!r} not in {schema['enum']}")
    kind = schema.get("type")
    if kind is not None:
        expected = TYPES[kind]
        if isinstance(value, bool) and kind in ("integer", "number"):
            return [*out, f"{path}: expected {kind}, got a boolean"]
        if not isinstance(value, expected):
            return [*out, f"{path}: expected {kind}, got {type(value).__name__}"]
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        out.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{path}: below minimum")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            out.append(f"{path}: not below exclusiveMaximum")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            out.append(f"{path}: too few items")
        for i, item in enumerate(value):
            out.extend(errors(schema.get("items", {}), item, root, f"{path}[{i}]"))
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                out.append(f"{path}: missing {key!r}")
        for key, item in value.items():
            if key in props:
                out.extend(errors(props[key], item, root, f"{path}.{key}"))
            elif schema.get("additionalProperties") is False:
                out.append(f"{path}: unknown key {key!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                out.extend(errors(schema["additionalProperties"], item, root, f"{path}.{key}"))
    return out


def as_json(value: Any) -> Any:
    """What an editor sees: YAML data with JSON-only key types (escalate keys become strings)."""
    if isinstance(value, dict):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json(v) for v in value]
    return value


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_the_shipped_policies_validate_against_the_schema_and_the_model(path):
    data = yaml.safe_load(path.read_text())
    assert errors(policy_schema(), as_json(data), policy_schema()) == []
    PolicyFile.model_validate(data)


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"policies": []}, "$: missing 'apiVersion'"),
        ({"apiVersion": "rerund/v1", "polices": []}, "$: unknown key 'polices'"),
        (
            {"apiVersion": "rerund/v1", "policies": [{"name": "global"}]},
            "$.policies[0].name: matches a 'not' schema",
        ),
        ({"apiVersion": "rerund/v1", "policies": [{"name": "Bad Name"}]}, "does not match"),
        ({"apiVersion": "rerund/v1", "defaults": {"backoff": {"initial": "30"}}}, "matches none of anyOf"),
        (
            {"apiVersion": "rerund/v1", "policies": [{"name": "a", "retry": "yes"}]},
            "does not match exactly one of oneOf",
        ),
    ],
    ids=["no-api-version", "unknown-key", "reserved-name", "bad-name", "bad-duration", "bad-retry"],
)
def test_the_schema_rejects_what_the_loader_rejects(doc, problem):
    found = errors(policy_schema(), doc, policy_schema())
    assert any(problem in e for e in found), found


def test_the_schema_describes_durations_and_retry_false():
    schema = policy_schema()
    backoff = schema["$defs"]["BackoffSpec"]["properties"]["initial"]["anyOf"][0]
    assert backoff["type"] == "string"
    assert re.search(backoff["pattern"], "1h30m") and not re.search(backoff["pattern"], "30")
    retry = schema["$defs"]["PolicySpec"]["properties"]["retry"]["oneOf"]
    assert {"type": "boolean"} in retry
