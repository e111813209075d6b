"""The PostgreSQL-vs-SQLite storm benchmark at a trivial size, checked for the shape of its JSON
(no figure asserted: they belong in bench/results/)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_state

pytestmark = pytest.mark.e2e


def test_the_state_bench_runs_one_storm_per_backend() -> None:
    doc = bench_state.run(3, 1)

    assert [r["backend"] for r in doc["results"]] == ["sqlite", "postgresql"]
    assert all(r["reruns"] == 3 and r["duplicates"] == 0 and r["missing"] == 0 for r in doc["results"])
    assert doc["postgresql_share_of_sqlite_rate"] > 0
    assert set(doc["median_cpu_ms_per_rerun"]) == {"sqlite", "postgresql"}
