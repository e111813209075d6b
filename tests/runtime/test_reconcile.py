"""One reconcile pass at a time, against an in-memory control plane and an injected clock.

Each test drives ``Reconciler.sync`` (the resync pass) directly and checks what the control
plane holds afterwards: which reruns exist, with which names, labels, env, inputs and scope,
what the metrics, the ledger and ``/decisions`` say, and which calls were made.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import textwrap
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from rerund.adapters.ledger import Ledger
from rerund.core.fingerprints import error_fingerprint
from rerund.core.model import ErrorInfo
from rerund.core.rules import PolicySet
from rerund.errors import NotificationError, PermanentControlPlaneError, TransientControlPlaneError
from rerund.policy import load_policies
from rerund.runtime.logs import JsonFormatter
from rerund.runtime.metrics import Metrics
from rerund.runtime.reconcile import Reconciler

from .fake_control_plane import CONNECTION_RESET, T0, Clock, FakeControlPlane

POLICIES = """\
apiVersion: rerund/v1
defaults:
  max_attempts: 3
  backoff: {initial: 10s, factor: 2, max: 1m, jitter: 0}
policies:
  - name: bad-input
    match: {error: {kinds: [USER]}}
    retry: false
  - name: transient
    match:
      error: {patterns: ['(?i)connection reset']}
    retry:
      scope: failed_action
      env: {FLYTE_RETRY: 'true'}
      labels: {retried-by: rerund}
      inputs: {batch_size: 16}
      escalate:
        2: {env: {MEMORY_HINT: high}, inputs: {batch_size: 8}}
