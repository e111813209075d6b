"""End to end against open-source Flyte 2 (the sandbox's ``oss`` profile): the real daemon finds
out the control plane refuses label filters, waits for error details that arrive after the
phase says FAILED (and decides on them, not without them), and ignores runs an operator
aborted after they had finished."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from flyteidl2.common import identifier_pb2
from flyteidl2.workflow import run_service_pb2 as rs
from flyteidl2.workflow.run_service_connect import RunServiceClientSync

from adapter_support import NET_FLAKY
from daemon_support import DaemonProcess, daemons, total, wait_until
from rerund.sandbox.profiles import OSS
from rerund.sandbox.testing import start_sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

WORKLOAD: dict[str, Any] = {
    "tasks": {
        "net.flaky": NET_FLAKY,
        "ok": {"duration": "0.1s"},
    }
}
# Only a failure whose error details were read matches: decided without them, nothing would be rerun.
POLICIES: dict[str, Any] = {
    "apiVersion": "rerund/v1",
    "defaults": {"max_attempts": 3, "backoff": {"initial": "100ms", "factor": 2, "max": "1s", "jitter": 0}},
    "policies": [
        {
            "name": "transient",
            "match": {"error": {"patterns": ["connection reset by peer"]}},  # oss serves no code
            "retry": {"scope": "run"},
        },
        {"name": "anything-else", "match": {}, "retry": False},
    ],
}


def _reruns(sb: Any) -> list[dict[str, Any]]:
    return [r for r in sb.runs() if "rerund-root" in r["labels"]]


def test_on_oss_the_daemon_waits_for_late_error_details_and_ignores_aborts_of_finished_runs(
    tmp_path: Path,
) -> None:
    policy_file = tmp_path / "policies.yaml"
    policy_file.write_text(yaml.safe_dump(POLICIES, sort_keys=False))
    with start_sandbox(workload=WORKLOAD, time_scale=1.0, profile=OSS.with_error_delay(3)) as sb:
        d = DaemonProcess(tmp_path / "d", sb, policy_file)
        with daemons(d):
            d.wait_ready()
            flaky = sb.launch("net.flaky", count=3)
            [done] = sb.launch("ok")

            def recovered() -> bool:
                rs_ = _reruns(sb)
                return len(rs_) == 3 and all(r["phase"] == "SUCCEEDED" for r in rs_)

            wait_until("three reruns to succeed", recovered, 120, d.logs)
            assert {r["labels"]["rerund-root"] for r in _reruns(sb)} == set(flaky)
            logs = d.logs(10**7)
            assert "the control plane refuses label filters" in logs
            assert "is FAILED but its error details have not arrived yet; rerund waits up to 60s" in logs
            # Nothing tells a watcher when the details arrive (no push, no updated_at change): a
            # failure read without them was read again (ListActions is read_failure's alone).
            reads = sb.request_counts_by_run()
            assert any(reads[name].get("ListActions", 0) >= 2 for name in flaky), reads

            # an operator aborts a finished run and a finished rerun: both reappear as ABORTED
            with RunServiceClientSync(sb.endpoint) as client:
                for name in (done, _reruns(sb)[0]["name"]):
                    run_id = identifier_pb2.RunIdentifier(
                        org=sb.org, project=sb.project, domain=sb.domain, name=name
                    )
                    client.abort_run(rs.AbortRunRequest(run_id=run_id, reason="cleanup"))
            wait_until(
                "both aborts to be ignored",
                lambda: (
                    d.logs(10**7).count("it is ABORTED only because it was aborted after it had SUCCEEDED")
                    == 2
                ),
                120,
                d.logs,
            )
            assert len(_reruns(sb)) == 3
            assert total(d.metrics(), "rerund_reruns_issued_total") == 3
            assert total(d.metrics(), "rerund_decisions_total", decision="ignore") == 0
            assert sb.stats()["reexecutions"] == 0  # no CreateRun of a name that exists
