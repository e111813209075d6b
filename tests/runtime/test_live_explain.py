"""``rerund explain RUN --config``: the daemon's decision about a live run on the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rerund.cli import main
from rerund.sandbox.testing import SandboxHandle

from .test_reconcile import POLICIES

pytestmark = pytest.mark.e2e

WORKLOAD = {
    "tasks": {
        "net.flaky": {
            "duration": "0.1s",
            "behaviour": ["fail"],
            "error": {
                "kind": "SYSTEM",
                "code": "ConnectionResetError",
                "message": "Connection reset by peer",
            },
        },
        "ok": {"behaviour": ["succeed"], "duration": "0.1s"},
    }
}


@pytest.fixture
def setup(sandbox_factory, tmp_path: Path) -> tuple[SandboxHandle, Path]:
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.5)
    (tmp_path / "policies.yaml").write_text(POLICIES)
    config = tmp_path / "rerund.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "endpoint": sb.endpoint,
                "org": sb.org,
                "scopes": [f"{sb.project}/{sb.domain}"],
                "policies": ["policies.yaml"],
            }
        )
    )
    return sb, config


def test_a_live_failed_run_is_explained_with_its_lineage_and_trace(setup, capsys) -> None:
    sb, config = setup
    [name] = sb.launch("net.flaky")
    sb.wait_idle()

    assert main(["explain", name, "--config", str(config)]) == 0
    out = capsys.readouterr().out

    assert f"lineage:    root '{name}', 0 rerun(s) issued before this one" in out
    assert "error:      SYSTEM ConnectionResetError: Connection reset by peer" in out
    assert "decision:   rerun" in out
    assert f"name:       {name}-retry-1" in out
    assert "trace:" in out and "transient" in out
    assert sb.runs()[-1]["name"] == name, "explain must not create anything"


def test_a_live_rerun_is_explained_from_its_lineage_labels_as_json(setup, capsys) -> None:
    sb, config = setup
    [name] = sb.launch(
        "net.flaky", labels={"rerund-root": "orig", "rerund-attempt": "3", "rerund-policy": "transient"}
    )
    sb.wait_idle()

    assert main(["explain", name, "--config", str(config), "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)

    assert body["decision"] == "give_up"
    assert body["failure"]["root"] == "orig" and body["failure"]["attempt"] == 3
    assert "exceed max_attempts=3" in body["reason"]


def test_a_run_that_did_not_fail_is_said_so(setup, capsys) -> None:
    sb, config = setup
    [name] = sb.launch("ok")
    sb.wait_idle()

    assert main(["explain", name, "--config", str(config)]) == 1
    assert "is SUCCEEDED, not failed: rerund decides only about FAILED, TIMED_OUT and ABORTED runs" in (
        capsys.readouterr().out
    )


def test_an_unknown_run_is_a_clear_error(setup, capsys) -> None:
    _, config = setup

    assert main(["explain", "nosuchrun", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rerund explain: GetRunDetails failed (not_found)")
