"""The layout in docs/architecture.md tells the truth about the shell: every module of
``rerund.runtime`` has its line there (name and what it does), so the one description of the
architecture does not drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import rerund.runtime

REPO = Path(__file__).resolve().parents[2]
RUNTIME = Path(rerund.runtime.__file__).parent


def test_every_runtime_module_has_its_line_in_the_architecture_layout() -> None:
    layout = (REPO / "docs" / "architecture.md").read_text()
    listed = set(re.findall(r"^ +([\w/]+\.py) {2,}\S", layout, flags=re.MULTILINE))
    modules = sorted(p.name for p in RUNTIME.rglob("*.py") if p.name != "__init__.py")
    assert [m for m in modules if m not in listed] == []
