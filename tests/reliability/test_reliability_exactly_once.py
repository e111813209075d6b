"""Exactly once must not depend on replicas or restarts agreeing (issue 11.3).

A rerun is identified by (scope, root, attempt) and named ``<root>-retry-<attempt>`` from those
alone, so the control plane's refusal of a second CreateRun of a name is the guard, whatever
each daemon's configuration or knowledge. Three scenarios, each ending with 0 duplicates and 0
missed reruns on the control plane's own runs:

(a) two failed runs of one lineage at the same attempt — a rerund rerun and an operator's
    ``flyte rerun`` of it, which inherits the ``rerund-*`` labels — decided in one pass;
(b) a daemon restarted with changed policies while GetRunDetails (and every RPC) fails often,
    so lineages are learned under transient errors, with reruns older than the listing window;
(c) two replicas with different policy files (a rollout, or a ConfigMap update landing at
    different moments) working one storm.

Each has a shortened version in ``make test`` and full ones under ``@pytest.mark.slow``
(``make chaos``) on both sandbox profiles (``union``, and ``oss``: open-source Flyte 2, where a
second CreateRun of a name returns the existing run instead of ALREADY_EXISTS), which write
their rows of the results table in ``bench/README.md``.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from results_table import record

from daemon_support import DaemonProcess, daemons, settle, wait_until
from rerun_oracle import ATTEMPT_LABEL, ROOT_LABEL, audit
from rerund.adapters.flyte.control_plane import FlyteControlPlane
from rerund.core.runs import RerunRequest, RunRef
from rerund.policy import load_policies
from rerund.sandbox.testing import SandboxHandle, start_sandbox
from storms import STORM_WORKLOAD, launch_storm, owed_reruns, storm_policies, write_policies

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def SHORT(*values: Any, id: str) -> Any:
    return pytest.param(*values, id=id)


def FULL(*values: Any, id: str) -> Any:
    return pytest.param(*values, id=id, marks=[pytest.mark.slow, pytest.mark.timeout(900)])


def sizes(*, short: int, full: int, unit: str) -> list[Any]:
    """The size matrix of every scenario: a short one on ``union`` in ``make test``, and the
    full size on both sandbox profiles under ``make chaos``."""
    return [
        SHORT("union", short, id=f"short-{short}-{unit}"),
        FULL("union", full, id=f"full-{full}-{unit}"),
        FULL("oss", full, id=f"oss-full-{full}-{unit}"),
    ]


def _scenario(name: str, profile: str) -> str:
    return name if profile == "union" else f"{name} (oss)"


def _slow_retry_policies() -> dict[str, Any]:
    """The storm policies with a fixed 3 s backoff: time to act between a failure and its rerun."""
    doc = storm_policies()
    doc["defaults"]["backoff"] = {"initial": "3s", "factor": 1, "max": "3s", "jitter": 0}
    return doc


def _by_attempt(runs: Sequence[Mapping[str, Any]], exclude: set[str]) -> Counter[tuple[str, str]]:
    """How many runs rerund created per (root, attempt) (operator copies excluded)."""
    return Counter(
        (r["labels"][ROOT_LABEL], r["labels"].get(ATTEMPT_LABEL, ""))
        for r in runs
        if ROOT_LABEL in r["labels"] and r["name"] not in exclude
    )


def _operator_rerun(cp: FlyteControlPlane, sb: SandboxHandle, run: Mapping[str, Any], name: str) -> None:
    """What ``flyte rerun`` of a rerund rerun does: a new run of it, with its labels inherited."""
    source = RunRef(sb.project, sb.domain, run["name"])
    asyncio.run(cp.create_rerun(RerunRequest(source=source, name=name, labels=dict(run["labels"]))))


@pytest.mark.parametrize(("profile", "lineages"), sizes(short=6, full=60, unit="lineages"))
def test_3a_an_operator_copy_of_a_rerun_decided_in_the_same_pass_gets_no_second_rerun(
    profile: str, lineages: int, tmp_path: Path
) -> None:
    doc = _slow_retry_policies()
    policy_file = write_policies(tmp_path / "policies.yaml", doc)
    workload: dict[str, Any] = {"tasks": {"storm.dead": STORM_WORKLOAD["tasks"]["storm.dead"]}}
    with start_sandbox(workload=workload, time_scale=1.0, profile=profile) as sb:
        d = DaemonProcess(tmp_path / "d", sb, policy_file)
        cp = FlyteControlPlane(endpoint=sb.endpoint, org=sb.org, insecure=True, rpc_timeout=10)
        asyncio.run(cp.connect())
        with daemons(d):
            d.wait_ready()
            roots = sb.launch(task="storm.dead", count=lineages)

            def first_reruns_failed() -> list[Mapping[str, Any]]:
                runs = [r for r in sb.runs() if r["labels"].get(ATTEMPT_LABEL) == "1"]
                return runs if len(runs) == lineages and all(r["phase"] == "FAILED" for r in runs) else []

            wait_until(
                "every first rerun to fail", lambda: bool(first_reruns_failed()), 120, d.logs, interval=0.1
            )
            d.kill()  # before the second reruns are due (3 s): both failures are decided after the restart
            firsts = first_reruns_failed()
            copies = {f"op{i}-{r['name'][:20]}" for i, r in enumerate(firsts)}
            for name, run in zip(sorted(copies), sorted(firsts, key=lambda r: r["name"]), strict=True):
                _operator_rerun(cp, sb, run, name)
            sb.wait_idle(timeout=60)
            d.start()
            d.wait_ready()

            def exhausted() -> bool:
                counts = _by_attempt(sb.runs(), copies)
                done = sum(1 for (_, attempt) in counts if attempt == "3") == lineages
                return done and not d.pending()

            wait_until("every lineage to reach attempt 3", exhausted, 240, d.logs, interval=1.0)
            sb.wait_idle(timeout=60)
            time.sleep(2)  # a few more passes: nothing more may appear
            counts = _by_attempt(sb.runs(), copies)
    duplicates = {k: n for k, n in counts.items() if n > 1}
    assert not duplicates, f"two reruns for one lineage attempt: {duplicates}\n{d.logs()}"
    assert {root for root, _ in counts} == set(roots)
    assert sorted(counts.values()) == [1] * (3 * lineages)  # attempts 1, 2, 3 of every lineage
    if lineages >= 60:
        row = {"failures": 2 * lineages, "owed": 3 * lineages, "issued": sum(counts.values())}
        record(
            _scenario("3(a) operator copies of reruns, decided in one pass", profile),
            {**row, "duplicates": 0, "missed": 0},
        )


@pytest.mark.parametrize(("profile", "failures"), sizes(short=40, full=400, unit="failures"))
def test_3b_a_restart_with_changed_policies_under_transient_errors_duplicates_nothing(
    profile: str, failures: int, tmp_path: Path
) -> None:
    doc = storm_policies()
    policy_file = write_policies(tmp_path / "policies.yaml", doc)
    policies = load_policies([policy_file])
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0, profile=profile) as sb:
        # overlap 1 s: after the restart the older reruns are outside the listing window, so
        # their lineages are learned by GetRunDetails, which the faults make fail often.
        d = DaemonProcess(tmp_path / "d", sb, policy_file, overlap="1s")
        with daemons(d):
            d.wait_ready()
            launch_storm(sb, failures, waves=2)
            wait_until(
                "a third of the owed reruns",
                lambda: audit(sb.runs(), policies).issued >= owed_reruns(failures) // 3,
                300,
                d.logs,
                interval=0.5,
            )
            d.kill()
            changed = copy.deepcopy(doc)
            changed["defaults"]["backoff"] = {"initial": "20ms", "factor": 3, "max": "1s", "jitter": 0.5}
            changed["policies"].insert(1, {"name": "new-first", "match": {"tasks": ["nothing.*"]}})
            write_policies(policy_file, changed)
            time.sleep(2)  # the reruns made so far fall out of watermark - overlap
            sb.set_faults(unavailable=0.4)
            d.start()
            time.sleep(8)  # several passes learn lineages while 40% of the RPCs fail
            sb.set_faults(unavailable=0.0)
            result = settle(sb, [d], load_policies([policy_file]), timeout=600)
    assert result.owed == owed_reruns(failures)
    assert result.exact(), result.problems()
    if failures >= 400:
        record(_scenario("3(b) restart, changed policies, 40% UNAVAILABLE", profile), result.row())


@pytest.mark.parametrize(("profile", "failures"), sizes(short=60, full=600, unit="failures"))
def test_3c_two_replicas_with_different_policy_files_issue_each_rerun_once(
    profile: str, failures: int, tmp_path: Path
) -> None:
    doc = storm_policies()
    file_a = write_policies(tmp_path / "a.yaml", doc)
    other = copy.deepcopy(doc)
    other["defaults"]["backoff"] = {"initial": "10ms", "factor": 2, "max": "200ms", "jitter": 0}
    other["policies"][1]["retry"]["labels"] = {"retried-by": "rerund", "rollout": "new"}
    file_b = write_policies(tmp_path / "b.yaml", other)
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0, profile=profile) as sb:
        a = DaemonProcess(tmp_path / "a", sb, file_a, name="old-pod")
        b = DaemonProcess(tmp_path / "b", sb, file_b, name="new-pod")
        with daemons(a, b):
            a.wait_ready()
            b.wait_ready()
            launch_storm(sb, failures, waves=3)
            result = settle(sb, [a, b], load_policies([file_a]), timeout=600)
            made_by_b = sum(1 for r in sb.runs() if r["labels"].get("rollout") == "new")
    assert result.owed == owed_reruns(failures)
    assert result.exact(), result.problems()
    assert made_by_b > 0  # both replicas did part of the work
    if failures >= 600:
        record(_scenario("3(c) 2 replicas, different policy files", profile), result.row())
