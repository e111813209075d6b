"""bench/bench_production.py at a trivial size: a rate-limited storm through rerund, checked for
the shape of its row (no timing is asserted; figures belong in bench/results/)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import bench_production  # noqa: E402
import run_all  # noqa: E402

pytestmark = pytest.mark.e2e


def test_a_rate_limited_storm_row_has_its_rpc_mix_and_no_duplicates(tmp_path: Path) -> None:
    row = bench_production.measure_rerund(
        tmp_path, 3, ("--rate-limit", "20/s"), "smoke", max_concurrent_reruns=8, max_rps=18
    )

    json.dumps(row)
    assert row["reruns"] == 3 and row["duplicates"] == 0 and row["missing"] == 0
    assert row["rpcs_by_method"]["CreateRun"] == 3
    assert row["rpcs_per_rerun"] > 0 and row["max_rps"] == 18


def test_the_readme_renders_the_production_section() -> None:
    assert "production" in run_all.BENCHMARKS
    assert "### " + run_all.TITLES["production"] in run_all.render()
