"""The reliability suite of the benchmarks issue: storms of failures while the daemon is killed,
replicated, or its control plane misbehaves — and every scenario ends with the oracle's check of
the control plane's own runs (``tests/rerun_oracle.py``): for every lineage the reruns equal
exactly what the policies owe (no duplicate (root, attempt), none missing), and every daemon
still answers ``/healthz`` and ``/readyz``.

Each scenario runs twice over: a shortened version in ``make test`` and the full one under
``@pytest.mark.slow`` (``make chaos``), which also writes its row of the results table in
``bench/README.md``. Random moments (kills) come from a seeded ``random.Random``; the seed is
in the test id so a failure can be replayed.

Every scenario runs against both sandbox profiles: ``union`` and ``oss`` (open-source Flyte 2:
no label filters, no ALREADY_EXISTS, late error details, lossy root-only WatchRuns). The
daemon runs with ``backend: auto`` and finds out which one it talks to. ``make test`` runs the
short SIGKILL and replica scenarios on ``oss`` too (smaller); the rest run on ``oss`` in
``make chaos``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from results_table import record

from daemon_support import DaemonProcess, daemons, settle, total, wait_until
from rerun_oracle import audit, budget_row
from rerund.policy import load_policies
from rerund.sandbox.testing import start_sandbox
from storms import STORM_WORKLOAD, launch_storm, owed_reruns, storm_policies, write_policies

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]  # generous: the machine may be loaded


@dataclass(frozen=True)
class Size:
    failures: int
    kills: int = 0
    seed: int = 7


SHORT = pytest.param


def FULL(*values: Any, id: str, timeout: int = 900) -> Any:
    """A full-size scenario: slow (``make chaos``), with a longer per-test timeout."""
    return pytest.param(*values, id=id, marks=[pytest.mark.slow, pytest.mark.timeout(timeout)])


def _healthy(*procs: DaemonProcess) -> None:
    for p in procs:
        assert p.alive(), p.logs()
        assert p.healthz()[0] == 200
        p.wait_ready(timeout=60)


def _scenario(name: str, profile: str) -> str:
    return name if profile == "union" else f"{name} (oss)"


@pytest.fixture
def storm_policy_file(tmp_path: Path) -> Path:
    return write_policies(tmp_path / "policies.yaml", storm_policies())


@pytest.mark.parametrize(
    ("profile", "size"),
    [
        SHORT("union", Size(failures=200, kills=3), id="union-short-200-failures-3-kills"),
        SHORT("oss", Size(failures=60, kills=2), id="oss-short-60-failures-2-kills"),
        FULL("union", Size(failures=2000, kills=10), id="union-full-2000-failures-10-kills"),
        FULL("oss", Size(failures=2000, kills=10), id="oss-full-2000-failures-10-kills"),
    ],
)
def test_sigkill_at_random_moments_during_a_storm_neither_duplicates_nor_misses(
    profile: str, size: Size, tmp_path: Path, storm_policy_file: Path
) -> None:
    rng = random.Random(size.seed)
    policies = load_policies([storm_policy_file])
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0, profile=profile) as sb:
        d = DaemonProcess(tmp_path / "d", sb, storm_policy_file)
        with daemons(d):
            d.wait_ready()

            def kill_and_restart(wave: int) -> None:
                # a random moment while the wave is being worked on, then SIGKILL and restart
                time.sleep(rng.uniform(0.2, 2.5))
                d.kill()
                d.start()

            launch_storm(sb, size.failures, waves=size.kills, between=kill_and_restart)
            result = settle(sb, [d], policies, timeout=900)
            assert d.starts == size.kills + 1
            assert result.failures == size.failures
            assert result.owed == owed_reruns(size.failures)
            assert result.exact(), result.problems()
            _healthy(d)
    if size.kills >= 10:
        record(_scenario(f"SIGKILL x{size.kills} during a storm", profile), result.row())


@pytest.mark.parametrize(
    ("profile", "replicas", "size"),
    [
        SHORT("union", 2, Size(failures=120), id="union-short-2-replicas-120-failures"),
        SHORT("union", 3, Size(failures=120), id="union-short-3-replicas-120-failures"),
        SHORT("oss", 2, Size(failures=40), id="oss-short-2-replicas-40-failures"),
        FULL("union", 2, Size(failures=1000), id="union-full-2-replicas-1000-failures"),
        FULL("union", 3, Size(failures=1000), id="union-full-3-replicas-1000-failures"),
        FULL("oss", 2, Size(failures=1000), id="oss-full-2-replicas-1000-failures"),
        FULL("oss", 3, Size(failures=1000), id="oss-full-3-replicas-1000-failures"),
    ],
)
def test_replicas_against_one_sandbox_issue_each_rerun_once(
    profile: str, replicas: int, size: Size, tmp_path: Path, storm_policy_file: Path
) -> None:
    policies = load_policies([storm_policy_file])
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0, profile=profile) as sb:
        procs = tuple(
            DaemonProcess(tmp_path / f"d{i}", sb, storm_policy_file, name=f"replica{i}")
            for i in range(replicas)
        )
        with daemons(*procs):
            for p in procs:
                p.wait_ready()
            launch_storm(sb, size.failures, waves=3)
            result = settle(sb, procs, policies, timeout=900)
            assert result.owed == owed_reruns(size.failures)
            assert result.exact(), result.problems()
            _healthy(*procs)
            # every replica did part of the work, and together exactly the owed reruns
            issued = [total(p.metrics(), "rerund_reruns_issued_total") for p in procs]
            assert sum(issued) == result.issued, issued
    if size.failures >= 1000:
        record(_scenario(f"{replicas} replicas during a storm", profile), result.row())


@pytest.mark.parametrize(
    ("profile", "size"),
    [
        SHORT("union", Size(failures=60), id="union-short-60-failures"),
        FULL("union", Size(failures=500), id="union-full-500-failures"),
        FULL("oss", Size(failures=500), id="oss-full-500-failures"),
    ],
)
def test_sandbox_faults_and_a_sandbox_restart_miss_nothing(
    profile: str, size: Size, tmp_path: Path, storm_policy_file: Path
) -> None:
    policies = load_policies([storm_policy_file])
    db = tmp_path / "sandbox.db"
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0, db=db, profile=profile) as sb:
        d = DaemonProcess(tmp_path / "d", sb, storm_policy_file)
        with daemons(d):
            d.wait_ready()
            sb.set_faults(unavailable=0.3, latency_s=0.2, drop_streams_after=50)

            def restart_sandbox(wave: int) -> None:
                if wave == 0:
                    time.sleep(2.0)
                    sb.restart()  # durable: the runs survive in the --db file

            launch_storm(sb, size.failures, waves=2, between=restart_sandbox)
            wait_until(
                "a few owed reruns under faults",
                lambda: audit(sb.runs(), policies).issued >= owed_reruns(size.failures) // 3,
                600,
                d.logs,
                interval=1.0,
            )
            # The SDK retries UNAVAILABLE itself (4 attempts), so only ~0.3^4 of the calls reach
            # rerund as errors: keep the faults on until one has, rather than hoping one already did.
            wait_until(
                "an UNAVAILABLE answer counted by the daemon",
                lambda: total(d.metrics(), "rerund_control_plane_errors_total", code="unavailable") > 0,
                120,
                d.logs,
                interval=1.0,
            )
            sb.set_faults(unavailable=0.0, latency_s=0.0, drop_streams_after=0)
            result = settle(sb, [d], policies, timeout=900)
            assert result.owed == owed_reruns(size.failures)
            assert result.exact(), result.problems()
            _healthy(d)
    if size.failures >= 500:
        record(_scenario("sandbox faults + sandbox restart", profile), result.row())


@pytest.mark.parametrize(
    ("profile", "size", "budget"),
    [
        SHORT("union", Size(failures=500), 20, id="union-short-500-failures-budget-20"),
        FULL("union", Size(failures=10_000), 100, id="union-full-10000-failures-budget-100", timeout=1200),
        FULL("oss", Size(failures=2000), 50, id="oss-full-2000-failures-budget-50", timeout=1200),
    ],
)
def test_a_retry_storm_under_a_global_budget_issues_exactly_the_budget(
    profile: str, size: Size, budget: int, tmp_path: Path
) -> None:
    # One replica on a file state. Independent replicas (each on a file of its own) would not
    # be exact: each counts the reruns it can list, and two deciding at once may both take the
    # last slot. Replicas on one shared PostgreSQL state are exact (only the leader decides; a
    # new leader counts the window from its first listing):
    # test_reliability_leadership.py::test_a_global_budget_on_a_shared_state_is_exact_across_leader_kills.
    doc = storm_policies(budget={"max_reruns": budget, "per": "10m"})
    policy_file = write_policies(tmp_path / "policies.yaml", doc)
    policies = load_policies([policy_file])
    workload: dict[str, Any] = {"tasks": {"storm.flaky": STORM_WORKLOAD["tasks"]["storm.flaky"]}}
    with start_sandbox(workload=workload, time_scale=1.0, profile=profile) as sb:
        d = DaemonProcess(tmp_path / "d", sb, policy_file)
        with daemons(d):
            d.wait_ready()
            sb.launch(task="storm.flaky", count=size.failures)
            deferred = size.failures - budget

            def budget_spent() -> bool:
                m = d.metrics()
                return (
                    total(m, "rerund_budget_deferrals_total", budget="global") >= deferred
                    and len(d.pending()) == deferred
                    and total(m, "rerund_reruns_issued_total") >= budget
                )

            wait_until(
                "the budget to be spent and the rest deferred", budget_spent, 900, d.logs, interval=1.0
            )
            sb.wait_idle(timeout=120)
            time.sleep(3)  # a few more passes: nothing beyond the budget may appear
            result = audit(sb.runs(), policies)
            row = budget_row(result, budget)
            assert row["issued"] == budget and row["duplicates"] == 0 and row["missed"] == 0, row
            assert result.duplicates == 0 and not result.wrong, result.problems()
            m = d.metrics()
            assert total(m, "rerund_budget_deferrals_total", budget="global") == deferred
            assert total(m, "rerund_reruns_issued_total") == budget
            assert total(m, "rerund_decisions_total", decision="defer") == deferred
            body = d.decisions(limit=50)
            defers = [x for x in body["decisions"] if x["decision"] == "defer"]
            assert defers and all("budget 'global'" in x["reason"] for x in defers), body["decisions"][:3]
            assert all(x["not_before"] for x in defers)
            assert len(body["pending"]) == deferred
            _healthy(d)
    if size.failures >= 2000:
        record(_scenario(f"budget {budget} per 10m, retry storm", profile), row)


@pytest.mark.parametrize(
    ("profile", "size"),
    [
        SHORT("oss", Size(failures=40), id="oss-short-40-failures-db-errors-0.3"),
        FULL("union", Size(failures=1000), id="union-full-1000-failures-db-errors-0.3"),
        FULL("oss", Size(failures=1000), id="oss-full-1000-failures-db-errors-0.3", timeout=3600),
    ],
)
def test_database_errors_during_a_storm_run_no_name_again(
    profile: str, size: Size, tmp_path: Path, storm_policy_file: Path, request: pytest.FixtureRequest
) -> None:
    """``db_errors: 0.3``: that share of GetRunDetails answer NOT_FOUND (open-source Flyte's
    answer to any database error; INTERNAL on the union profile) and of ListRuns INTERNAL. Two
    replicas; a create of a name that exists would run it again (``reexecutions``), and a failed
    run read as absent would be settled as deleted and never rerun: every owed rerun is issued
    once. On union the replicas are independent and race for every rerun (the control plane
    refuses a second create of a name). On oss they share a PostgreSQL state, the setup
    docs/replicas.md prescribes there: open-source Flyte runs a second create of a name again, so
    two replicas without a shared state can both pass the look within one read of each other
    (the full storm here once printed ``reexecutions`` 1 with independent replicas)."""
    shared = {"state": request.getfixturevalue("pg_url")} if profile == "oss" else None
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0, profile=profile) as sb:
        sb.set_faults(db_errors=0.3)
        procs = tuple(
            DaemonProcess(tmp_path / f"d{i}", sb, storm_policy_file, name=f"replica{i}", extra=shared)
            for i in range(2)
        )
        with daemons(*procs):
            launch_storm(sb, size.failures, waves=3)
            sb.wait_idle(timeout=300)
            target = sb.request_counts().get("ListRuns", 0) + 40  # ~10 more passes of each replica
            wait_until(
                "more resync passes",
                lambda: sb.request_counts().get("ListRuns", 0) >= target,
                300,
                procs[0].logs,
            )
            sb.wait_idle(timeout=300)
            # One leader on oss issues ~1 rerun/s here (each create's reads fail 30% of the time
            # and are retried; a run of 1,000 failures needed ~25 minutes of it).
            wait = 2400 if shared and size.failures >= 1000 else 900
            result = settle(sb, procs, load_policies([storm_policy_file]), timeout=wait)
            assert result.duplicates == 0 and not result.missed and not result.wrong, result.problems()
            stats = sb.stats()
            assert stats["requests"].get("GetRunDetailsDbError", 0) > 0  # the fault did bite
            assert stats["reexecutions"] == 0
            assert (
                total(procs[0].metrics(), "rerund_reruns_issued_total")
                + total(procs[1].metrics(), "rerund_reruns_issued_total")
                > 0
            )
