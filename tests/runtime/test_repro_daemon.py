"""The daemon fires the reproduction checks of its policies: a missed firing runs on start, its
result reaches the metrics and the ledger, and a reproduction rerun that fails is never retried
by the daemon's own policies (it is the check's result, not a failure to recover)."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from rerund.adapters.ledger import Ledger
from rerund.app import App
from rerund.core.repro import LABEL_REPRO
from rerund.runtime.daemon import Daemon
from rerund.runtime.settings import load_settings

pytestmark = pytest.mark.e2e

WORKLOAD = {
    "tasks": {
        "det.train": {"outputs": {"accuracy": 0.93}},
        "flaky.train": {
            "behaviour": ["succeed", "fail"],
            "error": {
                "kind": "SYSTEM",
                "code": "ConnectionResetError",
                "message": "Connection reset by peer",
            },
            "outputs": {"accuracy": 0.93},
        },
    }
}
POLICIES = """\
apiVersion: rerund/v1
defaults:
  backoff: {initial: 100ms, max: 1s, jitter: 0}
policies:
  - name: everything
    retry: {max_attempts: 3}
reproductions:
  - name: det
    schedule: "* * * * *"
    source: {task: det.train}
  - name: flaky
    schedule: "* * * * *"
    source: {task: flaky.train}
"""


def test_the_daemon_fires_missed_checks_on_start_and_never_retries_a_failed_reproduction(
    sandbox_factory, tmp_path
):
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.01)
    for task in ("det.train", "flaky.train"):
        [name] = sb.launch(task)
        sb.wait_for(name)
    (tmp_path / "policies.yaml").write_text(POLICIES)
    settings = load_settings(
        None,
        overrides={
            "endpoint": sb.endpoint,
            "org": sb.org,
            "scopes": [f"{sb.project}/{sb.domain}"],
            "policies": [str(tmp_path / "policies.yaml")],
            "state": str(tmp_path / "rerund.db"),
            "http": "off",
            "poll_interval": "200ms",
        },
    )
    registry = CollectorRegistry()
    started: list[Daemon] = []
    daemon = App(
        settings, registry=registry, install_signals=False, reload_check_interval=0.2, on_ready=started.append
    )

    def results() -> dict[str, float | None]:
        return {
            check: registry.get_sample_value("rerund_reproduction_last_result", {"check": check})
            for check in ("det", "flaky")
        }

    async def scenario() -> None:
        task = asyncio.create_task(daemon.run())
        deadline = time.monotonic() + 30
        while None in results().values() and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.05)
        for _ in range(10):  # a few resync passes that would rerun the failed reproduction rerun
            if started:
                await started[0].reconciler.sync()
        daemon.request_stop()
        await task

    asyncio.run(scenario())

    assert results() == {"det": 1.0, "flaky": 0.0}
    for check, result in (("det", "match"), ("flaky", "failed")):
        assert (
            registry.get_sample_value("rerund_reproduction_runs_total", {"check": check, "result": result})
            == 1
        )
    reproductions = [r for r in sb.runs() if LABEL_REPRO in r["labels"]]
    flaky = next(r for r in reproductions if r["labels"][LABEL_REPRO] == "flaky")
    assert flaky["phase"] == "FAILED"
    assert not [r for r in sb.runs() if r["relation"] and r["relation"]["run"] == flaky["name"]]
    ledger = Ledger(tmp_path / "rerund.db")
    assert ledger.reproduction_history("flaky")[0]["result"] == "failed"
    [decision] = ledger.history(run=flaky["name"])
    assert (
        decision["decision"] == "ignore" and "is a rerun of reproduction check 'flaky'" in decision["reason"]
    )