"""


class RecordingScheduler:
    def __init__(self) -> None:
        self.jobs: dict[str, datetime] = {}
        self.callbacks: dict[str, Callable[[], Awaitable[None]]] = {}

    def schedule(self, key: str, at: datetime, callback: Callable[[], Awaitable[None]]) -> None:
        self.jobs[key] = at
        self.callbacks[key] = callback

    def cancel(self, key: str) -> None:
        self.jobs.pop(key, None)
        self.callbacks.pop(key, None)


class RecordingNotifier:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail = fail

    async def notify(self, payload: Any) -> None:
        if self.fail:
            raise NotificationError("webhook http://hook/... failed after 1 attempts (last: HTTP 500)")
        self.sent.append(dict(payload))


class World:
    """A control plane, a clock, and a reconciler wired as the daemon wires them."""

    def __init__(self, tmp_path: Path, policies: str = POLICIES, **kw: Any) -> None:
        self.tmp_path = tmp_path
        self.clock = Clock(T0)
        self.cp = FakeControlPlane(self.clock)
        self.policy_file = tmp_path / "policies.yaml"
        self.set_policies(policies)
        self.ledger = Ledger(tmp_path / "rerund.db")
        self.scheduler = RecordingScheduler()
        self.notifier = RecordingNotifier()
        self.kw = kw
        self.rec = self.new_reconciler()

    def set_policies(self, text: str) -> None:
        self.policy_file.write_text(textwrap.dedent(text))
        self.policies: PolicySet = load_policies([self.policy_file])

    def new_reconciler(self, **overrides: Any) -> Reconciler:
        """A fresh process: new metrics and memory, the same ledger file and control plane."""
        self.registry = CollectorRegistry()
        kw = {
            "scopes": [("ml", "production")],
            "policies": lambda: self.policies,
            "metrics": Metrics(self.registry),
            "ledger": self.ledger,
            "scheduler": self.scheduler,
            "notifier": self.notifier,
            "clock": self.clock,
            "retry_initial": 0.001,
            "retry_max": 0.002,
            **self.kw,
            **overrides,
        }
        return Reconciler(self.cp, **kw)

    def sync(self) -> Any:
        async def go() -> Any:
            report = await self.rec.sync()
            assert await self.rec.drain(timeout=10)
            return report

        return asyncio.run(go())

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_a_transient_failure_is_rerun_with_the_policy_env_labels_inputs_and_lineage(world: World) -> None:
    world.cp.add_failed("abc123", action="a2", action_task="train.load", at=T0)
    world.clock.advance(60)

    report = world.sync()

    assert report.ok
    [rerun] = world.cp.reruns()
    req = rerun.request
    assert req is not None
    assert rerun.ref.name == "abc123-retry-1"
    assert req.source == world.cp.ref("abc123")
    assert req.action == "a2" and not req.recover
    assert req.env == {"FLYTE_RETRY": "true"}
    assert req.inputs == {"batch_size": 16}
    assert req.labels == {
        "retried-by": "rerund",
        "rerund-root": "abc123",
        "rerund-attempt": "1",
        "rerund-policy": "transient",
    }
    assert world.metric("rerund_reruns_issued_total", policy="transient", scope="failed_action") == 1
    assert world.metric("rerund_decisions_total", policy="transient", decision="rerun") == 1
    assert world.metric("rerund_failures_observed_total", project="ml", domain="production") == 1


def test_the_lineage_advances_from_the_failed_reruns_own_labels_and_escalates(world: World) -> None:
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(60)
    world.sync()
    world.clock.advance(5)
    world.cp.fail("abc123-retry-1")
    world.clock.advance(60)

    world.sync()

    second = world.cp.runs[world.cp.ref("abc123-retry-2")]
    assert second.request is not None
    assert second.request.source == world.cp.ref("abc123-retry-1")
    assert second.labels["rerund-root"] == "abc123"
    assert second.labels["rerund-attempt"] == "2"
    assert second.request.env == {"FLYTE_RETRY": "true", "MEMORY_HINT": "high"}
    assert second.request.inputs == {"batch_size": 8}


def test_gives_up_after_max_attempts_counts_the_lineage_exhausted_and_notifies(world: World) -> None:
    world.cp.add_failed(
        "abc123-retry-3",
        labels={"rerund-root": "abc123", "rerund-attempt": "3", "rerund-policy": "transient"},
        at=T0,
        rerun_of=world.cp.add_lineage("abc123", 2, at=T0),
    )
    world.clock.advance(60)

    world.sync()

    assert world.cp.reruns() == []
    assert world.metric("rerund_lineages_exhausted_total", policy="transient") == 1
    assert world.metric("rerund_notifications_total", result="sent") == 1
    [payload] = world.notifier.sent
    assert payload["event"] == "lineage_exhausted"
    assert payload["root"] == "abc123" and payload["policy"] == "transient"
    assert "exceed max_attempts=3" in payload["reason"]
    # the attempt refused, as history and /decisions say it; and the reruns that were issued
    [give_up] = world.ledger.history(run="abc123-retry-3")
    assert payload["attempt"] == give_up["attempt"] == 4 and payload["reruns_issued"] == 3
    assert payload["text"].startswith("rerund: lineage 'abc123' exhausted")
    assert payload["console_url"] == "http://console.example/ml/production/abc123-retry-3"


def test_a_failed_notification_is_counted_and_the_give_up_still_settles(world: World) -> None:
    world.notifier.fail = True
    world.cp.add_failed(
        "abc123-retry-3",
        labels={"rerund-root": "abc123", "rerund-attempt": "3"},
        at=T0,
        rerun_of=world.cp.add_lineage("abc123", 2, at=T0),
    )
    world.clock.advance(60)

    world.sync()

    assert world.metric("rerund_notifications_total", result="failed") == 1
    assert world.rec.pending() == {}


def test_a_permanent_error_is_never_rerun(world: World) -> None:
    from rerund.core.model import ErrorInfo

    world.cp.add_failed("abc123", error=ErrorInfo(kind="USER", code="ValueError", message="bad row"), at=T0)
    world.clock.advance(60)

    world.sync()
    world.sync()

    assert world.cp.reruns() == []
    assert world.metric("rerund_decisions_total", policy="bad-input", decision="ignore") == 1
    [entry] = world.rec.recent
    assert entry["decision"] == "ignore" and entry["policy"] == "bad-input"


def test_a_settled_failure_costs_no_further_reads_on_later_passes(world: World) -> None:
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(60)
    world.sync()
    reads = world.cp.calls["read_failure"]

    for _ in range(3):
        world.clock.advance(30)
        world.sync()

    assert reads == 1
    assert world.cp.calls["read_failure"] == 1
    assert world.cp.calls["create_rerun"] == 1


def test_a_rerun_not_yet_due_is_scheduled_and_holds_the_watermark(world: World) -> None:
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(2)  # the 10 s backoff has not passed

    world.sync()

    assert world.cp.reruns() == []
    key = str(world.cp.ref("abc123"))
    assert world.scheduler.jobs[key] == T0 + timedelta(seconds=10)
    assert world.rec.pending() == {key: T0 + timedelta(seconds=10)}
    assert world.rec.watermark("ml", "production") == T0

    world.clock.advance(10)
    asyncio.run(world.scheduler.callbacks[key]())

    async def drain() -> None:
        assert await world.rec.drain(timeout=10)

    asyncio.run(drain())
    assert [r.ref.name for r in world.cp.reruns()] == ["abc123-retry-1"]
    assert world.rec.pending() == {}


def test_already_exists_means_already_issued_by_a_previous_process(world: World) -> None:
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(60)
    world.sync()
    # A new process with no memory and a lost ledger; the listing of reruns is not read in time.
    world.ledger.close()
    world.ledger = Ledger(world.tmp_path / "other.db")
    world.rec = world.new_reconciler(ledger=world.ledger)
    world.cp.fail_next["list_reruns"].append(
        TransientControlPlaneError("listing down", rpc="ListRuns", code="unavailable")
    )

    world.sync()

    assert [r.ref.name for r in world.cp.reruns()] == ["abc123-retry-1"]
    assert world.cp.calls_by_run[("create_rerun", "abc123-retry-1")] == 2
    assert world.metric("rerund_reruns_issued_total", policy="transient", scope="run") == 0
    assert world.ledger.issues()[0]["result"] == "already_exists"


def test_a_restarted_process_finds_the_rerun_in_the_listing_and_creates_nothing(world: World) -> None:
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(60)
    world.sync()
    world.rec = world.new_reconciler()

    world.sync()

    assert world.cp.calls_by_run[("create_rerun", "abc123-retry-1")] == 1
    assert len(world.cp.reruns()) == 1


def test_a_create_that_keeps_failing_is_retried_until_it_succeeds(world: World) -> None:
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(60)
    for _ in range(5):
        world.cp.fail_next["create_rerun"].append(
            TransientControlPlaneError("UNAVAILABLE: try later", rpc="CreateRun", code="unavailable")
        )

    world.sync()

    assert [r.ref.name for r in world.cp.reruns()] == ["abc123-retry-1"]
    assert world.cp.calls["create_rerun"] == 6
    assert world.metric("rerund_control_plane_errors_total", rpc="CreateRun", code="unavailable") == 5
    assert world.metric("rerund_reruns_issued_total", policy="transient", scope="run") == 1


def test_an_invalid_create_is_recorded_and_not_retried_in_a_loop(world: World) -> None:
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(60)
    world.cp.fail_next["create_rerun"].append(
        PermanentControlPlaneError("INVALID_ARGUMENT: bad input", rpc="CreateRun", code="invalid_argument")
    )

    world.sync()
    world.sync()

    assert world.cp.reruns() == []
    assert world.cp.calls["create_rerun"] == 1
    assert world.ledger.issues()[0]["result"] == "invalid"
    assert world.metric("rerund_control_plane_errors_total", rpc="CreateRun", code="invalid_argument") == 1


def test_a_failure_that_cannot_be_read_stays_pending_and_is_read_next_pass(world: World) -> None:
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(60)
    for _ in range(2):  # the pass reads it, and tries once more at its end
        world.cp.fail_next["read_failure"].append(
            TransientControlPlaneError("UNAVAILABLE", rpc="GetRunDetails", code="unavailable")
        )

    world.sync()
    assert world.cp.reruns() == []
    assert world.cp.calls["read_failure"] == 2
    assert str(world.cp.ref("abc123")) in world.rec.pending()
    assert world.rec.watermark("ml", "production") == T0

    world.clock.advance(30)
    world.sync()
    assert [r.ref.name for r in world.cp.reruns()] == ["abc123-retry-1"]


def test_dry_run_decides_and_records_but_creates_nothing(tmp_path: Path) -> None:
    world = World(tmp_path, dry_run=True)
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(60)

    world.sync()

    assert world.cp.reruns() == []
    assert world.cp.calls["create_rerun"] == 0
    assert world.ledger.issues()[0]["result"] == "dry_run"
    assert world.metric("rerund_decisions_total", policy="transient", decision="rerun") == 1


def test_a_budget_is_not_spent_twice_by_failures_decided_in_the_same_pass(tmp_path: Path) -> None:
    world = World(
        tmp_path,
        POLICIES.replace(
            "      scope: failed_action\n",
            "      scope: failed_action\n      budget: {max_reruns: 1, per: 1h}\n",
        ),
    )
    for name in ("aaa", "bbb", "ccc"):
        world.cp.add_failed(name, at=T0)
    world.clock.advance(60)

    world.sync()

    assert len(world.cp.reruns()) == 1
    assert world.metric("rerund_budget_deferrals_total", budget="transient") == 2
    deferred = [d for d in world.rec.recent if d["decision"] == "defer"]
    assert len(deferred) == 2
    assert all("budget" in d["reason"] for d in deferred)
    # The window frees one slot an hour after the rerun was created.
    assert set(world.rec.pending().values()) == {T0 + timedelta(seconds=60) + timedelta(hours=1)}


def test_a_rerun_that_succeeds_recovers_its_lineage(world: World) -> None:
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(60)
    world.sync()
    world.clock.advance(5)
    world.cp.fail("abc123-retry-1", phase="SUCCEEDED")

    world.sync()

    assert world.metric("rerund_rerun_outcomes_total", policy="transient", outcome="succeeded") == 1
    assert world.metric("rerund_lineages_recovered_total", policy="transient") == 1


def test_outcomes_of_reruns_created_before_a_restart_are_still_followed(world: World) -> None:
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(60)
    world.sync()
    world.rec = world.new_reconciler()  # the ledger remembers what it created
    world.clock.advance(5)
    world.cp.fail("abc123-retry-1", phase="SUCCEEDED")

    world.sync()

    assert world.metric("rerund_lineages_recovered_total", policy="transient") == 1


def test_the_first_start_looks_back_only_the_lookback(tmp_path: Path) -> None:
    world = World(tmp_path, lookback=timedelta(minutes=10))
    world.cp.add_failed("old", at=T0 - timedelta(minutes=30))
    world.cp.add_failed("new", at=T0 - timedelta(minutes=5))

    world.sync()

    assert [r.ref.name for r in world.cp.reruns()] == ["new-retry-1"]


def test_an_incomplete_pass_is_not_ready_and_says_why(world: World) -> None:
    world.cp.fail_next["list_failed"].append(
        TransientControlPlaneError("UNAVAILABLE: down", rpc="ListRuns", code="unavailable")
    )

    report = world.sync()

    assert not report.ok
    assert report.errors == ("ml/production: UNAVAILABLE: down",)
    assert world.rec.last_sync is None
    assert world.metric("rerund_control_plane_errors_total", rpc="ListRuns", code="unavailable") == 1


def test_new_policies_re_decide_an_owed_failure_without_reading_it_again_and_not_a_settled_one(
    world: World,
) -> None:
    """A reload decides again what is still owed (here a rerun waiting for its 10 s backoff),
    from the facts read before; an ignored failure's decision was carried out and stays."""
    from rerund.core.model import ErrorInfo

    world.cp.add_failed("abc123", error=ErrorInfo(kind="USER", code="ValueError", message="bad"), at=T0)
    world.cp.add_failed("waits", at=T0)
    world.clock.advance(2)
    world.sync()
    assert world.cp.reruns() == [] and list(world.rec.pending()) == ["ml/production/waits"]

    world.set_policies(
        POLICIES.replace("    retry: false\n", "    retry: {scope: run}\n").replace(
            "backoff: {initial: 10s", "backoff: {initial: 0s"
        )
    )
    world.rec.policies_changed()
    world.sync()

    assert [r.ref.name for r in world.cp.reruns()] == ["waits-retry-1"]
    assert world.cp.calls["read_failure"] == 2


