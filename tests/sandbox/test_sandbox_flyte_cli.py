"""The real ``flyte`` CLI (installed with the SDK) pointed at the sandbox through the config
file ``rerund sandbox`` writes: get run, get run NAME, get action RUN, rerun --name,
rerun --action-name, abort run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rerund.cli.sandbox import flyte_cli_config

pytestmark = pytest.mark.e2e

FLYTE = str(Path(sys.executable).with_name("flyte"))
WORKLOAD = {
    "tasks": {
        "etl.pipeline": {"children": ["etl.extract", "etl.load"]},
        "etl.extract": {"behaviour": ["succeed"]},
        "etl.load": {
            "behaviour": ["fail", "succeed"],
            "error": {"kind": "SYSTEM", "code": "HTTPError", "message": "HTTPError: 503 Service Unavailable"},
        },
        "sleepy": {"duration": "1h"},
    }
}


@pytest.fixture
def cli(sandbox_factory, tmp_path):
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.01)
    config = tmp_path / "flyte.yaml"
    config.write_text(flyte_cli_config(sb.endpoint, org=sb.org, project=sb.project, domain=sb.domain))
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "250", "TERM": "dumb"}

    def flyte(*args: str) -> str:
        proc = subprocess.run(
            [FLYTE, "--config", str(config), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    flyte.sb = sb  # type: ignore[attr-defined]
    return flyte


def test_get_run_lists_the_runs(cli):
    names = cli.sb.launch("etl.pipeline", count=2)
    cli.sb.wait_idle()

    out = cli("-of", "json", "get", "run")

    assert all(name in out for name in names)
    assert "etl.pipeline" in out


def test_get_run_by_name_shows_its_details(cli):
    [name] = cli.sb.launch("etl.pipeline", labels={"team": "data"})
    cli.sb.wait_idle()

    out = cli("-of", "json", "get", "run", name)

    assert name in out
    assert "team" in out and "data" in out
    assert "ACTION_PHASE_FAILED" in out or "FAILED" in out


def test_get_action_lists_the_actions_of_a_run(cli):
    [name] = cli.sb.launch("etl.pipeline")
    cli.sb.wait_idle()

    out = cli("-of", "json", "get", "action", name)

    assert all(f"'{a}'" in out or f'"{a}"' in out for a in ("a0", "a1", "a2"))
    assert "etl.load" in out


def test_rerun_with_a_name_creates_a_related_run_that_follows_the_lineage(cli):
    [name] = cli.sb.launch("etl.pipeline")
    cli.sb.wait_idle()

    out = cli("rerun", name, "--name", "retry-1")

    assert "retry-1" in out
    snap = cli.sb.wait_for("retry-1")
    assert snap["relation"] == {"run": name, "type": "RERUN"}
    assert snap["phase"] == "SUCCEEDED"  # etl.load's 2nd execution in the lineage


def test_rerun_of_one_action_runs_only_that_task(cli):
    [name] = cli.sb.launch("etl.pipeline")
    cli.sb.wait_idle()

    cli("rerun", name, "--action-name", "a2")

    [new] = [r for r in cli.sb.runs() if r["relation"]]
    snap = cli.sb.wait_for(new["name"])
    assert (snap["task"], snap["action_name"], snap["phase"]) == ("etl.load", "a2", "SUCCEEDED")


def test_abort_run_aborts_a_running_run(cli):
    [name] = cli.sb.launch("sleepy")

    out = cli("abort", "run", name)

    assert f"Run '{name}' has been aborted." in out
    assert cli.sb.run(name)["phase"] == "ABORTED"
