"""Open-source Flyte 2 serves an ``ErrorInfo`` with a message and a kind only (no code, no
gpu_fault): rerund derives the failure class from the executor's message forms."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon_support import DaemonProcess, daemons, wait_until
from rerund.sandbox.profiles import OSS
from rerund.sandbox.testing import SandboxHandle, start_sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

LIBRARY_OOM = Path(__file__).resolve().parents[2] / "policies" / "library" / "oom.yaml"

WORKLOAD: dict[str, Any] = {
    "max_resources": {"memory": "64Gi"},
    "tasks": {
        "train.big": {
            "duration": "0.2s",
            "resources": {"memory": "4Gi"},
            "limits": {"memory": "4Gi"},
            "oom_below": "8Gi",
            "versions": ["v1"],
        },
    },
}


@pytest.fixture
def oss() -> Iterator[SandboxHandle]:
    with start_sandbox(workload=WORKLOAD, time_scale=0.5, profile=OSS.with_error_delay(0.2)) as sb:
        yield sb


def test_on_open_source_flyte_an_oom_is_relaunched_by_the_library_policy_from_the_message_alone(
    oss: SandboxHandle, tmp_path: Path
) -> None:
    d = DaemonProcess(tmp_path / "d", oss, LIBRARY_OOM, extra={"backend": "oss"})
    with daemons(d):
        d.wait_ready()
        [source] = oss.launch(task="train.big")

        def relaunched() -> list[dict[str, Any]]:
            return [r for r in oss.runs() if r["labels"].get("rerund-root") == source]

        wait_until(
            "the library's OOM policy to relaunch the run",
            lambda: any(r["phase"] == "SUCCEEDED" for r in relaunched()),
            90,
            d.logs,
        )
        [relaunch] = relaunched()
        assert relaunch["labels"]["rerund-policy"] == "oom-more-memory"
        assert relaunch["resources"]["limits"]["memory"] == "8Gi"
        [decided] = [x for x in d.decisions()["decisions"] if x["run"] == source and x["decision"] == "rerun"]
        assert decided["reason"].startswith("policy 'oom-more-memory' relaunches"), decided
        assert oss.stats()["reexecutions"] == 0
