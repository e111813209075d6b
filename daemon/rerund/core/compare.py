"""Typed comparison of two runs' outputs, field by field, for reproduction checks.

Outputs arrive as plain Python values decoded from Flyte literals (the adapter decodes them):
``None``, ``bool``, ``int``, ``float``, ``str``, lists and string-keyed maps, nested. This
module compares a reference run's outputs with a rerun's and returns every difference with a
readable path, e.g.::

    outputs.metrics.loss: 0.31 != 0.29 (rel diff 6.5% > 1e-06)
    outputs.losses[2]: missing in the rerun (reference: 0.1)
    outputs.model: type differs: str 'a.pt' != int 3

Rules (the README and the tests say the same):

- ``exact``: values must be equal. Numbers compare by value (``1 == 1.0``); ``NaN`` equals
  ``NaN`` (a NaN that reproduces is a reproduction); ``bool`` is not a number.
- ``tolerance``: like ``exact`` except that two numbers (at any depth) are equal when
  ``|a - b| <= max(abs, rel * max(|a|, |b|))`` — ``math.isclose`` semantics.
- ``none``: outputs are not compared.
- ``ignore`` lists output names (``timestamp``) or deeper paths (``metrics.wall_time``,
  ``losses[0]``) that are skipped.
- A key in one map but not the other, or lists of different lengths, are differences; so is
  a change of type (``str`` vs ``int``, a list vs a map).

Pure functions, no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Difference", "OutputsMode", "Tolerance", "compare_outputs", "show_value"]

OutputsMode = Literal["exact", "tolerance", "none"]
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*\Z")
_MAX_SHOWN = 60


@dataclass(frozen=True)
class Tolerance:
    """How far two numbers may differ and still count as equal."""

    rel: float = 0.0
    abs: float = 0.0

    def allows(self, a: float, b: float) -> bool:
        return abs(a - b) <= max(self.abs, self.rel * max(abs(a), abs(b)))


@dataclass(frozen=True)
class Difference:
    """One difference: where (``outputs.metrics.loss``) and what (``0.31 != 0.29 (...)``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


def show_value(value: Any) -> str:
    """A short, readable form of a value for a diff line (YAML-ish: true, null, 'text')."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping):
        text = "{" + ", ".join(f"{k}: {show_value(v)}" for k, v in value.items()) + "}"
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(show_value(v) for v in value) + "]"
    else:
        text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def _type_name(value: Any) -> str:
    kind = _kind(value)
    return type(value).__name__ if kind == "number" else kind


def _key(parent: str, key: str) -> str:
    if _IDENT.match(key):
        return f"{parent}.{key}" if parent else key
    return f"{parent}[{key!r}]"


def compare_outputs(
    reference: Mapping[str, Any],
    rerun: Mapping[str, Any],
    *,
    mode: OutputsMode = "exact",
    tolerance: Tolerance | None = None,
    ignore: Collection[str] = (),
    root: str = "outputs",
) -> list[Difference]:
    """Every difference between ``reference`` and ``rerun`` outputs, in a stable order.

    Invariants: ``compare_outputs(x, x) == []`` for any value (NaN included); the result is
    empty when ``mode == "none"``; no path in ``ignore`` (or below it) is ever reported.
    Paths start with ``root`` (``outputs.``) and use ``.name`` for identifier keys,
    ``['odd key']`` for others and ``[i]`` for list items.
    """
    if mode == "none":
        return []
    tol = tolerance if mode == "tolerance" and tolerance is not None else Tolerance()
    out: list[Difference] = []
    _compare_maps(reference, rerun, "", tol, frozenset(ignore), root, out)
    return out


def _full(root: str, rel: str) -> str:
    if not root:
        return rel
    return f"{root}{rel}" if rel.startswith("[") else f"{root}.{rel}"


def _compare(
    a: Any, b: Any, rel: str, tol: Tolerance, ignore: frozenset[str], root: str, out: list[Difference]
) -> None:
    if rel in ignore:
        return
    ka, kb = _kind(a), _kind(b)
    path = _full(root, rel)
    if ka != kb:
        out.append(
            Difference(
                path, f"type differs: {_type_name(a)} {show_value(a)} != {_type_name(b)} {show_value(b)}"
            )
        )
        return
    if ka == "map":
        _compare_maps(a, b, rel, tol, ignore, root, out)
    elif ka == "list":
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            _compare(x, y, f"{rel}[{i}]", tol, ignore, root, out)
        if len(a) != len(b):
            longer, where = (a, "the rerun") if len(a) > len(b) else (b, "the reference")
            extra = len(longer) - min(len(a), len(b))
            out.append(
                Difference(
                    path,
                    f"list length {len(a)} != {len(b)} ({extra} item{'s' if extra != 1 else ''} "
                    f"missing in {where}, from index {min(len(a), len(b))})",
                )
            )
    elif ka == "number":
        message = _numbers(float(a), float(b), a, b, tol)
        if message:
            out.append(Difference(path, message))
    elif a != b:
        out.append(Difference(path, f"{show_value(a)} != {show_value(b)}"))


def _numbers(fa: float, fb: float, a: Any, b: Any, tol: Tolerance) -> str | None:
    if math.isnan(fa) or math.isnan(fb):
        return None if math.isnan(fa) and math.isnan(fb) else f"{show_value(a)} != {show_value(b)}"
    if fa == fb:
        return None
    if tol.rel == 0 and tol.abs == 0:
        return f"{show_value(a)} != {show_value(b)}"
    if math.isinf(fa) or math.isinf(fb):
        return f"{show_value(a)} != {show_value(b)}"
    if tol.allows(fa, fb):
        return None
    diff = abs(fa - fb)
    parts = []
    if tol.rel > 0:  # fa != fb, so the scale is > 0
        parts.append(f"rel diff {_percent(diff / max(abs(fa), abs(fb)))} > {tol.rel:g}")
    if tol.abs > 0:
        parts.append(f"abs diff {diff:.3g} > {tol.abs:g}")
    return f"{show_value(a)} != {show_value(b)} ({', '.join(parts)})"


def _percent(ratio: float) -> str:
    pct = ratio * 100
    if pct >= 10:
        return f"{pct:.0f}%"
    if pct >= 0.1:
        return f"{pct:.1f}%"
    return f"{pct:.2g}%"


def _compare_maps(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    rel: str,
    tol: Tolerance,
    ignore: frozenset[str],
    root: str,
    out: list[Difference],
) -> None:
    def ignored(key: str, child: str) -> bool:
        # Output names (top level) may be listed as written, whatever characters they use.
        return child in ignore or (not rel and key in ignore)

    for key in a:
        child = _key(rel, str(key))
        if ignored(str(key), child):
            continue
        if key not in b:
            out.append(
                Difference(_full(root, child), f"missing in the rerun (reference: {show_value(a[key])})")
            )
            continue
        _compare(a[key], b[key], child, tol, ignore, root, out)
    for key in b:
        child = _key(rel, str(key))
        if key not in a and not ignored(str(key), child):
            out.append(Difference(_full(root, child), f"not in the reference (rerun: {show_value(b[key])})"))
