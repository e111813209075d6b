"""``rerund repro list | run | history``: help that teaches, results against the sandbox (real SDK,
real HTTP), the ledger read back, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rerund.cli import main

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e

WORKLOAD = {
    "tasks": {
        "det.train": {"outputs": {"accuracy": 0.93, "rows": 1000}},
        "noisy.train": {"outputs": {"accuracy": 0.93, "loss": {"random": [0.1, 0.2]}}},
    }
}
POLICIES = """\
apiVersion: rerund/v1
reproductions:
  - name: det
    schedule: "0 3 * * *"
    source: {task: det.train}
    timeout: 1m
  - name: noisy
    schedule: "30 2 * * 1-5"
    timezone: Europe/Paris
    source: {task: noisy.train}
    compare: {outputs: tolerance, tolerance: {rel: 1.0e-6}, ignore: [timestamp]}
"""


@pytest.fixture
def config(tmp_path):
    (tmp_path / "policies.yaml").write_text(POLICIES)
    path = tmp_path / "rerund.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "endpoint": "http://127.0.0.1:1",
                "org": "sandbox",
                "scopes": ["demo/development"],
                "policies": [str(tmp_path / "policies.yaml")],
                "state": str(tmp_path / "rerund.db"),
            }
        )
    )
    return path


@pytest.fixture
def live(sandbox_factory, config):
    """The config pointed at a running sandbox with one reference run of each task."""
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.01)
    data = yaml.safe_load(config.read_text())
    data["endpoint"] = sb.endpoint
    config.write_text(yaml.safe_dump(data))
    for task in ("det.train", "noisy.train"):
        [name] = sb.launch(task)
        sb.wait_for(name)
    return config


def test_help_explains_checks_results_and_the_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["repro", "--help"])
    out = capsys.readouterr().out
    assert "reruns a reference run on a schedule" in out
    for line in ("match ", "mismatch ", "failed ", "timeout ", "list ", "run ", "history "):
        assert line in out
    assert "rerund repro run daily-metrics --config rerund.example.yaml" in out
    assert "rerund repro list --policies policies/reproductions.yaml" in out
    assert (REPO / "policies" / "reproductions.yaml").exists(), "the example the help points at"

    with pytest.raises(SystemExit):
        main(["repro", "run", "--help"])
    assert "Exit status 0 when it reproduced, 1 when not." in " ".join(capsys.readouterr().out.split())


def test_list_shows_schedule_next_firing_source_and_comparison(config, capsys):
    assert main(["repro", "list", "--config", str(config)]) == 0
    out = capsys.readouterr().out

    assert "det\n  schedule   0 3 * * * (UTC), next " in out
    assert "  source     latest SUCCEEDED run of task 'det.train'\n" in out
    assert "  compare    phase yes, outputs tolerance (rel 1e-06, abs 0), ignoring timestamp\n" in out
    assert "noisy\n  schedule   30 2 * * 1-5 (Europe/Paris), next " in out


def test_list_as_json(config, capsys):
    assert (
        main(["repro", "list", "--policies", str(config.parent / "policies.yaml"), "--format", "json"]) == 0
    )
    rows = json.loads(capsys.readouterr().out)

    assert [r["name"] for r in rows] == ["det", "noisy"]
    assert rows[1]["compare"] == {
        "phase": True,
        "outputs": "tolerance",
        "tolerance": {"rel": 1e-6, "abs": 0.0},
        "ignore": ["timestamp"],
    }
    assert rows[0]["next_firing"].endswith("T03:00:00Z") and rows[0]["last_result"] is None


def test_run_fires_now_prints_the_result_and_history_reads_it_back(live, capsys):
    assert main(["repro", "run", "det", "--config", str(live)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("match: check 'det': rerun 'rm-det-")
    assert out.rstrip().endswith("2 outputs equal (exact)")
    first = out.split("rerun '", 1)[1].split("'", 1)[0]

    assert main(["repro", "run", "det", "--config", str(live), "--format", "json"]) == 0
    captured = capsys.readouterr()
    again = json.loads(captured.out)
    assert again["result"] == "match" and again["manual"] is True and again["diff"] == []
    # Fired twice in one minute: the same (deterministic) rerun is followed, and it is said.
    reused = again["rerun"] == first
    assert ("was already fired by hand this minute: its rerun" in captured.err) == reused

    assert main(["repro", "history", "det", "--config", str(live)]) == 0
    line = capsys.readouterr().out
    assert "(manual)  match: check 'det'" in line

    assert main(["repro", "list", "--config", str(live)]) == 0
    assert "  last       match (slot " in capsys.readouterr().out


def test_a_mismatch_exits_1_and_shows_the_diff_in_text_and_json(live, capsys):
    assert main(["repro", "run", "noisy", "--config", str(live)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("mismatch: check 'noisy': rerun 'rm-noisy-")
    assert "\n  outputs.loss: " in out and "(rel diff " in out

    assert main(["repro", "history", "noisy", "--config", str(live), "--format", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["result"] == "mismatch" and row["manual"] is True
    assert [d["path"] for d in row["diff"]] == ["outputs.loss"]


def test_an_unknown_check_name_says_which_checks_exist(config, capsys):
    assert main(["repro", "run", "nightly", "--config", str(config)]) == 2
    assert (
        "rerund repro: no reproduction check named 'nightly'; the checks are: det, noisy"
        in capsys.readouterr().err
    )

    (config.parent / "rerund.db").touch()
    assert main(["repro", "history", "nightly", "--config", str(config)]) == 2
    assert (
        "rerund repro: no reproduction check named 'nightly'; the checks are: det, noisy"
        in capsys.readouterr().err
    )


def test_run_needs_a_control_plane_as_rerund_run_does(capsys, monkeypatch):
    for name in ("RERUND_ENDPOINT", "FLYTE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert main(["repro", "run", "det"]) == 2
    assert (
        "rerund repro: no control plane configured: set endpoint in rerund.yaml, RERUND_ENDPOINT or "
        "--endpoint"
    ) in capsys.readouterr().err


def test_history_without_a_ledger_says_where_it_looked(tmp_path, capsys):
    assert main(["repro", "history", "det", "--state", str(tmp_path / "none.db")]) == 2
    assert f"rerund repro: no ledger at '{tmp_path / 'none.db'}': pass --state PATH or --config FILE" in (
        capsys.readouterr().err
    )