def test_new_policies_retry_a_refused_rerun_the_resync_window_holds_and_not_an_older_one(
    world: World,
) -> None:
    """A rerun the control plane refused is not retried until the policies change; then it is
    decided again when the last resync listed its failure, and left settled when older (its
    cost bounded by the resync window, 5 min here, as after a restart)."""
    invalid = PermanentControlPlaneError(
        "INVALID_ARGUMENT: bad input", rpc="CreateRun", code="invalid_argument"
    )
    world.cp.add_failed("old", at=T0)
    world.clock.advance(60)
    world.cp.fail_next["create_rerun"].append(invalid)
    world.sync()
    world.clock.advance(30 * 60)  # "old" is cached, refused, and out of the listing window now
    world.cp.add_failed("recent", at=world.clock())
    world.clock.advance(60)
    world.cp.fail_next["create_rerun"].append(invalid)
    world.sync()  # lists "old" once more (from the watermark before it, minus the overlap)
    world.clock.advance(60)
    world.sync()  # this listing no longer reaches "old"
    assert world.cp.reruns() == [] and world.cp.calls["create_rerun"] == 2

    world.set_policies(POLICIES.replace("      scope: failed_action\n", "      scope: run\n"))
    world.rec.policies_changed()
    world.sync()

    assert [r.ref.name for r in world.cp.reruns()] == ["recent-retry-1"]
    assert world.cp.calls["read_failure"] == 2  # re-decided from the cached facts


