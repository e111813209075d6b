"""The issue-24 benchmarks' core functions at a trivial size, checked for the shape of their
JSON (no figure asserted: they belong in bench/results/)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import bench_ledger  # noqa: E402
import bench_message_memory  # noqa: E402
import run_all  # noqa: E402

pytestmark = pytest.mark.e2e


def test_ledger_bytes_per_ignored_failure_are_measured_from_the_file() -> None:
    row = bench_ledger.measure_direct(200, None)

    json.dumps(row)
    assert row["failures"] == 200 and row["bytes_per_failure"] > 0 and "decisions" in row["largest"]


def test_message_memory_reads_the_daemons_held_bytes(monkeypatch) -> None:
    monkeypatch.setattr(bench_message_memory, "WAVE", 3)
    row = bench_message_memory.measure(3, 1024 * 1024)

    json.dumps(row)
    assert row["failures"] == 3 and row["rss_mib"] > 0
    assert 0 < row["read_cache_bytes"] < 1024 * 1024  # the reads are kept, the messages are not


def test_the_new_benchmarks_have_titles_and_render() -> None:
    for name in ("message_memory", "ledger", "defaults"):
        assert name in run_all.BENCHMARKS and (BENCH / f"bench_{name}.py").exists()
    assert "soak" in run_all.TITLES and (BENCH / "bench_soak.py").exists()
    assert "### " + run_all.TITLES["ledger"] in run_all.render()
