"""The docs' SDK snippet (docs/sandbox.md, marked ``sdk`` for tests/docs), run as written against
the sandbox with the real flyte SDK."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

PAGE = Path(__file__).resolve().parents[2] / "docs" / "sandbox.md"

WORKLOAD = {
    "tasks": {
        "train.fit": {
            "duration": "0.1s",
            "behaviour": ["fail"],
            "error": {"kind": "SYSTEM", "code": "ConnectionResetError", "message": "reset"},
        }
    }
}


def snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)
    [block] = [b for b in blocks if "with_runcontext" in b]
    return block


def test_the_docs_sdk_snippet_reruns_a_failed_run_by_name(sandbox_factory) -> None:
    code = snippet()
    assert ".rerun(failed.name)" in code, "flyte 2.12.1's rerun takes the run's name"
    assert "-retry-" not in code.split("#")[0], "a manual rerun must not take rerund's own names"
    sb = sandbox_factory(workload=WORKLOAD)
    [name] = sb.launch("train.fit")
    sb.wait_for(name)
    code = code.replace("http://127.0.0.1:8090", sb.endpoint)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manual = f"{name[:20]}-manual"
    assert proc.stdout.split()[0] == manual
    run = sb.run(manual)
    assert run["labels"]["by"] == "me"
    assert run["relation"]["run"] == name
