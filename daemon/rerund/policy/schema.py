"""The JSON Schema of a policy file (``rerund schema``), generated from the pydantic model
so the schema, the loader and the docs cannot drift apart."""

from __future__ import annotations

from typing import Any

from rerund.policy.model import PolicyFile

__all__ = ["SCHEMA_ID", "policy_schema"]

SCHEMA_ID = "https://rerund.dev/schemas/policy-v1.json"


def policy_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of ``apiVersion: rerund/v1`` policy files."""
    schema = PolicyFile.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "rerund policy file (apiVersion: rerund/v1)",
        **{k: v for k, v in schema.items() if k != "title"},
    }
