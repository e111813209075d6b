# ruff: noqa: E501  (exact user-visible messages are kept on one line to be greppable)
"""Reproduction checks end to end against the sandbox: the real flyte SDK over real HTTP, the
real SQLite ledger, a fresh Prometheus registry. One firing each: match, mismatch (with its
readable diff, in the ledger and the webhook), failed, timeout; and two replicas firing the
same slot create one rerun."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from rerund.adapters.cron import CronSchedule
from rerund.adapters.flyte.control_plane import FlyteControlPlane
from rerund.adapters.ledger import Ledger
from rerund.clock import utcnow
from rerund.core.compare import Tolerance
from rerund.core.repro import LABEL_REPRO, CompareSettings, ReproCheck, ReproSource, repro_run_name
from rerund.runtime.metrics import Metrics
from rerund.runtime.repro import ReproRunner

pytestmark = pytest.mark.e2e

OUTPUTS = {"accuracy": 0.93, "metrics": {"loss": 0.31, "epochs": 3}, "tags": ["a", "b"], "ok": True}
WORKLOAD = {
    "tasks": {
        "det.train": {"outputs": OUTPUTS},
        "noisy.train": {"outputs": {"accuracy": 0.93, "loss": {"random": [0.1, 0.2]}}},
        "flaky.train": {
            "behaviour": ["succeed", "fail"],
            "error": {"kind": "USER", "code": "ValueError", "message": "ValueError: schema changed"},
            "outputs": OUTPUTS,
        },
        "slow.train": {"behaviour": ["succeed", "hang"], "outputs": OUTPUTS},
    }
}
SLOT = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


class Hooks:
    """A notifier that keeps what it was sent."""

    def __init__(self) -> None:
        self.payloads: list[Mapping[str, Any]] = []

    async def notify(self, payload: Mapping[str, Any]) -> None:
        self.payloads.append(payload)


def check(name: str, task: str, **kwargs: Any) -> ReproCheck:
    return ReproCheck(name=name, schedule="0 3 * * *", source=ReproSource(task=task), **kwargs)


@pytest.fixture
def sb(sandbox_factory):
    return sandbox_factory(workload=WORKLOAD, time_scale=0.01)


def fire(sb, tmp_path, c: ReproCheck, *, replicas: int = 1, hooks: Hooks | None = None):
    """Fire ``c`` for SLOT on ``replicas`` runners at once; (results, metrics, ledger)."""
    ledgers = [Ledger(tmp_path / f"rerund-{i}.db") for i in range(replicas)]
    metrics = [Metrics(CollectorRegistry()) for _ in range(replicas)]

    async def go() -> list[Any]:
        cp = FlyteControlPlane(endpoint=sb.endpoint, org=sb.org, insecure=True)
        await cp.connect()
        runners = [
            ReproRunner(
                cp,
                checks=lambda: [c],
                schedules=CronSchedule,
                metrics=metrics[i],
                clock=utcnow,
                default_scope=(sb.project, sb.domain),
                ledger=ledgers[i],
                notifier=hooks,
                poll_interval=0.02,
            )
            for i in range(replicas)
        ]
        results = await asyncio.gather(*(r.fire(c, SLOT) for r in runners))
        for r in runners:
            await r.drain(timeout=5)
        return list(results)

    return asyncio.run(go()), metrics, ledgers


def reference(sb, task: str) -> str:
    [name] = sb.launch(task)
    sb.wait_for(name)
    return name


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_deterministic_task_reproduces(sb, tmp_path):
    ref = reference(sb, "det.train")

    c = check("det", "det.train", env={"REPRO_CHECK": "1"}, labels={"purpose": "repro"})
    [result], [metrics], [ledger] = fire(sb, tmp_path, c)

    assert result.result == "match", result.reason
    assert result.reference == ref
    assert result.rerun == repro_run_name("det", SLOT)
    assert result.reason == (
        f"check 'det': rerun {result.rerun!r} reproduced {ref!r}: phase SUCCEEDED, 4 outputs equal (exact)"
    )
    rerun = sb.run(result.rerun)
    assert rerun["phase"] == "SUCCEEDED"
    assert rerun["labels"][LABEL_REPRO] == "det" and rerun["labels"]["purpose"] == "repro"
    assert rerun["envs"]["REPRO_CHECK"] == "1"
    assert rerun["relation"] == {"run": ref, "type": "RERUN"}
    assert sample(metrics, "rerund_reproduction_runs_total", check="det", result="match") == 1
    assert sample(metrics, "rerund_reproduction_last_result", check="det") == 1
    assert sample(metrics, "rerund_reproduction_last_run_timestamp_seconds", check="det") > 0
    [row] = ledger.reproduction_history("det")
    assert row["result"] == "match" and row["diff"] == []


def test_the_reference_is_the_latest_matching_run_never_an_earlier_reproduction(sb, tmp_path):
    reference(sb, "det.train")
    fire(sb, tmp_path, check("det", "det.train"))
    latest = reference(sb, "det.train")

    async def find() -> Any:
        cp = FlyteControlPlane(endpoint=sb.endpoint, org=sb.org, insecure=True)
        await cp.connect()
        return await cp.find_latest_run(
            sb.project, sb.domain, task="det.train", phase="SUCCEEDED", without_label=LABEL_REPRO
        )

    assert asyncio.run(find()).ref.name == latest


def test_nondeterministic_outputs_mismatch_with_a_readable_diff_in_the_ledger_and_the_webhook(sb, tmp_path):
    ref = reference(sb, "noisy.train")
    hooks = Hooks()
    c = check(
        "noisy", "noisy.train", compare=CompareSettings(outputs="tolerance", tolerance=Tolerance(rel=1e-6))
    )

    [result], [metrics], [ledger] = fire(sb, tmp_path, c, hooks=hooks)

    assert result.result == "mismatch"
    [diff] = result.verdict.diff
    assert diff.path == "outputs.loss"
    assert "rel diff" in diff.message and diff.message.endswith("> 1e-06)")
    assert result.reason.startswith(
        f"check 'noisy': rerun {result.rerun!r} of {ref!r} differs in 1 output field "
        "(tolerance rel=1e-06 abs=0): outputs.loss: "
    )
    [row] = ledger.reproduction_history("noisy")
    assert row["diff"] == [diff.to_json()]
    assert json.loads(json.dumps(row))["result"] == "mismatch"
    assert sample(metrics, "rerund_reproduction_last_result", check="noisy") == 0
    assert sample(metrics, "rerund_reproduction_runs_total", check="noisy", result="mismatch") == 1
    [payload] = hooks.payloads
    assert payload["event"] == "reproduction_mismatch"
    assert payload["diff"] == [diff.to_json()]
    assert f"• {diff}" in payload["text"]


def test_ignoring_the_nondeterministic_output_makes_it_reproduce(sb, tmp_path):
    reference(sb, "noisy.train")

    [result], _, _ = fire(
        sb, tmp_path, check("noisy", "noisy.train", compare=CompareSettings(ignore=("loss",)))
    )

    assert result.result == "match", result.reason
    assert result.reason.endswith("1 output equal (exact, 1 ignored)")


def test_a_task_whose_behaviour_now_fails_reports_failed(sb, tmp_path):
    ref = reference(sb, "flaky.train")

    [result], [metrics], _ = fire(sb, tmp_path, check("flaky", "flaky.train"))

    assert result.result == "failed"
    assert result.reason == (
        f"check 'flaky': rerun {result.rerun!r} ended FAILED, reference {ref!r} SUCCEEDED: it did not reproduce"
    )
    assert sample(metrics, "rerund_reproduction_last_result", check="flaky") == 0


def test_a_rerun_still_running_at_the_timeout_reports_timeout(sb, tmp_path):
    reference(sb, "slow.train")

    [result], [metrics], _ = fire(
        sb, tmp_path, check("slow", "slow.train", timeout=timedelta(milliseconds=300))
    )

    assert result.result == "timeout"
    assert result.reason == (
        f"check 'slow': rerun {result.rerun!r} of {result.reference!r} was not terminal after the timeout "
        "of 0.3s; counted as timeout"
    )
    assert sb.run(result.rerun)["phase"] == "RUNNING"
    assert sample(metrics, "rerund_reproduction_runs_total", check="slow", result="timeout") == 1


def test_no_reference_run_reports_failed_and_says_what_was_looked_for(sb, tmp_path):
    [result], _, _ = fire(sb, tmp_path, check("none", "det.train"))

    assert result.result == "failed"
    assert result.reason == (
        "check 'none': no reference: no run in demo/development matches latest SUCCEEDED run of task "
        "'det.train'; nothing to rerun"
    )


def test_two_replicas_firing_the_same_slot_create_one_rerun_and_both_follow_it(sb, tmp_path):
    reference(sb, "det.train")

    results, _, _ = fire(sb, tmp_path, check("det", "det.train"), replicas=2)

    assert [r.result for r in results] == ["match", "match"]
    assert results[0].rerun == results[1].rerun
    reruns = [r for r in sb.runs() if r["labels"].get(LABEL_REPRO) == "det"]
    assert [r["name"] for r in reruns] == [results[0].rerun]


def test_without_the_not_exists_filter_the_reference_still_skips_reproduction_reruns(
    sb, tmp_path, monkeypatch
):
    """A control plane that rejects ``labels.<k> NOT_EXISTS`` (INVALID_ARGUMENT): the adapter falls
    back to reading the labels of the latest runs, once it has seen the rejection."""
    import rerund.sandbox.service as service
    from rerund.sandbox.query import QueryError

    real = service.parse_filters

    def no_not_exists(filters, **kwargs):
        if any(f.function == 16 for f in filters):  # NOT_EXISTS
            raise QueryError("filter labels NOT_EXISTS is not supported")
        return real(filters, **kwargs)

    monkeypatch.setattr(service, "parse_filters", no_not_exists)
    reference(sb, "det.train")
    fire(sb, tmp_path, check("det", "det.train"))  # a SUCCEEDED det.train reproduction rerun now exists
    latest = reference(sb, "det.train")
    [repro] = [r["name"] for r in sb.runs() if LABEL_REPRO in r["labels"]]

    async def find() -> Any:
        cp = FlyteControlPlane(endpoint=sb.endpoint, org=sb.org, insecure=True)
        await cp.connect()
        found = [await cp.find_latest_run(sb.project, sb.domain, task="det.train", without_label=LABEL_REPRO)]
        sb.launch("det.train", name="zz-newest-is-a-repro", labels={LABEL_REPRO: "det"})
        sb.wait_for("zz-newest-is-a-repro")
        found.append(
            await cp.find_latest_run(sb.project, sb.domain, task="det.train", without_label=LABEL_REPRO)
        )
        reruns = await cp.list_reruns(sb.project, sb.domain, since=datetime(2026, 1, 1, tzinfo=UTC))
        return found, reruns

    (first, second), reruns = asyncio.run(find())

    assert first.ref.name == latest and second.ref.name == latest
    assert repro != latest
    assert reruns == []  # no run carries rerund-policy; the listing still works without NOT_EXISTS