@pytest.mark.parametrize("how", ["reload", "restart"])
def test_changed_policies_never_rerun_a_failure_already_rerun_after_a_reload_or_a_restart(
    tmp_path: Path, how: str
) -> None:
    """Reloaded policies leave settled failures settled; a restart decides them afresh. A failure
    already rerun is found rerun even when its rerun is older than the resync window and the
    new policies differ (scope, attempts): no second rerun."""
    world = World(tmp_path, overlap=timedelta(seconds=1))
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(60)
    world.sync()
    assert [r.ref.name for r in world.cp.reruns()] == ["abc123-retry-1"]
    world.cp.fail("abc123-retry-1", phase="SUCCEEDED")
    for _ in range(5):  # several passes: the rerun is older than the watermark minus the overlap
        world.clock.advance(60)
        world.sync()

    world.set_policies(
        POLICIES.replace("      scope: failed_action\n", "      scope: recover\n      max_attempts: 5\n")
    )
    if how == "reload":
        world.rec.policies_changed()
    else:
        world.rec = world.new_reconciler()
    for _ in range(3):
        world.clock.advance(60)
        world.sync()

    assert [r.ref.name for r in world.cp.reruns()] == ["abc123-retry-1"]
    assert world.cp.calls["create_rerun"] == 1
    assert not world.rec.pending()


