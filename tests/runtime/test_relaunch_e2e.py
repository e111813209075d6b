"""End to end: relaunches (``retry.scope: relaunch``) by the real ``rerund run`` daemon against
the sandbox, through the real flyte SDK (``Task.get`` -> ``.override(resources=...)`` ->
``with_runcontext(...).run(task, **inputs)``) — the "Must show" list of the relaunch issue.

Every test reads the control plane's own state (``SandboxHandle.runs()``) at the end: a
relaunch is a run with no relation whose lineage is in rerund's labels.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon_support import DaemonProcess, daemons, total, wait_until
from rerund.sandbox.testing import SandboxHandle, start_sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

WORKLOAD: dict[str, Any] = {
    "max_resources": {"memory": "64Gi"},
    "tasks": {
        # needs 8Gi, deployed with 4Gi: OOMKilled, then fine at 2x
        "train.big": {
            "duration": "0.2s",
            "resources": {"memory": "4Gi", "cpu": "1"},
            "limits": {"memory": "4Gi"},
            "oom_below": "8Gi",
            "inputs": {"lr": 0.1},
            "outputs": {"accuracy": 0.93},
            "versions": ["v1"],
        },
        # needs 32Gi: 8Gi and 16Gi fail too, and the policy's cap is 16Gi
        "train.huge": {
            "duration": "0.2s",
            "resources": {"memory": "4Gi"},
            "limits": {"memory": "4Gi"},
            "oom_below": "32Gi",
            "versions": ["v1"],
        },
        # OOM at 4Gi; at 8Gi a connection reset once (a rerun of the relaunch fixes that)
        "train.flaky": {
            "duration": "0.2s",
            "resources": {"memory": "4Gi"},
            "oom_below": "8Gi",
            "behaviour": ["fail", "succeed"],
            "error": {
                "kind": "SYSTEM",
                "code": "ConnectionResetError",
                "message": "Connection reset by peer",
            },
            "inputs": {"shard": 1},
        },
        # a policy asks 128Gi for it: above the platform's max_resources
        "huge.job": {"duration": "0.2s", "resources": {"memory": "1Gi"}, "oom_below": "2Gi"},
        # a bug in v1; a fix is deployed later
        "report.monthly": {
            "duration": "0.2s",
            "behaviour": ["fail"],
            "error": {"kind": "USER", "code": "KeyError", "message": "KeyError: 'revenue'"},
            "inputs": {"month": "2026-11"},
            "versions": ["v1"],
        },
    },
}

POLICIES: dict[str, Any] = {
    "apiVersion": "rerund/v1",
    "defaults": {
        "max_attempts": 4,
        "backoff": {"initial": "100ms", "factor": 1, "max": "100ms", "jitter": 0},
    },
    "policies": [
        {
            "name": "too-big",
            "match": {"tasks": ["huge.*"], "error": {"classes": ["oom"]}},
            "retry": {"scope": "relaunch", "resources": {"memory": "128Gi"}},
        },
        {
            "name": "oom",
            "match": {"error": {"classes": ["oom"]}},
            "retry": {"scope": "relaunch", "resources": {"memory": "2x", "max": {"memory": "16Gi"}}},
        },
        {
            "name": "transient",
            "match": {"error": {"codes": ["ConnectionResetError"]}},
            "retry": {"scope": "run"},
        },
        {
            "name": "wait-for-fix",
            "match": {"tasks": ["report.*"], "error": {"codes": ["KeyError"]}},
            "retry": {"scope": "relaunch", "task_version": "newer", "max_wait": "1h", "max_attempts": 1},
        },
    ],
}


@pytest.fixture
def sb() -> Iterator[SandboxHandle]:
    with start_sandbox(workload=WORKLOAD, time_scale=0.5) as handle:
        yield handle


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump(POLICIES, sort_keys=False))
    return path


def lineage(sb: SandboxHandle, root: str) -> list[dict[str, Any]]:
    """The relaunches of lineage ``root`` on the control plane, by attempt."""
    found = [r for r in sb.runs() if r["labels"].get("rerund-root") == root]
    return sorted(found, key=lambda r: int(r["labels"]["rerund-attempt"]))


def issues(d: DaemonProcess) -> list[dict[str, Any]]:
    with sqlite3.connect(d.state) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM issues ORDER BY id")]


def _after_more_listings(sb: SandboxHandle, n: int, what: str, logs: Callable[[], str]) -> dict[str, int]:
    """Wait until the daemons made ``n`` more ListRuns calls (each pass makes two); return the
    request counts from before the wait."""
    before = sb.request_counts()
    target = before.get("ListRuns", 0) + n
    wait_until(what, lambda: sb.request_counts().get("ListRuns", 0) >= target, 60, logs)
    return before


def decisions_of(d: DaemonProcess, run: str) -> list[dict[str, Any]]:
    return [x for x in d.decisions()["decisions"] if x["run"] == run]


def test_an_oom_is_relaunched_with_twice_the_memory_and_succeeds_with_the_source_inputs(
    sb: SandboxHandle, policy_file: Path, tmp_path: Path
) -> None:
    d = DaemonProcess(tmp_path / "d", sb, policy_file)
    with daemons(d):
        d.wait_ready()
        env = {"LOG_LEVEL": "10", "LOG_FORMAT": "json", "USER_LOG_LEVEL": "10", "DATA_BUCKET": "s3://b"}
        [source] = sb.launch(task="train.big", inputs={"lr": 0.3}, labels={"team": "ml"}, envs=env)
        wait_until(
            "the relaunch to succeed",
            lambda: any(r["phase"] == "SUCCEEDED" for r in lineage(sb, source)),
            90,
            d.logs,
        )
        src = sb.run(source)
        assert src["error"]["code"] == "OOMKilled" and src["resources"]["requests"]["memory"] == "4Gi"
        [relaunch] = lineage(sb, source)
        assert relaunch["name"] == f"{source}-retry-1"
        assert relaunch["relation"] is None  # a fresh run of the deployed task, not a rerun
        assert relaunch["version"] == "v1"
        assert relaunch["resources"] == {
            "requests": {"cpu": "1", "memory": "8Gi"},
            "limits": {"memory": "8Gi"},
        }
        assert relaunch["inputs"] == {"lr": 0.3}  # the source run's inputs, read with Run.inputs()
        assert relaunch["labels"] == {
            "team": "ml",
            "rerund-root": source,
            "rerund-attempt": "1",
            "rerund-policy": "oom",
        }
        assert relaunch["outputs"] == {"accuracy": 0.93}
        assert relaunch["envs"] == src["envs"] == env  # the source's RunSpec env, LOG_* included

        def recorded() -> bool:
            m = d.metrics()
            return (
                total(m, "rerund_reruns_issued_total", policy="oom", scope="relaunch") == 1
                and total(m, "rerund_lineages_recovered_total", policy="oom") == 1
            )

        wait_until(
            "the relaunch's issue and outcome metrics", recorded, 60, lambda: d.metrics_text() + d.logs()
        )
        [issue] = [i for i in issues(d) if i["target"] == relaunch["name"]]
        assert (issue["scope"], issue["result"], issue["attempt"]) == ("relaunch", "created", 1)
        [decided] = [x for x in decisions_of(d, source) if x["decision"] == "rerun"]
        assert decided["relaunch"]["resources"]["requests"]["memory"] == "8Gi"
        assert decided["reason"].startswith(f"policy 'oom' relaunches run '{source}' as '{source}-retry-1'")


def test_the_cap_stops_escalation_and_the_lineage_gives_up(
    sb: SandboxHandle, policy_file: Path, tmp_path: Path
) -> None:
    d = DaemonProcess(tmp_path / "d", sb, policy_file)
    with daemons(d):
        d.wait_ready()
        [source] = sb.launch(task="train.huge")

        def gave_up() -> bool:
            return any(x["decision"] == "give_up" for x in d.decisions()["decisions"])

        wait_until("the lineage to give up at the cap", gave_up, 90, d.logs)
        runs = lineage(sb, source)
        assert [r["resources"]["requests"]["memory"] for r in runs] == ["8Gi", "16Gi"]
        assert [r["error"]["code"] for r in runs] == ["OOMKilled", "OOMKilled"]
        [give_up] = [x for x in d.decisions()["decisions"] if x["decision"] == "give_up"]
        assert give_up["run"] == f"{source}-retry-2"
        assert give_up["reason"] == (
            f"policy 'oom' gives up on run '{source}-retry-2': a relaunch on the same task version 'v1' "
            "would get no more resources (memory request stays 16Gi: it is already at or above its max 16Gi; "
            "memory limit stays 16Gi: it is already at or above its max 16Gi): it would fail the same way"
        )
        wait_until(
            "the exhausted lineage in the metrics",
            lambda: total(d.metrics(), "rerund_lineages_exhausted_total", policy="oom") == 1,
            60,
            d.logs,
        )


def test_a_relaunch_the_control_plane_refuses_is_recorded_with_the_reason_and_not_retried(
    sb: SandboxHandle, policy_file: Path, tmp_path: Path
) -> None:
    d = DaemonProcess(
        tmp_path / "d",
        sb,
        policy_file,
        extra={
            "scopes": [
                {"project": sb.project, "domain": sb.domain},
                {"project": "elsewhere", "domain": sb.domain},
            ]
        },
    )
    with daemons(d):
        d.wait_ready()
        [too_big] = sb.launch(task="huge.job")
        # train.big is deployed in demo/development only: a run of it elsewhere cannot be relaunched
        [undeployed] = sb.launch(task="train.big", project="elsewhere")

        def both_refused() -> bool:
            return {i["target"] for i in issues(d) if i["result"] == "invalid"} == {
                f"{too_big}-retry-1",
                f"{undeployed}-retry-1",
            }

        wait_until("both refusals in the ledger", both_refused, 90, d.logs)
        by_target = {i["target"]: i for i in issues(d)}
        assert (
            "CreateRun: the task's resources are refused: memory request 128Gi exceeds the platform's task "
            "resource limit 64Gi" in by_target[f"{too_big}-retry-1"]["message"]
        )
        assert by_target[f"{undeployed}-retry-1"]["message"] == (
            f"relaunch '{undeployed}-retry-1' of run '{undeployed}': task 'train.big' version 'sandbox' in "
            "elsewhere/development is not deployed (Task train.big, version sandbox not found in elsewhere "
            "development.); not retried"
        )
        before = _after_more_listings(sb, 12, "three more resync passes", d.logs)
        counts = sb.request_counts_by_run()
        assert counts.get(f"{too_big}-retry-1", {}).get("CreateRun") == 1  # refused once, never again
        assert "CreateRun" not in counts.get(f"{undeployed}-retry-1", {})
        assert sb.request_counts().get("GetTaskDetails", 0) == before.get("GetTaskDetails", 0)
        assert [r["name"] for r in sb.runs() if r["labels"].get("rerund-root")] == []
        assert total(d.metrics(), "rerund_reruns_issued_total") == 0


def _waiting(d: DaemonProcess, source: str) -> bool:
    return any(x["decision"] == "defer" and x["run"] == source for x in d.decisions()["decisions"]) and any(
        source in key for key in d.pending()
    )


def test_newer_waits_for_a_deploy_and_relaunches_once_on_it_across_a_restart(
    sb: SandboxHandle, policy_file: Path, tmp_path: Path
) -> None:
    d = DaemonProcess(tmp_path / "d", sb, policy_file)
    with daemons(d):
        d.wait_ready()
        sources = sb.launch(task="report.monthly", count=3, inputs={"month": "2026-10"})
        for source in sources:
            wait_until(f"{source} to wait for a fix", lambda s=source: _waiting(d, s), 90, d.logs)
        [defer] = [x for x in decisions_of(d, sources[0]) if x["decision"] == "defer"]
        assert defer["reason"].startswith(
            f"policy 'wait-for-fix' waits for a fix of task 'report.monthly': run '{sources[0]}' failed on "
            f"version 'v1'; relaunch 1 runs as '{sources[0]}-retry-1' once a newer version is deployed"
        )
        assert defer["waiting_for"] == {"task": "report.monthly", "failed_version": "v1"}

        # While it waits: no relaunch, and one ListTasks per pass for the task, not one per failure.
        start = _after_more_listings(sb, 8, "four more resync passes", d.logs)
        now = sb.request_counts()
        passes = (now["ListRuns"] - start["ListRuns"]) / 2  # a pass lists reruns and failures once each
        assert 0 < now.get("ListTasks", 0) - start.get("ListTasks", 0) <= passes + 1
        assert all(lineage(sb, s) == [] for s in sources)

        d.kill()  # the daemon dies while the failures wait; nothing about them is only local
        sb.deploy("report.monthly", "v2", behaviour=["succeed"], outputs={"rows": 12})
        d.start()

        def all_relaunched() -> bool:
            return all([r["phase"] for r in lineage(sb, s)] == ["SUCCEEDED"] for s in sources)

        wait_until("one relaunch per failure, on v2", all_relaunched, 90, d.logs)
        _after_more_listings(sb, 6, "three more passes", d.logs)
        for source in sources:
            [relaunch] = lineage(sb, source)  # exactly once
            assert relaunch["version"] == "v2"
            assert relaunch["inputs"] == {"month": "2026-10"}
            assert relaunch["name"] == f"{source}-retry-1"
        assert d.pending() == {}


def test_two_replicas_relaunch_a_fixed_failure_exactly_once(
    sb: SandboxHandle, policy_file: Path, tmp_path: Path
) -> None:
    a = DaemonProcess(tmp_path / "a", sb, policy_file, name="a")
    b = DaemonProcess(tmp_path / "b", sb, policy_file, name="b")
    with daemons(a, b):
        a.wait_ready()
        b.wait_ready()
        sources = sb.launch(task="report.monthly", count=2)
        for source in sources:
            wait_until(
                "both replicas to wait", lambda s=source: _waiting(a, s) and _waiting(b, s), 90, a.logs
            )
        sb.deploy("report.monthly", "v2", behaviour=["succeed"])
        wait_until(
            "the relaunches to succeed",
            lambda: all([r["phase"] for r in lineage(sb, s)] == ["SUCCEEDED"] for s in sources),
            90,
            lambda: a.logs() + b.logs(),
        )
        _after_more_listings(sb, 8, "a few more passes", a.logs)
        for source in sources:
            assert [r["name"] for r in lineage(sb, source)] == [f"{source}-retry-1"]
        results = sorted(i["result"] for d in (a, b) for i in issues(d))
        assert results.count("created") == 2
        assert set(results) <= {"created", "already_exists"}


def test_a_rerun_of_a_relaunch_continues_the_lineage(
    sb: SandboxHandle, policy_file: Path, tmp_path: Path
) -> None:
    d = DaemonProcess(tmp_path / "d", sb, policy_file)
    with daemons(d):
        d.wait_ready()
        [source] = sb.launch(task="train.flaky", inputs={"shard": 7})

        def recovered() -> bool:
            runs = lineage(sb, source)
            return len(runs) == 2 and runs[-1]["phase"] == "SUCCEEDED"

        wait_until("the relaunch, then a rerun of it, to succeed", recovered, 90, d.logs)
        relaunch, rerun = lineage(sb, source)
        assert (relaunch["name"], relaunch["relation"], relaunch["labels"]["rerund-policy"]) == (
            f"{source}-retry-1",
            None,
            "oom",
        )
        assert relaunch["error"]["code"] == "ConnectionResetError"  # enough memory now, another failure
        assert rerun["name"] == f"{source}-retry-2"  # the lineage's next attempt, named from its root
        assert rerun["relation"] == {"run": relaunch["name"], "type": "RERUN"}
        assert (rerun["labels"]["rerund-root"], rerun["labels"]["rerund-attempt"]) == (source, "2")
        assert rerun["labels"]["rerund-policy"] == "transient"
        assert rerun["resources"]["requests"]["memory"] == "8Gi"  # a rerun keeps the relaunch's spec
        assert rerun["inputs"] == {"shard": 7}
