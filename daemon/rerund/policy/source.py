"""Located YAML: parse a document once, keep its node tree, and report every problem as
``file:line:col: yaml.path: message``.

Pydantic validates the plain data; its error locations (``('policies', 2, 'match', ...)``)
are mapped back onto the node tree to find the line and column, and its messages are
rewritten to say what to do. Bad bytes, malformed YAML, several documents, duplicate keys,
unsafe tags and documents over the alias or depth budget (``rerund.safeyaml``, the one loader
for every file rerund reads) are all reported the same way, never as a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from rerund.errors import PolicyProblem
from rerund.safeyaml import Document, decode, load_text

__all__ = ["Document", "format_path", "locate", "message_for", "parse_text", "read_document", "validate"]

M = TypeVar("M", bound=BaseModel)
# Union/discriminator tags pydantic puts into error locations; not part of the YAML path.
_TAGS = frozenset({"spec", "flag"})
MAX_FILE_BYTES = 64 << 20


def format_path(loc: Sequence[str | int]) -> str:
    """``('policies', 2, 'match')`` -> ``policies[2].match``."""
    out = ""
    for part in loc:
        if isinstance(part, bool):  # a mapping key YAML read as a bool (escalate: {true: ...})
            out += f"[{str(part).lower()}]"
        elif isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _problem(file: str, line: int, column: int, path: str, message: str) -> PolicyProblem:
    return PolicyProblem(file=file, line=line, column=column, path=path, message=message)


def read_document(path: Path, display: str | None = None) -> tuple[Document | None, list[PolicyProblem]]:
    """Read and parse one YAML file; problems instead of exceptions."""
    file = display or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return None, [
                _problem(
                    file, 1, 1, "", f"file is {size} bytes, over the {MAX_FILE_BYTES} byte limit; split it"
                )
            ]
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, [_problem(file, 1, 1, "", "no such file; check the path")]
    except IsADirectoryError:
        return None, [_problem(file, 1, 1, "", "is a directory, expected a YAML file")]
    except OSError as exc:
        return None, [_problem(file, 1, 1, "", f"cannot be read: {exc.strerror or exc}")]
    text, problems = decode(raw, file)
    if text is None:
        return None, problems
    return parse_text(text, file)


def parse_text(text: str, file: str) -> tuple[Document | None, list[PolicyProblem]]:
    """Parse one YAML document from ``text`` with the one safe loader; problems, never exceptions."""
    return load_text(text, file)


def locate(
    node: yaml.Node | None, loc: Sequence[str | int], *, at_key: bool = False
) -> tuple[int, int, tuple[str | int, ...]]:
    """Line, column (1-based) and YAML path of ``loc`` in the node tree.

    Walks as deep as the tree goes: a missing key points at its mapping; with ``at_key`` the
    last key itself (for unknown keys) rather than its value; pydantic's union tags are
    skipped.
    """
    if node is None:
        return 1, 1, tuple(p for p in loc if p not in _TAGS)
    mark = node.start_mark
    path: list[str | int] = []
    current: yaml.Node | None = node
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(current, yaml.MappingNode):
            hit = next(((k, v) for k, v in current.value if _is_key(k, part)), None)
            if hit is None:
                if part in _TAGS:
                    continue
                path.append(part)
                current = None  # a missing key: stay at the mapping's mark
                continue
            path.append(part)
            mark = hit[0].start_mark if at_key and part == loc[-1] else hit[1].start_mark
            current = hit[1]
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int) and part < len(current.value):
            path.append(part)
            current = current.value[part]
            mark = current.start_mark
        else:
            if part in _TAGS or (isinstance(part, str) and part.startswith(("function-", "list[", "dict["))):
                continue
            path.append(part)
    return mark.line + 1, mark.column + 1, tuple(path)


def _is_key(node: yaml.Node, part: str | int) -> bool:
    """``node`` is the mapping key ``part``; a bool ``part`` is any YAML 1.1 spelling of it."""
    if not isinstance(node, yaml.ScalarNode):
        return False
    if isinstance(part, bool):
        spelled = yaml.constructor.SafeConstructor.bool_values.get(node.value.lower())
        return node.tag == "tag:yaml.org,2002:bool" and spelled is part
    return bool(node.value == str(part))


def message_for(err: Any) -> str:
    """A pydantic error rewritten to say what is wrong and what to write instead."""
    kind = err["type"]
    loc = err["loc"]
    value = err.get("input")
    field = next((p for p in reversed(loc) if isinstance(p, str) and p not in _TAGS and p != "[key]"), "")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"unknown key {field!r}"
    if kind == "missing":
        return f"missing required key {field!r}"
    if kind in ("string_type",):
        if field in ("env", "labels") or (len(loc) >= 2 and loc[-2] in ("env", "labels")):
            return f"expected a string, got {_show(value)}; quote the value in YAML, e.g. '{_plain(value)}'"
        return f"expected a string, got {_show(value)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {_show(value)}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {_show(value)}"
    if kind == "finite_number":
        return f"expected a finite number, got {_show(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {_show(value)}"
    if kind in ("list_type", "tuple_type", "set_type"):
        return f"expected a list, got {_show(value)}; write e.g. [a, b]"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, got {_show(value)}"
    if kind in ("literal_error", "enum"):
        return f"{_show(value)} is not allowed; use {ctx.get('expected', '')}"
    if kind == "too_short":
        return "empty list; list at least one value or omit the key to match any value"
    if kind in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<", "less_than_equal": "<="}[
            kind
        ]
        bound = next(iter(ctx.values()), "")
        return f"must be {op} {bound}, got {_show(value)}"
    if kind == "path_type":
        return f"expected a file or directory path, got {_show(value)}"
    if kind == "string_pattern_mismatch":
        return f"{_show(value)} does not have the required form"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "union_tag_invalid":
        return f"expected true, false or a mapping, got {_show(value)}"
    return str(err["msg"])


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null (an empty value)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def validate(
    model: type[M],
    doc: Document,
    *,
    data: Any = None,
    node: yaml.Node | None = None,
    base: tuple[str | int, ...] = (),
    allowed: Mapping[str, Sequence[str]] | None = None,
    context: Mapping[str, Any] | None = None,
) -> tuple[M | None, list[PolicyProblem]]:
    """Validate ``data`` (default: the whole document) against ``model``; located problems.

    ``node``/``base`` locate a sub-document (e.g. one test case's failure); ``allowed`` maps
    a parent key name to the keys allowed under it, to list them in "unknown key" messages;
    ``context`` is pydantic's validation context (checks the model's validators call).
    """
    target = doc.data if data is None and node is None else data
    tree = doc.node if node is None else node
    try:
        return model.model_validate(target, context=context), []
    except ValidationError as exc:
        problems: list[PolicyProblem] = []
        seen: set[tuple[int, int, str]] = set()
        for err in exc.errors(include_url=False):
            loc = err["loc"]
            if len(loc) >= 2 and loc[-1] == "[key]" and isinstance(err.get("input"), bool):
                loc = (*loc[:-2], err["input"], "[key]")  # pydantic reports a bool key as 0 or 1
            line, column, path = locate(tree, loc, at_key=err["type"] == "extra_forbidden")
            message = message_for(err)
            if err["type"] == "extra_forbidden" and allowed is not None:
                parent = next((p for p in reversed(path[:-1]) if isinstance(p, str)), "")
                keys = allowed.get(parent)
                if keys:
                    close = difflib.get_close_matches(str(path[-1]), list(keys), n=1)
                    hint = f"did you mean {close[0]!r}? " if close else ""
                    message += f"; {hint}allowed keys: {', '.join(keys)}"
            key = (line, column, message)
            if key in seen:
                continue
            seen.add(key)
            problems.append(_problem(doc.file, line, column, format_path((*base, *path)), message))
        return None, sorted(problems, key=lambda p: (p.line, p.column))