def test_secret_looking_env_values_are_masked_in_decisions_and_the_ledger(tmp_path: Path) -> None:
    world = World(tmp_path, POLICIES.replace("FLYTE_RETRY: 'true'", "FLYTE_RETRY: 'true', API_TOKEN: s3cr3t"))
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(60)

    world.sync()

    [rerun] = world.cp.reruns()
    assert rerun.request is not None and rerun.request.env["API_TOKEN"] == "s3cr3t"
    [entry] = world.rec.recent
    assert entry["env"]["API_TOKEN"] == "***"
    assert "s3cr3t" not in str(world.ledger.history(limit=10))


def test_watch_events_wait_for_a_reruns_listing_of_the_policies_in_force(world: World) -> None:
    """A failure seen on the stream before the reruns are listed (at start, or right after a
    reload) is left to the pass, which knows every existing rerun of its lineage."""
    world.cp.add_failed("old", at=T0)
    world.clock.advance(60)

    async def watch(run_name: str) -> None:
        await world.rec.on_watch(world.cp.runs[world.cp.ref(run_name)].summary())
        assert await world.rec.drain(timeout=10)

    asyncio.run(watch("old"))
    assert world.cp.reruns() == [] and world.cp.calls["read_failure"] == 0

    world.sync()
    assert [r.ref.name for r in world.cp.reruns()] == ["old-retry-1"]

    world.cp.add_failed("new", at=world.clock())
    world.clock.advance(60)
    asyncio.run(watch("new"))
    assert [r.ref.name for r in world.cp.reruns()] == ["new-retry-1", "old-retry-1"]

    # A reload that changes the policy: the old failure is re-decided, but only by the pass.
    world.set_policies(POLICIES.replace("      scope: failed_action\n", "      scope: run\n"))
    world.rec.policies_changed()
    asyncio.run(watch("old"))
    assert len(world.cp.reruns()) == 2
    world.sync()
    assert [r.ref.name for r in world.cp.reruns()] == ["new-retry-1", "old-retry-1"]


