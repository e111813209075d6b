"""mkdocs hooks of the rerund docs (``hooks:`` in mkdocs.yml; not a page: ``exclude_docs``).

- ``policies/reference.md`` is generated at every build from the policy files' JSON Schema
  (``rerund.policy.schema.policy_schema``, what ``rerund schema`` prints), so the reference
  cannot drift from the loader: ``reference_markdown`` writes one table per object of the schema.
- Pages of ``extra.optional_pages`` that do not exist (yet) are left out of the nav, so a page
  another change adds is listed by adding one line to mkdocs.yml, and the build stays strict.
- Pictures kept elsewhere in the repository (``bench/operator-page.png``) are served under
  ``assets/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ASSETS = {"assets/operator-page.png": REPO / "bench" / "operator-page.png"}
REFERENCE = "policies/reference.md"


def _kind(schema: dict[str, Any]) -> str:
    """A property's type in words: ``string``, ``list of PolicySpec``, ``one of: same, latest``."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        kinds = [_kind(s) for s in schema["anyOf"] if s.get("type") != "null"]
        return " or ".join(dict.fromkeys(kinds))
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return "list of " + _kind(schema.get("items", {}))
    if kind == "object" and "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
        return "map to " + _kind(schema["additionalProperties"])
    if isinstance(kind, list):
        return " or ".join(kind)
    bounds = [
        f"{word} {schema[key]}"
        for key, word in (("minimum", ">="), ("maximum", "<="), ("exclusiveMinimum", ">"))
        if key in schema and not (key == "maximum" and schema[key] >= 2**31)
    ]
    return str(kind) + (f" ({', '.join(bounds)})" if bounds else "")


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(schema: dict[str, Any]) -> list[str]:
    required = set(schema.get("required", []))
    rows = ["| key | type | required | default | meaning |", "|---|---|---|---|---|"]
    for key, prop in schema.get("properties", {}).items():
        if prop.get("deprecated"):
            continue
        default = f"`{json.dumps(prop['default'])}`" if "default" in prop and prop["default"] is not None else ""
        rows.append(
            f"| `{key}` | {_cell(_kind(prop))} | {'yes' if key in required else ''} | {_cell(default)} "
            f"| {_cell(prop.get('description', ''))} |"
        )
    return rows


def reference_markdown(schema: dict[str, Any]) -> str:
    """The policy file reference page for ``schema`` (pure): the top level, then each object
    of ``$defs`` in name order, a table of its keys each (removed keys left out)."""
    out = [
        "# Policy file reference",
        "",
        "Generated from the JSON Schema of policy files at every docs build (`rerund schema` prints",
        "the same schema, for editors). Every key of every object, its type, its default and what it",
        "does; [Policies](index.md) explains how they work together.",
        "",
        "## Policy file",
        "",
        schema.get("description", ""),
        "",
        *_table(schema),
    ]
    for name, sub in sorted(schema.get("$defs", {}).items()):
        out += ["", f"## {name}", ""]
        if sub.get("description"):
            out += [_cell(sub["description"]), ""]
        if "enum" in sub:
            out.append("One of " + ", ".join(f"`{v}`" for v in sub["enum"]) + ".")
        elif "properties" in sub:
            out += _table(sub)
    return "\n".join(out) + "\n"


def _present(entry: Any, docs: Path, optional: set[str]) -> Any:
    """``entry`` of the nav without the optional pages that do not exist (None: drop it)."""
    if isinstance(entry, str):
        return None if entry in optional and not (docs / entry).exists() else entry
    if isinstance(entry, dict):
        out = {}
        for title, value in entry.items():
            kept = _present(value, docs, optional)
            if kept not in (None, []):
                out[title] = kept
        return out or None
    if isinstance(entry, list):
        return [kept for item in entry if (kept := _present(item, docs, optional)) is not None]
    return entry


def on_config(config: Any) -> Any:
    optional = set(config["extra"].get("optional_pages", []))
    config["nav"] = _present(config["nav"], Path(config["docs_dir"]), optional)
    return config


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    from rerund.policy.schema import policy_schema

    files.append(File.generated(config, REFERENCE, content=reference_markdown(policy_schema())))
    for target, source in ASSETS.items():
        files.append(File.generated(config, target, content=source.read_bytes()))
    return files
