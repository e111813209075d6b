"""The start-up benchmark's parts at a trivial size (no figure asserted: they belong in
bench/results/)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import bench_startup  # noqa: E402
import run_all  # noqa: E402

pytestmark = pytest.mark.e2e


def test_the_startup_benchmark_times_a_command_and_names_what_it_loaded() -> None:
    cpu, wall, code = bench_startup._timed([sys.executable, "-m", "rerund.cli", "schema"])

    assert code == 0 and cpu > 0 and wall > 0
    assert bench_startup._import_ms(sys.executable, ["schema"]) > 0
    assert bench_startup._heavy(sys.executable, ["schema"]) == "none"
    assert "startup" in run_all.BENCHMARKS and "### " + run_all.TITLES["startup"] in run_all.render()
