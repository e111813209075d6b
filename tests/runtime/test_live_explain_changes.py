"""``rerund explain RUN --config`` on a preempted spot run: the live explanation reads the run's
RunSpec from the sandbox (through the real SDK) and prints exactly what the rerun would change,
with the failure class and the GPU fault that decided it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon_support import write_settings
from rerund.cli import main
from rerund.sandbox.testing import SandboxHandle

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = {
    "tasks": {
        "train.spot": {
            "behaviour": ["succeed"],
            "when": [
                {
                    "spec": {"interruptible": True},
                    "behaviour": "fail",
                    "error": {
                        "kind": "USER",
                        "code": "Interrupted",
                        "message": "the spot node was preempted",
                    },
                },
                {
                    "spec": {"queue": "gpu-a"},
                    "behaviour": "fail",
                    "error": {
                        "kind": "SYSTEM",
                        "code": "GpuFallenOffBus",
                        "message": "Xid 79",
                        "gpu_fault": {"kind": "XID", "code": 79, "severity": "CRITICAL"},
                    },
                },
            ],
        }
    }
}
SPOT = {
    "queue": "spot-pool",
    "interruptible": True,
    "env": {"LOG_FORMAT": "json"},
    "cache_lookup_scope": "project-domain",
}


@pytest.fixture
def setup(sandbox_factory, tmp_path: Path) -> tuple[SandboxHandle, Path]:
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.05)
    return sb, write_settings(tmp_path / "rerund.yaml", sb, policies=[str(REPO / "policies" / "library")])


def test_a_live_explain_of_a_second_preemption_shows_the_move_to_on_demand(setup, capsys) -> None:
    sb, config = setup
    labels = {"rerund-root": "orig", "rerund-attempt": "1", "rerund-policy": "spot-preemption"}
    [orig] = sb.launch("train.spot", name="orig", spec=SPOT)
    [name] = sb.launch("train.spot", labels=labels, spec=SPOT, rerun_of=orig)
    sb.wait_idle()

    assert main(["explain", name, "--config", str(config)]) == 0
    out = capsys.readouterr().out

    assert "error:      USER Interrupted: the spot node was preempted" in out
    assert "error.classes: the failure is interrupted" in out
    assert (
        "overrides:  queue=ondemand-pool, interruptible=false, annotations={rerund/capacity: on-demand}"
        in out
    )
    assert "changes:    the rerun's RunSpec against the source run's\n" in out
    for line in (
        "  ~ labels rerund-attempt: '1' -> '2'",
        "  ~ annotations rerund/capacity: added 'on-demand'",
        "  ~ queue: 'spot-pool' -> 'ondemand-pool'",
        "  ~ interruptible: true -> false",
    ):
        assert line + "\n" in out, out
    changes = out.split("changes:")[1].split("trace:")[0]
    assert "env" not in changes and "cache_lookup_scope" not in changes  # kept as they are


def test_a_live_explain_of_a_gpu_fault_names_the_fault_as_json(setup, capsys) -> None:
    sb, config = setup
    [name] = sb.launch("train.spot", spec={"queue": "gpu-a", "interruptible": False})
    sb.wait_idle()

    assert main(["explain", name, "--config", str(config), "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)

    assert (body["decision"], body["policy"], body["scope"]) == ("rerun", "gpu-fault", "recover")
    assert body["failure"]["error"]["gpu_fault"] == {
        "kind": "XID",
        "code": 79,
        "name": "",
        "severity": "CRITICAL",
    }
    assert body["changes"][-1] == "annotations rerund/reason: added 'gpu-fault'"
