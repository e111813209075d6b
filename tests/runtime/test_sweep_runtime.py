"""The sweep's shell step by step over the in-memory control plane: read, plan, record, issue
(retries, refusals, ALREADY_EXISTS, stop and resume), look again, follow."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from rerund.adapters.ledger import Ledger
from rerund.core.model import ErrorInfo
from rerund.core.runs import RerunRequest
from rerund.core.sweep import Window
from rerund.errors import ConfigError, PermanentControlPlaneError, TransientControlPlaneError
from rerund.policy import load_policies
from rerund.runtime.metrics import sweep_metrics
from rerund.runtime.sweep import Sweeper, unreachable

from .fake_control_plane import T0, Clock, FakeControlPlane

PULL = ErrorInfo(kind="SYSTEM", code="ImagePullBackOff", message="Back-off pulling image: 503")
OUTAGE = """apiVersion: rerund/v1
defaults: {max_attempts: 2, backoff: {initial: 1h, factor: 2, max: 2h, jitter: 0}}
policies:
  - name: registry-outage
    match: {error: {codes: [ImagePullBackOff]}}
    retry: {scope: run, labels: {recovered-by: sweep}}
"""


class World:
    def __init__(self, tmp_path: Path, failures: int = 3) -> None:
        self.clock = Clock(T0)
        self.cp = FakeControlPlane(self.clock)
        for i in range(failures):
            self.cp.add_failed(f"r{i}", at=T0 - timedelta(minutes=30 - i), error=PULL)
        self.cp.add_failed("other", at=T0 - timedelta(minutes=10))  # a connection reset: not matched
        path = tmp_path / "outage.yaml"
        path.write_text(OUTAGE)
        self.policies = load_policies([path])
        self.ledger = Ledger(tmp_path / "rerund.db", source="sweep")
        self.metrics, self.registry = sweep_metrics()
        self.window = Window(T0 - timedelta(hours=1), T0)

    def sweeper(self, **kw: object) -> Sweeper:
        return Sweeper(
            self.cp,
            scopes=[("ml", "production")],
            policies=self.policies,
            clock=self.clock,
            metrics=self.metrics,
            ledger=self.ledger,
            retry_initial=0.01,
            retry_max=0.02,
            **kw,  # type: ignore[arg-type]
        )

    def sweep(self, sweeper: Sweeper | None = None) -> tuple[Sweeper, list]:
        s = sweeper or self.sweeper()

        async def go() -> list:
            plan = await s.plan(self.window)
            s.record(plan)
            todo, found = await s.refresh(plan)
            return found + await s.issue(todo)

        return s, asyncio.run(go())

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, {**labels, "source": "sweep"}) or 0.0


def test_a_sweep_creates_one_rerun_per_matched_failure_with_its_lineage(tmp_path: Path) -> None:
    w = World(tmp_path)

    _, results = w.sweep()

    assert sorted((r.item.name, r.result) for r in results) == [
        ("r0-retry-1", "created"),
        ("r1-retry-1", "created"),
        ("r2-retry-1", "created"),
    ]
    req = w.cp.runs[w.cp.ref("r0-retry-1")].request
    assert req == RerunRequest(
        source=w.cp.ref("r0"),
        name="r0-retry-1",
        action="a0",
        recover=False,
        labels={
            "recovered-by": "sweep",
            "rerund-root": "r0",
            "rerund-attempt": "1",
            "rerund-policy": "registry-outage",
        },
    )
    assert w.metric("rerund_reruns_issued_total", policy="registry-outage", scope="run") == 3
    assert w.metric("rerund_decisions_total", policy="registry-outage", decision="rerun") == 3
    assert w.metric("rerund_decisions_total", policy="", decision="ignore") == 1


def test_every_sweep_decision_and_issue_is_in_the_ledger_as_source_sweep(tmp_path: Path) -> None:
    w = World(tmp_path)

    w.sweep()

    rows = w.ledger.history(source="sweep")
    assert sorted((r["run"], r["decision"]) for r in rows) == [
        ("other", "ignore"),
        ("r0", "rerun"),
        ("r1", "rerun"),
        ("r2", "rerun"),
    ]
    assert {r["source"] for r in rows} == {"sweep"}
    assert w.ledger.history(source="daemon") == []
    issues = w.ledger.issues()
    assert {(i["target"], i["result"], i["source"]) for i in issues} == {
        (f"r{i}-retry-1", "created", "sweep") for i in range(3)
    }


def test_a_second_sweep_finds_every_rerun_and_creates_nothing(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.sweep()
    creates = w.cp.calls["create_rerun"]

    s = w.sweeper()
    plan = asyncio.run(s.plan(w.window))

    assert plan.reruns == ()
    assert [(x.failure.run, x.kind, x.existing) for x in plan.skipped if x.kind == "already_issued"] == [
        ("r0", "already_issued", "r0-retry-1"),
        ("r1", "already_issued", "r1-retry-1"),
        ("r2", "already_issued", "r2-retry-1"),
    ]
    assert w.cp.calls["create_rerun"] == creates


def test_reruns_issued_after_the_preview_are_found_by_looking_again(tmp_path: Path) -> None:
    w = World(tmp_path)
    s = w.sweeper()
    plan = asyncio.run(s.plan(w.window))
    # a daemon issues r1's rerun while the operator reads the preview
    asyncio.run(w.cp.create_rerun(s.request(plan.reruns[1])))

    todo, found = asyncio.run(s.refresh(plan))

    assert [t.name for t in todo] == ["r0-retry-1", "r2-retry-1"]
    assert [(f.item.name, f.result, f.message) for f in found] == [
        ("r1-retry-1", "already_issued", "found on the control plane as 'r1-retry-1'")
    ]


def test_already_exists_on_create_is_already_issued(tmp_path: Path) -> None:
    w = World(tmp_path, failures=1)
    s = w.sweeper()
    plan = asyncio.run(s.plan(w.window))
    asyncio.run(w.cp.create_rerun(s.request(plan.reruns[0])))  # created between look and create

    [result] = asyncio.run(s.issue(plan.reruns))

    assert (result.result, result.message) == ("already_issued", "the control plane answered ALREADY_EXISTS")
    assert [(i["result"], i["source"]) for i in w.ledger.issues()] == [("already_exists", "sweep")]


def test_a_transient_error_is_retried_and_a_rejection_is_refused_with_its_message(tmp_path: Path) -> None:
    w = World(tmp_path, failures=2)
    w.cp.fail_next["create_rerun"].extend(
        [
            TransientControlPlaneError("unavailable", rpc="CreateRun", code="unavailable"),
            PermanentControlPlaneError(
                "input 'x' has the wrong type", rpc="CreateRun", code="invalid_argument"
            ),
        ]
    )
    s = w.sweeper(concurrency=1)
    plan = asyncio.run(s.plan(w.window))

    results = asyncio.run(s.issue(plan.reruns))

    by = {r.item.name: (r.result, r.message) for r in results}
    assert sorted(by.values()) == [
        ("created", ""),
        ("refused", "invalid_argument: input 'x' has the wrong type"),
    ]
    assert w.metric("rerund_control_plane_errors_total", rpc="CreateRun", code="unavailable") == 1
    assert w.metric("rerund_control_plane_errors_total", rpc="CreateRun", code="invalid_argument") == 1
    assert sorted(i["result"] for i in w.ledger.issues()) == ["created", "invalid"]


def test_a_stopped_sweep_creates_nothing_more_and_the_next_one_continues(tmp_path: Path) -> None:
    w = World(tmp_path, failures=4)
    s = w.sweeper(concurrency=1)

    async def interrupted() -> list:
        plan = await s.plan(w.window)

        def after_first(result: object) -> None:
            s.stop()  # Ctrl-C right after the first create

        return await s.issue(plan.reruns, on_result=after_first)

    first = asyncio.run(interrupted())

    assert sorted(r.result for r in first) == ["created", "not_issued", "not_issued", "not_issued"]
    assert len(w.cp.reruns()) == 1

    _, second = w.sweep()

    assert sorted(r.result for r in second) == ["created"] * 3
    assert sorted(r.ref.name for r in w.cp.reruns()) == [f"r{i}-retry-1" for i in range(4)]


def test_follow_reports_each_reruns_terminal_phase_and_records_it(tmp_path: Path) -> None:
    w = World(tmp_path, failures=2)
    s, results = w.sweep()
    w.cp.fail("r0-retry-1", phase="SUCCEEDED")
    w.cp.fail("r1-retry-1", phase="FAILED")

    phases = asyncio.run(s.follow(results, poll=0.01))

    assert phases == {"r0-retry-1": "SUCCEEDED", "r1-retry-1": "FAILED"}
    assert w.metric("rerund_lineages_recovered_total", policy="registry-outage") == 1
    assert w.metric("rerund_rerun_outcomes_total", policy="registry-outage", outcome="failed") == 1


def test_follow_stops_when_asked_with_what_finished(tmp_path: Path) -> None:
    w = World(tmp_path, failures=2)
    s, results = w.sweep()
    w.cp.fail("r0-retry-1", phase="SUCCEEDED")

    def seen(phases: dict[str, str]) -> None:
        s.stop()

    assert asyncio.run(s.follow(results, poll=0.01, on_update=seen)) == {"r0-retry-1": "SUCCEEDED"}


def test_an_unreadable_control_plane_says_nothing_was_rerun() -> None:
    exc = TransientControlPlaneError(
        "ListRuns failed (unavailable): connection refused; retrying with backoff",
        rpc="ListRuns",
        code="unavailable",
    )

    err = unreachable(exc, "http://127.0.0.1:1")

    assert str(err) == (
        "the control plane at http://127.0.0.1:1 cannot be read (ListRuns failed (unavailable): connection "
        "refused); nothing was rerun: check --endpoint, the network and the credentials, then run the sweep "
        "again"
    )
    assert isinstance(err, TransientControlPlaneError) and err.code == "unavailable"


@pytest.mark.parametrize("labels_in_listing", [True, False], ids=["union", "open-source"])
def test_reruns_listed_without_labels_are_recognised_by_their_lineage(
    tmp_path: Path, labels_in_listing
) -> None:
    w = World(tmp_path, failures=1)
    w.cp.add_failed("hand-made", at=T0 - timedelta(minutes=5), phase="SUCCEEDED")
    run = w.cp.runs[w.cp.ref("hand-made")]
    run.labels = {"rerund-root": "r0", "rerund-attempt": "1", "rerund-policy": "daily"}
    run.relation = w.cp.ref("r0")  # a rerun of r0 (the relation vouches for its labels)
    if not labels_in_listing:
        original = w.cp.list_reruns

        async def without_labels(*a, **kw):
            from dataclasses import replace

            return [
                replace(r, labels={}, relation=None, relation_known=False) for r in await original(*a, **kw)
            ]

        w.cp.list_reruns = without_labels  # type: ignore[method-assign]

    plan = asyncio.run(w.sweeper().plan(w.window))

    assert plan.reruns == ()
    assert [(s.failure.run, s.kind, s.existing) for s in plan.skipped if s.kind != "no_match"] == [
        ("r0", "already_issued", "hand-made")
    ]


class Directory:
    """A ScopeDirectory that knows ``known`` (None: it cannot say)."""

    def __init__(self, known: set[tuple[str, str]] | None) -> None:
        self.known = known
        self.asked: list[tuple[str, str]] = []

    async def scope_exists(self, project: str, domain: str) -> bool | None:
        self.asked.append((project, domain))
        return None if self.known is None else (project, domain) in self.known


def test_an_unknown_scope_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    w = World(tmp_path)
    s = w.sweeper()

    with pytest.raises(ConfigError) as info:
        asyncio.run(s.check_scopes(Directory({("ml", "staging")})))

    assert str(info.value) == (
        "unknown scope ml/production: the control plane has no project 'ml' with domain 'production' in this "
        "org; nothing was swept: check --scope (or scopes in the settings file), written project/domain"
    )
    assert w.cp.calls["list_failed"] == 0


@pytest.mark.parametrize("known", [{("ml", "production")}, None], ids=["known", "cannot-say"])
def test_a_known_scope_or_a_control_plane_that_cannot_say_passes(tmp_path: Path, known) -> None:
    w = World(tmp_path)
    directory = Directory(known)

    asyncio.run(w.sweeper().check_scopes(directory))

    assert directory.asked == [("ml", "production")]


def test_the_sweeps_metrics_are_the_daemons_names_with_source_sweep_and_nothing_else(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from rerund.runtime.metrics import SWEEP_METRIC_NAMES

    w = World(tmp_path)
    w.sweep()
    w.metrics.last_sync.set(1.0)  # a daemon-only gauge never leaves a sweep
    w.metrics.detection_latency.observe(3600)

    text = generate_latest(w.registry).decode()
    names = {line.split("{")[0] for line in text.splitlines() if line and not line.startswith("#")}

    assert names == {"rerund_decisions_total", "rerund_reruns_issued_total"} <= set(SWEEP_METRIC_NAMES)
    assert 'rerund_reruns_issued_total{policy="registry-outage",scope="run",source="sweep"} 3.0' in text
    assert "last_sync" not in text and "detection_latency" not in text


def test_a_transient_read_error_is_retried_by_the_daemons_issuer(tmp_path: Path) -> None:
    w = World(tmp_path)
    unavailable = TransientControlPlaneError("unavailable", rpc="ListRuns", code="unavailable")
    w.cp.fail_next["list_failed"].append(unavailable)
    w.cp.fail_next["read_failure"].append(unavailable)

    plan = asyncio.run(w.sweeper().plan(w.window))

    assert len(plan.reruns) == 3
    assert w.metric("rerund_control_plane_errors_total", rpc="ListRuns", code="unavailable") == 2


def test_a_read_that_keeps_failing_gives_up_after_its_patience_with_the_last_error(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.cp.fail_next["list_failed"].extend(
        TransientControlPlaneError(f"unavailable {i}", rpc="ListRuns", code="unavailable") for i in range(3)
    )

    with pytest.raises(TransientControlPlaneError, match="unavailable 0"):
        asyncio.run(w.sweeper(patience=timedelta(0)).plan(w.window))
    assert w.cp.calls["create_rerun"] == 0


def test_a_failure_without_error_details_yet_is_read_again_until_they_arrive(tmp_path: Path) -> None:
    w = World(tmp_path, failures=2)
    late = w.cp.runs[w.cp.ref("r1")]
    late.error_pending, late.error = True, ErrorInfo()
    late.ended_at = T0 - timedelta(seconds=5)  # failed just now: within the daemon's wait for details
    reads = {"n": 0}
    original = w.cp.read_failure

    async def read_failure(summary):
        if summary.ref.name == "r1":
            reads["n"] += 1
            if reads["n"] == 2:  # the details arrive between the first and the second read
                late.error_pending, late.error = False, PULL
        return await original(summary)

    w.cp.read_failure = read_failure  # type: ignore[method-assign]

    plan = asyncio.run(w.sweeper(error_recheck=0.0).plan(w.window))

    assert sorted(r.failure.run for r in plan.reruns) == ["r0", "r1"]
    assert reads["n"] == 2


def test_a_failure_whose_error_details_never_come_is_decided_without_them_after_the_wait(
    tmp_path: Path,
) -> None:
    w = World(tmp_path, failures=1)
    late = w.cp.runs[w.cp.ref("r0")]
    late.error_pending, late.error = True, ErrorInfo()

    plan = asyncio.run(w.sweeper(error_wait=timedelta(0)).plan(w.window))  # it failed 30 minutes ago

    assert plan.reruns == ()
    assert {s.failure.run: s.kind for s in plan.skipped} == {"r0": "no_match", "other": "no_match"}


@pytest.mark.parametrize(
    ("finished", "kind"), [("SUCCEEDED", None), ("FAILED", "rerun")], ids=["had-succeeded", "had-failed"]
)
def test_a_run_aborted_after_it_finished_is_swept_as_what_it_was(tmp_path: Path, finished, kind) -> None:
    w = World(tmp_path, failures=1)
    aborted = w.cp.runs[w.cp.ref("r0")]
    aborted.phase, aborted.finished_phase = "ABORTED", finished

    plan = asyncio.run(w.sweeper().plan(w.window))

    assert [r.failure.run for r in plan.reruns] == (["r0"] if kind == "rerun" else [])
    assert "r0" not in {s.failure.run for s in plan.skipped}  # decided as FAILED (rerun) or not at all


def test_a_rerun_whose_lineage_could_not_be_read_is_read_again_before_planning(tmp_path: Path) -> None:
    w = World(tmp_path, failures=1)
    w.cp.add_failed("hand-made", at=T0 - timedelta(minutes=5), phase="SUCCEEDED")
    w.cp.runs[w.cp.ref("hand-made")].labels = {
        "rerund-root": "r0",
        "rerund-attempt": "1",
        "rerund-policy": "d",
    }
    w.cp.runs[w.cp.ref("hand-made")].relation = w.cp.ref("r0")
    original = w.cp.list_reruns

    async def without_labels(*a, **kw):  # open-source Flyte: the listing has no labels
        from dataclasses import replace

        return [replace(r, labels={}, relation=None, relation_known=False) for r in await original(*a, **kw)]

    w.cp.list_reruns = without_labels  # type: ignore[method-assign]
    w.cp.fail_next["get_run"].append(TransientControlPlaneError("unavailable", rpc="GetRunDetails"))

    plan = asyncio.run(w.sweeper(error_recheck=0.0).plan(w.window))

    assert plan.reruns == ()  # the second look learned that attempt 1 of r0 exists
    assert [(s.failure.run, s.existing) for s in plan.skipped if s.kind == "already_issued"] == [
        ("r0", "hand-made")
    ]
    assert w.cp.calls["get_run"] == 2


def test_a_rerun_name_held_by_another_run_is_swept_under_the_next_salted_name(tmp_path: Path) -> None:
    """Issue 22.1: ALREADY_EXISTS from a run that is not this rerun is no 'already issued'."""
    from rerund.core.names import rerun_name

    w = World(tmp_path, failures=1)
    w.cp.add_failed("r0-retry-1", at=T0 - timedelta(hours=3), phase="SUCCEEDED")  # someone named it so
    s = w.sweeper()
    plan = asyncio.run(s.plan(w.window))

    [result] = asyncio.run(s.issue(plan.reruns))

    salted = rerun_name(root="r0", attempt=1, salt=1)
    assert (result.result, result.name, result.to_json()["rerun"]) == ("created", salted, salted)
    assert w.cp.runs[w.cp.ref(salted)].labels["rerund-root"] == "r0"
    assert [(i["target"], i["result"]) for i in w.ledger.issues()] == [(salted, "created")]