def test_only_a_failed_run_on_the_stream_costs_a_task_and_a_reruns_outcome_is_recorded_at_once(
    world: World,
) -> None:
    """Most stream events are a run queued or running: ``watch_event`` answers them with None
    (the daemon starts no task for them); a rerun's end is recorded there and then; a failed run
    comes back as the coroutine that reads and decides it."""
    world.cp.add_failed("abc", at=T0)
    world.clock.advance(60)
    world.sync()
    [rerun] = world.cp.reruns()

    for phase in ("QUEUED", "INITIALIZING", "RUNNING"):
        assert world.rec.watch_event(dataclasses.replace(rerun.summary(), phase=phase)) is None
    world.cp.fail(rerun.ref.name, phase="SUCCEEDED")
    assert world.rec.watch_event(rerun.summary()) is None
    assert world.metric("rerund_rerun_outcomes_total", policy="transient", outcome="succeeded") == 1

    world.cp.add_failed("new", at=world.clock())
    world.clock.advance(60)
    handle = world.rec.watch_event(world.cp.runs[world.cp.ref("new")].summary())
    assert handle is not None and world.cp.calls["read_failure"] == 1  # not read until run

    async def run() -> None:
        await handle
        assert await world.rec.drain(timeout=10)

    asyncio.run(run())
    assert world.cp.calls["read_failure"] == 2
    assert [r.ref.name for r in world.cp.reruns()] == ["abc-retry-1", "new-retry-1"]


@pytest.mark.parametrize(
    "bound", [{"seen_capacity": 2}, {"seen_bytes": 1}], ids=["past-its-capacity", "past-its-byte-budget"]
)
def test_failures_inside_the_resync_window_are_never_read_twice_past_the_cache_capacity(
    tmp_path: Path, bound: dict[str, int]
) -> None:
    world = World(tmp_path, **bound)
    for name in ("aaa", "bbb", "ccc", "ddd", "eee"):
        world.cp.add_failed(name, at=T0)
    world.clock.advance(60)

    for _ in range(3):
        world.sync()
        world.clock.advance(5)

    assert world.cp.calls["read_failure"] == 5
    assert len(world.cp.reruns()) == 5


def test_the_cache_shrinks_back_to_its_capacity_once_failures_leave_the_window(tmp_path: Path) -> None:
    world = World(tmp_path, seen_capacity=2, overlap=timedelta(minutes=1))
    for name in ("aaa", "bbb", "ccc"):
        world.cp.add_failed(name, at=T0)
    world.clock.advance(60)
    world.sync()
    world.clock.advance(3600)
    world.cp.add_failed("new1", at=world.clock())
    world.clock.advance(10)
    world.sync()  # still lists the first three (the window starts at the last watermark - 1m)
    assert world.cp.calls["read_failure"] == 4

    world.cp.add_failed("new2", at=world.clock())
    world.clock.advance(10)
    world.sync()

    assert world.cp.calls["read_failure"] == 5
    assert world.rec.cached_failures() == 2


# -- open-source Flyte: late error details, aborts of finished runs ------------------------------


