"""The layout in docs/architecture.md tells the truth about the code: every module of the
``rerund`` package (but the Alembic revisions) has its line there, at its place in the tree, so
the one description of the architecture does not drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _layout_paths() -> set[str]:
    """The paths the tree names: each line's name under the directories above it (two spaces
    per level, a directory ends with ``/``)."""
    text = (REPO / "docs" / "architecture.md").read_text()
    block = text.split("```\n", 1)[1].split("```", 1)[0]
    paths: set[str] = set()
    above: list[str] = []
    for line in block.splitlines():
        found = re.match(r"^( *)(\S+)", line)
        if found is None:
            continue
        depth, name = len(found.group(1)) // 2, found.group(2)
        above = above[:depth]
        paths.add("/".join([*(d.rstrip("/") for d in above), name]))
        if name.endswith("/"):
            above.append(name)
    return paths


def test_every_module_of_the_package_has_its_line_in_the_architecture_layout() -> None:
    listed = _layout_paths()
    package = REPO / "daemon" / "rerund"
    modules = sorted(
        p.relative_to(REPO).as_posix()
        for p in package.rglob("*.py")
        if p.name != "__init__.py" and "migrations" not in p.parts
    )
    assert [m for m in modules if m not in listed] == []


def test_the_layout_names_no_module_that_does_not_exist() -> None:
    missing = sorted(p for p in _layout_paths() if p.endswith(".py") and not (REPO / p).exists())
    assert missing == []
