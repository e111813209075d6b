"""Every benchmark's core function at a trivial size, checked for the shape of its JSON, so a
broken benchmark fails CI. No timing is asserted here (figures belong in bench/results/)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import bench_cron  # noqa: E402
import bench_decide  # noqa: E402
import bench_fingerprint  # noqa: E402
import bench_latency  # noqa: E402
import bench_memory  # noqa: E402
import bench_rpc_cost  # noqa: E402
import bench_storm  # noqa: E402
import bench_watch  # noqa: E402
import harness  # noqa: E402
import run_all  # noqa: E402

pytestmark = pytest.mark.e2e


def _table_shape(doc: dict[str, Any]) -> None:
    json.dumps(doc)  # serialisable
    assert doc["machine"]["cores"] and doc["machine"]["python"]
    columns, rows = doc["table"]["columns"], doc["table"]["rows"]
    assert rows and all(columns[0] in r for r in rows)
    assert harness.markdown(columns, rows).count("\n") == len(rows) + 1


def test_latency_measures_watch_reactions() -> None:
    doc = bench_latency.run(modes={"watch": 2})

    _table_shape(doc)
    [row] = doc["results"]
    assert row["mode"] == "watch" and row["n"] == 2 and row["p50_ms"] > 0
    assert doc["goal_met"] in (True, False)


def test_storm_measures_the_createrun_ceiling_and_rerund(tmp_path: Path) -> None:
    ceiling = bench_storm.measure_ceiling(tmp_path, 3, "raw")
    ours = bench_storm.measure_rerund(tmp_path, 3)

    assert ceiling["who"] == "ceiling: CreateRun alone" and ceiling["reruns_per_s"] > 0
    assert ceiling["rpcs"]["CreateRun"] == 3  # one through the SDK (captured), two bare
    assert ours["reruns"] == 3 and ours["duplicates"] == 0 and ours["missing"] == 0
    assert ours["daemon_peak_rss_mib"] > 0


def test_rpc_cost_counts_rpcs_per_failure_and_repeats() -> None:
    doc = bench_rpc_cost.run(k=3, poll="1s")

    _table_shape(doc)
    assert doc["totals"]["ignored"] >= 3 and doc["totals"]["rerun"] > doc["totals"]["ignored"]
    assert doc["per_rerun_failure"]["CreateRun"] == 1.0
    oss = doc["profiles"]["oss"]
    assert oss["per_rerun_failure"]["CreateRun"] == 1.0 and oss["duplicates"] == 0
    assert oss["per_rerun_failure"]["GetRunDetails"] > doc["per_rerun_failure"]["GetRunDetails"]
    assert doc["table"]["columns"] == ["rpc", "ignored", "rerun", "ignored_oss", "rerun_oss", "sdk_rerun"]
    assert set(doc["goals_met"]) == {
        "ignored_at_most_3",
        "rerun_at_most_sdk_plus_3",
        "no_rpc_repeated_per_run",
    }


def test_cron_script_and_rerund_measurements(tmp_path: Path) -> None:
    script = bench_cron.measure_script(tmp_path, 1, "deterministic", crash=False)
    ours = bench_cron.measure_rerund(tmp_path, 2, crash=True)

    assert script["reruns"] == 1 and script["duplicates"] == 0 and script["cpu_s"] > 0
    assert ours["crashed"] and ours["missing"] == 0 and ours["duplicates"] == 0


def test_memory_samples_rss_per_wave_and_the_retention_bound() -> None:
    doc = bench_memory.run(wave=5, waves=1)

    _table_shape(doc)
    assert [r["failures"] for r in doc["results"]] == [0, 5]
    assert doc["retention"]["pruned_rows"] >= 10 and doc["ledger_bytes_per_decision"] > 0


def test_decide_measures_one_size(tmp_path: Path) -> None:
    row = bench_decide.bench_size(10, tmp_path)

    assert row["policies"] == 10 and row["first_us"] > 0 and row["naive_us"] > 0


def test_fingerprint_measures_every_kind_of_message() -> None:
    doc = bench_fingerprint.run(sizes=(200,), repeat=3)

    json.dumps(doc)
    [row] = doc["results"]
    assert set(doc["table"]["columns"]) == set(row) and all(v > 0 for v in row.values())


def test_run_all_regenerates_only_the_marked_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "# B\n\nintro\n\n<!-- bench:begin -->\nSTALE-TABLE\n<!-- bench:end -->\n\n"
        "<!-- reliability:begin -->\nkept\n<!-- reliability:end -->\n"
    )

    run_all.update_readme(readme)

    text = readme.read_text()
    assert "STALE-TABLE" not in text and "intro" in text and "kept" in text
    assert "### 4. Matching cost" in text


def test_watch_measures_the_delivery_of_phase_changes() -> None:
    doc = bench_watch.run(updates=4)

    _table_shape(doc)
    [row] = doc["results"]
    assert row["n"] == 4 and row["min"] >= 0
    assert isinstance(doc["goal_met"], bool)
    assert "7. Sandbox WatchRuns delivery" in run_all.TITLES["watch"]