def test_a_failed_run_whose_error_details_are_late_is_decided_once_they_arrive(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = World(tmp_path, error_wait=timedelta(minutes=10))
    run = world.cp.add_failed("late1", at=T0, error_pending=True, error=ErrorInfo())
    world.clock.advance(5)

    with caplog.at_level(logging.INFO, logger="rerund.reconcile"):
        first = world.sync()
    waiting = world.rec.pending()
    run.error_pending, run.error = False, CONNECTION_RESET
    world.clock.advance(30)
    world.sync()

    assert first.ok and world.cp.reruns()[0].ref.name == "late1-retry-1"
    assert list(waiting) == [str(world.cp.ref("late1"))]
    assert (
        "run ml/production/late1 is FAILED but its error details have not arrived yet; rerund waits up "
        "to 600s after the failure for them before deciding (reads it again in 2.0s)"
    ) in caplog.text
    assert world.cp.calls_by_run[("read_failure", "late1")] == 2
    assert world.metric("rerund_decisions_total", policy="transient", decision="rerun") == 1


def test_error_details_that_never_arrive_are_waited_for_a_bounded_time(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.cp.add_failed("never1", at=T0, error_pending=True, error=ErrorInfo())
    world.clock.advance(5)
    world.sync()
    world.clock.advance(60)

    with caplog.at_level(logging.WARNING, logger="rerund.reconcile"):
        world.sync()

    assert world.rec.pending() == {}
    assert (
        "run ml/production/never1: its error details did not arrive within 60s of the failure; deciding "
        "without them (no error kind, code or message for the policies to match)"
    ) in caplog.text


def test_a_run_aborted_after_it_succeeded_is_ignored_and_not_read_again(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.cp.add_failed("done1", at=T0, phase="ABORTED", finished_phase="SUCCEEDED")
    world.clock.advance(60)

    with caplog.at_level(logging.INFO, logger="rerund.reconcile"):
        world.sync()
        world.clock.advance(5)
        world.sync()

    assert world.cp.reruns() == []
    assert (
        "run ml/production/done1: ignored: it is ABORTED only because it was aborted after it had SUCCEEDED"
        in (caplog.text)
    )
    assert world.cp.calls_by_run[("read_failure", "done1")] == 1
    assert world.metric("rerund_decisions_total", policy="", decision="ignore") == 0


def test_a_failed_run_aborted_afterwards_gets_no_second_rerun(world: World) -> None:
    run = world.cp.add_failed("fail1", at=T0)
    world.clock.advance(60)
    world.sync()
    # An operator aborts the finished run (its updated_at moves, its end time stays).
    run.phase, run.finished_phase, run.updated_at = "ABORTED", "FAILED", world.clock()
    world.clock.advance(5)

    world.sync()

    assert [r.ref.name for r in world.cp.reruns()] == ["fail1-retry-1"]
    assert world.cp.calls_by_run[("read_failure", "fail1")] == 2


def test_a_restart_with_a_fresh_ledger_calls_existing_reruns_already_issued_not_new_decisions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "first").mkdir()
    first = World(tmp_path / "first")
    first.cp.add_failed("abc123", at=T0)
    first.cp.add_failed("def456", at=T0)
    first.clock.advance(60)
    first.sync()
    assert len(first.cp.reruns()) == 2
    # A new replica (or an emptyDir restart): the same control plane, an empty ledger.
    (tmp_path / "second").mkdir()
    fresh = Ledger(tmp_path / "second" / "rerund.db")
    first.ledger = fresh
    first.rec = first.new_reconciler(ledger=fresh)
    caplog.set_level("DEBUG", logger="rerund")
    caplog.clear()

    first.sync()

    assert len(first.cp.reruns()) == 2
    assert first.metric("rerund_decisions_total", policy="transient", decision="rerun") == 0
    assert fresh.history() == []
    lines = [r.getMessage() for r in caplog.records if r.name == "rerund.decisions"]
    assert not [line for line in lines if line.startswith("rerun ")]
    assert sorted(line for line in lines if line.startswith("exists")) == [
        "exists  ml/production/abc123: rerun ml/production/abc123-retry-1 (attempt 1) was already issued; "
        "nothing to do",
        "exists  ml/production/def456: rerun ml/production/def456-retry-1 (attempt 1) was already issued; "
        "nothing to do",
    ]
    assert sorted((i["target"], i["result"]) for i in fresh.issues()) == [
        ("abc123-retry-1", "already_exists"),
        ("def456-retry-1", "already_exists"),
    ]


def test_every_decision_carries_the_failures_fingerprint_in_the_ledger_decisions_and_json_log(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    reset = "Connection reset by peer (x-request-id: {}) at 10.0.3.{}:8080"
    world.cp.add_failed(
        "abc123",
        action="a2",
        action_task="train.load",
        at=T0,
        error=CONNECTION_RESET.model_copy(update={"message": reset.format("a1b2c3d4e5", 17)}),
    )
    world.cp.add_failed(
        "def456",
        action="a2",
        action_task="train.load",
        at=T0,
        error=CONNECTION_RESET.model_copy(update={"message": reset.format("ffee0099", 4)}),
    )
    world.clock.advance(60)

    with caplog.at_level(logging.INFO, logger="rerund.decisions"):
        world.sync()

    fp = error_fingerprint(
        "train.load", CONNECTION_RESET.model_copy(update={"message": reset.format("x", 1)})
    )
    assert [d["fingerprint"] for d in world.rec.recent] == [fp, fp]  # /decisions
    assert [d["fingerprint"] for d in world.ledger.history()] == [fp, fp]  # history, the ledger
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "rerund.decisions"]
    assert sorted(line["decision"] for line in lines) == ["created", "created", "rerun", "rerun"]
    assert {line["fingerprint"] for line in lines} == {fp}  # the decisions and the reruns created
    # not a metric label: metrics count decisions, never fingerprints (unbounded)
    assert all(
        fp not in sample.labels.values() for metric in world.registry.collect() for sample in metric.samples
    )


def test_a_failed_run_executing_again_when_read_is_not_decided_from_its_listed_phase(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # Open-source Flyte runs a FAILED run again when a CreateRun names it: listed FAILED, it can
    # be RUNNING by the time its failure is read. Its next end is the failure to decide.
    world.sync()
    run = world.cp.add_failed("fail1", at=T0)
    world.clock.advance(60)
    listed = run.summary()
    run.phase, run.ended_at = "RUNNING", None

    async def handle_listed() -> None:
        await world.rec._handle(listed, world.clock())
        assert await world.rec.drain(timeout=10)

    with caplog.at_level(logging.INFO, logger="rerund.reconcile"):
        asyncio.run(handle_listed())

    assert world.cp.reruns() == []
    assert "run ml/production/fail1: not decided: listed FAILED but RUNNING when read" in caplog.text
    run.phase, run.ended_at, run.updated_at = "FAILED", world.clock(), world.clock()
    world.clock.advance(15)  # past the 10 s backoff
    world.sync()
    assert [r.ref.name for r in world.cp.reruns()] == ["fail1-retry-1"]


def test_a_new_process_whose_reruns_listing_failed_spends_no_budget_until_it_lists_them(
    tmp_path: Path,
) -> None:
    # A new leader (or a restart) counts a budget from the control plane's listing of reruns:
    # deciding before any listing of them would count none and spend the budget again.
    world = World(
        tmp_path,
        POLICIES.replace("policies:\n", "budgets:\n  global: {max_reruns: 1, per: 1h}\npolicies:\n", 1),
    )
    world.cp.add_failed("aaa", at=T0)
    world.clock.advance(60)
    world.sync()
    assert [r.ref.name for r in world.cp.reruns()] == ["aaa-retry-1"]
    world.clock.advance(600)  # 'aaa' leaves the failed runs' overlap; its rerun stays in the budget's hour
    world.sync()
    world.rec = world.new_reconciler()
    world.cp.add_failed("bbb", at=world.clock())
    world.clock.advance(5)
    world.cp.fail_next["list_reruns"].append(
        TransientControlPlaneError("listing down", rpc="ListRuns", code="unavailable")
    )

    report = world.sync()

    assert not report.ok
    assert [r.ref.name for r in world.cp.reruns()] == ["aaa-retry-1"]
    assert world.rec.recent == ()  # on today's code: a rerun of 'bbb', the budget counted as empty
    assert world.rec.pending() == {}  # not decided: the next pass decides it

    world.clock.advance(5)
    world.sync()

    assert [r.ref.name for r in world.cp.reruns()] == ["aaa-retry-1"]
    assert world.metric("rerund_budget_deferrals_total", budget="global") == 1
    deferred = [d for d in world.rec.recent if d["decision"] == "defer"]
    assert len(deferred) == 1 and "budget 'global'" in deferred[0]["reason"]
