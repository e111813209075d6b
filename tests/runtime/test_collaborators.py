"""The shell's objects change one another only through methods: no module of ``rerund.runtime``
assigns a field of an object it reached through another (``a.b.c = ...``) nor a private field
of another object (``other._x = ...``), so each field has one owner that keeps its invariants."""

from __future__ import annotations

import ast
from pathlib import Path

import rerund.runtime

RUNTIME = Path(rerund.runtime.__file__).parent


def _writes_through(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            for t in target.elts if isinstance(target, ast.Tuple) else [target]:
                if not isinstance(t, ast.Attribute):
                    continue
                through = isinstance(t.value, ast.Attribute)
                private = t.attr.startswith("_") and not (
                    isinstance(t.value, ast.Name) and t.value.id == "self"
                )
                if through or private:
                    found.append((node.lineno, ast.unparse(t)))
    return found


def test_no_runtime_module_writes_a_field_of_a_collaborator() -> None:
    writes = [
        f"{path.relative_to(RUNTIME)}:{line}: {target}"
        for path in sorted(RUNTIME.rglob("*.py"))
        for line, target in _writes_through(ast.parse(path.read_text()))
    ]
    assert writes == [], "call a method of the object that owns the field instead:\n" + "\n".join(writes)
