"""End to end: the real ``rerund run`` daemon (a subprocess) against the sandbox control plane,
over real HTTP with the real flyte SDK — the "Must show" list of the daemon issue.

Every test ends by reading the control plane's own state (``SandboxHandle.runs()``) and
checking it with the reliability oracle (``tests/rerun_oracle.py``): for every lineage the
reruns on the control plane are exactly those the policies owe. Tests wait on conditions with
generous deadlines and never assert on timings.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_support import DaemonProcess, daemons, total, wait_until
from rerun_oracle import Audit, audit, reruns

from rerund.policy import load_policies
from rerund.sandbox.testing import SandboxHandle, start_sandbox

pytestmark = pytest.mark.e2e

TIME_SCALE = 0.2

MIXED_WORKLOAD: dict[str, Any] = {
    "tasks": {
        # transient network error on the root action: recovers after two reruns
        "train.fit": {
            "duration": "0.5s",
            "behaviour": ["fail", "fail", "succeed"],
            "error": {
                "kind": "SYSTEM",
                "code": "ConnectionResetError",
                "message": "ConnectionResetError: [Errno 104] Connection reset by peer",
            },
            "inputs": {"lr": 0.1},
        },
        # a pipeline whose second child fails once: rerun only that action
        "etl.pipeline": {"children": ["etl.extract", "etl.load"]},
        "etl.extract": {"duration": "0.25s", "outputs": {"rows": 1000}},
        "etl.load": {
            "duration": "0.25s",
            "behaviour": ["fail", "succeed"],
            "error": {"kind": "SYSTEM", "code": "HTTPError", "message": "HTTPError: 503 Service Unavailable"},
        },
        # a bad input: never rerun
        "report.render": {
            "duration": "0.25s",
            "behaviour": ["fail"],
            "error": {"kind": "USER", "code": "ValueError", "message": "ValueError: mixed types"},
        },
        # always times out: exhausts max_attempts=3
        "ingest.download": {
            "duration": "0.25s",
            "behaviour": ["fail"],
            "error": {"kind": "SYSTEM", "code": "TimeoutError", "message": "TimeoutError: timed out"},
        },
        # a batch whose publish step fails once: recover (reuse the succeeded prepare step)
        "batch.daily": {"children": ["batch.prepare", "batch.publish"]},
        "batch.prepare": {"duration": "0.25s", "outputs": {"rows": 5}},
        "batch.publish": {
            "duration": "0.25s",
            "behaviour": ["fail", "succeed"],
            "error": {"kind": "SYSTEM", "code": "PublishConflict", "message": "PublishConflict: busy"},
        },
    }
}

MIXED_POLICIES: dict[str, Any] = {
    "apiVersion": "rerund/v1",
    "defaults": {"max_attempts": 3, "backoff": {"initial": "100ms", "factor": 2, "max": "1s", "jitter": 0}},
    "policies": [
        {
            "name": "never-retry-bad-input",
            "match": {"error": {"kinds": ["USER"], "patterns": ["ValueError|TypeError"]}},
            "retry": False,
        },
        {
            "name": "batch-recover",
            "match": {"tasks": ["batch.*"], "error": {"codes": ["PublishConflict"]}},
            "retry": {"scope": "recover", "labels": {"retried-by": "rerund"}},
        },
        {
            "name": "train-lower-lr",
            "match": {"tasks": ["train.fit"], "error": {"kinds": ["SYSTEM"]}},
            "retry": {
                "scope": "failed_action",
                "env": {"FLYTE_RETRY": "true"},
                "labels": {"retried-by": "rerund"},
                "inputs": {"lr": 0.05},
                "escalate": {2: {"env": {"MEMORY_HINT": "high"}, "inputs": {"lr": 0.01}}},
            },
        },
        {
            "name": "transient-network",
            "match": {
                "error": {
                    "kinds": ["SYSTEM"],
                    "patterns": ["(?i)connection (reset|refused)", "\\b50[234]\\b", "(?i)timed? ?out"],
                }
            },
            "retry": {"scope": "failed_action", "labels": {"retried-by": "rerund"}},
        },
    ],
}

MIXED_LAUNCHES: tuple[dict[str, Any], ...] = (
    {"task": "train.fit", "count": 3, "labels": {"team": "ml"}, "inputs": {"lr": 0.1}},
    {"task": "etl.pipeline", "count": 2},
    {"task": "report.render", "count": 1},
    {"task": "ingest.download", "count": 1},
    {"task": "batch.daily", "count": 1},
)

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def write_policies(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def settle(sb: SandboxHandle, d: DaemonProcess, policies: Any, timeout: float = 180.0) -> Audit:
    """Wait until the control plane holds every owed rerun and nothing runs; return the audit."""
    result: list[Audit] = []

    def done() -> bool:
        sb.wait_idle(timeout=60)
        a = audit(sb.runs(), policies)
        result[:] = [a]
        return a.missed == 0 and not any(r["phase"] not in ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED") for r in sb.runs())

    wait_until("every owed rerun to exist", done, timeout, lambda: (result[0].problems() if result else "") + "\n" + d.logs())
    return result[0]


@pytest.fixture
def mixed(tmp_path: Path) -> Iterator[tuple[SandboxHandle, Path]]:
    with start_sandbox(workload=MIXED_WORKLOAD, time_scale=TIME_SCALE) as sb:
        yield sb, write_policies(tmp_path / "policies.yaml", MIXED_POLICIES)


def test_a_mixed_workload_ends_with_exactly_the_owed_reruns(
    mixed: tuple[SandboxHandle, Path], tmp_path: Path
) -> None:
    sb, policy_file = mixed
    policies = load_policies([policy_file])
    d = DaemonProcess(tmp_path / "d", sb, policy_file)
    with daemons(d):
        d.wait_ready()
        for launch in MIXED_LAUNCHES:
            sb.launch(**launch)
        result = settle(sb, d, policies)
        runs = sb.runs()
        assert result.exact(), result.problems()

        by_task = Counter(r["task"] for r in reruns(runs))
        # fail, fail, succeed: two reruns each; etl.load once per pipeline (only that action);
        # the always-timing-out download exhausts max_attempts=3; the bad input never reruns
        assert by_task == {"train.fit": 6, "etl.load": 2, "ingest.download": 3, "batch.daily": 1}
        for r in reruns(runs):
            assert DNS_1035.match(r["name"]) and len(r["name"]) <= 30, r["name"]
            assert 1 <= int(r["labels"]["rerund-attempt"]) <= 3, r
            assert r["labels"]["retried-by"] == "rerund"
        assert len({(r["labels"]["rerund-root"], r["labels"]["rerund-attempt"]) for r in reruns(runs)}) == 12

        originals = {r["name"]: r for r in runs if "rerund-root" not in r["labels"]}
        for r in reruns(runs):
            source = r["relation"]["run"]
            root = originals[r["labels"]["rerund-root"]]
            if r["task"] == "train.fit":  # the root action failed: failed_action falls back to run
                attempt = int(r["labels"]["rerund-attempt"])
                assert (r["relation"]["type"], r["action_name"]) == ("RERUN", "a0")
                assert r["envs"]["FLYTE_RETRY"] == "true"
                assert r["inputs"] == {"lr": 0.05 if attempt == 1 else 0.01}
                assert ("MEMORY_HINT" in r["envs"]) is (attempt == 2)
                assert r["labels"]["team"] == "ml"  # the source run's labels are kept
            elif r["task"] == "etl.load":  # only the failed child action re-executed
                assert (r["relation"]["type"], r["action_name"]) == ("RERUN", "a2")
                assert [a["name"] for a in r["actions"]] == ["a0"]
            elif r["task"] == "batch.daily":  # recover: the succeeded step is reused
                assert r["relation"]["type"] == "RECOVER"
                assert {a["name"]: a["phase"] for a in r["actions"]} == {
                    "a0": "SUCCEEDED",
                    "a1": "RECOVERED",
                    "a2": "SUCCEEDED",
                }
            assert source in {x["name"] for x in runs}
            assert root["phase"] in ("FAILED", "TIMED_OUT")

        # each lineage's final state
        finals = {root: x.final for root, x in result.lineages.items()}
        by_final = Counter((originals[root]["task"], final) for root, final in finals.items())
        assert by_final == {
            ("train.fit", "succeeded"): 3,
            ("etl.pipeline", "succeeded"): 2,
            ("report.render", "ignore"): 1,
            ("ingest.download", "give_up"): 1,
            ("batch.daily", "succeeded"): 1,
        }

        # metrics equal what the control plane shows
        def metrics_agree() -> bool:
            m = d.metrics()
            return (
                total(m, "rerund_reruns_issued_total") == len(reruns(runs))
                and total(m, "rerund_lineages_recovered_total") == 6
                and total(m, "rerund_lineages_exhausted_total") == 1
                and total(m, "rerund_rerun_outcomes_total") == len(reruns(runs))
                and total(m, "rerund_failures_observed_total") == sum(1 for r in runs if r["phase"] != "SUCCEEDED")
            )

        wait_until("the metrics to equal the control plane", metrics_agree, 60, lambda: d.metrics_text() + d.logs())
        m = d.metrics()
        assert total(m, "rerund_reruns_issued_total", scope="recover") == 1
        assert total(m, "rerund_reruns_issued_total", scope="failed_action") == 2
        assert total(m, "rerund_reruns_issued_total", scope="run") == 9
        assert total(m, "rerund_decisions_total", decision="ignore") == 1
        assert total(m, "rerund_decisions_total", decision="give_up") == 1
        assert total(m, "rerund_rerun_outcomes_total", outcome="succeeded") == 6
        assert d.healthz()[0] == 200 and d.readyz()[0] == 200
