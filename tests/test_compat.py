"""`make compat` as a test: the adapter and port contract tests pass with the oldest and the newest
flyte release pyproject.toml declares, each in its own venv (tests/compat.py). Over two minutes
(two pip installs and two runs of about 200 tests), so it runs in `make chaos`, not `make test`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_contract_tests_pass_on_the_oldest_and_the_newest_flyte_of_the_declared_range() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "compat.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1750,
    )
    summary = [line for line in proc.stdout.splitlines() if line.startswith("compat ")]
    assert proc.returncode == 0, "\n".join(summary) + "\n" + proc.stdout[-4000:] + proc.stderr[-2000:]
    assert [line.split()[1] for line in summary] == ["oldest", "newest"]
    assert all(": passed (" in line for line in summary), summary
