"""Replicas on one PostgreSQL state through a storm while the leader is SIGKILLed again and again,
the database stops once and the leader is partitioned from the database without dying (issue
25): 0 duplicate reruns, 0 missed, every exhausted lineage notified exactly once (a real webhook
receiver counts the POSTs per event key), and never two replicas acting (each replica's
``rerund_leader`` sampled throughout; fenced writes counted).

Every replica reaches PostgreSQL through a TCP proxy of its own (``tcp_proxy``), so the one that
leads can be partitioned: black-holed (nothing passes, nothing is refused: the leader must notice
by its own check's timeout, and PostgreSQL must free its lock by the session's idle timeout, as
keepalives cannot see past a proxy) or cut (reset). The partitioned leader stops acting before
another replica leads, exits 3 and, once the proxy heals, comes back as a follower.

A "supervisor" here restarts every replica that exits (SIGKILL, or status 3 after losing the
lead), as Kubernetes does. The shortened scenario runs in ``make test`` (no partition: the
partition of one leader has its own short test in tests/state/test_partition.py); under ``make
chaos`` a short one with both partitions, and the full one (three replicas, ten kills, the
database stopped for 10 s, a black hole and a cut) on both sandbox profiles, which writes its
rows of the results table in ``bench/README.md``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from results_table import record

from daemon_support import DaemonProcess, total, wait_until
from daemon_support import settle as settle_all
from postgres_support import PostgresServer
from rerun_oracle import audit, budget_row, reruns
from rerund.policy import load_policies
from rerund.sandbox.testing import start_sandbox
from state.support import Receiver
from storms import STORM_WORKLOAD, launch_storm, storm_policies, write_policies
from tcp_proxy import TcpProxy, address_of, proxied_url

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def _leaders(procs: list[DaemonProcess]) -> list[DaemonProcess]:
    out = []
    for p in procs:
        try:
            if p.alive() and total(p.metrics(), "rerund_leader") == 1.0:
                out.append(p)
        except OSError:
            continue
    return out


class Supervisor:
    """Restarts replicas that exited; samples how many report leading at once."""

    def __init__(self, procs: list[DaemonProcess]) -> None:
        self.procs = procs
        self.max_leaders = 0
        self.exits: list[int] = []
        self.exited: list[tuple[DaemonProcess, int]] = []
        self.exit_times: dict[DaemonProcess, list[float]] = {p: [] for p in procs}  # time.monotonic()
        self.refusals: list[str] = []  # the last log line of each replica that exited 2
        self.leading: list[DaemonProcess] = []  # who reported leading at the last sample
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for p in self.procs:
                if p.proc is not None and p.proc.poll() is not None and not self._stop.is_set():
                    self.exits.append(int(p.proc.returncode))
                    self.exited.append((p, int(p.proc.returncode)))
                    self.exit_times[p].append(time.monotonic())
                    if p.proc.returncode == 2:  # why: the last lines of its log
                        self.refusals.append(p.logs(2000).strip().splitlines()[-1])
                    p.start(wait=False)
            self.leading = _leaders(self.procs)
            self.samples += 1
            self.max_leaders = max(self.max_leaders, len(self.leading))
            time.sleep(0.2)

    def next_samples(self, n: int = 2) -> list[DaemonProcess]:
        """Who leads, as seen by a sample taken after this call."""
        start = self.samples
        while self.samples < start + n:
            time.sleep(0.05)
        return list(self.leading)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def _scenario(
    profile: str, replicas: int, failures: int, kills: int, db_outage: float, partitions: tuple[str, ...]
) -> Any:
    values = (profile, replicas, failures, kills, db_outage, partitions)
    name = f"{replicas}-replicas-{kills}-kills" + "".join(f"-{p}" for p in partitions)
    if failures >= 300:
        return pytest.param(
            *values, id=f"{profile}-full-{name}", marks=[pytest.mark.slow, pytest.mark.timeout(1200)]
        )
    if partitions:
        return pytest.param(*values, id=f"{profile}-short-{name}", marks=[pytest.mark.slow])
    return pytest.param(*values, id=f"short-{name}")


@dataclass
class Partition:
    """One partition of the leader from the database, and what the samples saw of it."""

    mode: str  # "blackhole" | "cut"
    leader: str = ""
    stopped_first: bool = False  # the partitioned leader stopped reporting leading before another did
    exit: int | None = None  # the partitioned leader's exit status
    rejoined: bool = False  # back as a follower after the proxy healed
    took_over_s: float = 0.0  # from the partition to another replica seen leading (printed, not asserted)
    exited_s: float = 0.0  # from the partition to the partitioned leader's exit (printed, not asserted)

    def row(self) -> str:
        return (
            f"{self.mode} of {self.leader}: stopped leading before another led {self.stopped_first}, "
            f"exited {self.exit} after {self.exited_s:.1f}s, another led after {self.took_over_s:.1f}s, "
            f"rejoined as follower {self.rejoined}"
        )


def _partition(
    mode: str, procs: list[DaemonProcess], proxies: list[TcpProxy], supervisor: Supervisor, logs: Any
) -> Partition:
    """Partition the leader from the database (``mode``), see another replica take over and the
    partitioned one exit, heal, and see it come back as a follower."""
    wait_until(f"a leader to {mode}", lambda: len(_leaders(procs)) == 1, 120, logs)
    old = _leaders(procs)[0]
    index = procs.index(old)
    seen = Partition(mode, leader=old.config.stem)
    exits_before = sum(1 for p, _ in supervisor.exited if p is old)
    getattr(proxies[index], mode)()
    start = time.monotonic()
    old_stopped = False
    deadline = time.monotonic() + 120
    while True:  # until another replica leads, noting whether the partitioned one stopped first
        leading = supervisor.next_samples(1)
        if old not in leading:
            old_stopped = True
        if any(p is not old for p in leading):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"no other replica led within 120s of the {mode}\n{logs()}")
    seen.stopped_first = old_stopped
    seen.took_over_s = time.monotonic() - start
    wait_until(
        f"the {mode} leader to exit",
        lambda: sum(1 for p, _ in supervisor.exited if p is old) > exits_before,
        120,
        logs,
    )
    seen.exited_s = supervisor.exit_times[old][exits_before] - start
    seen.exit = [code for p, code in supervisor.exited if p is old][exits_before]
    proxies[index].heal()

    def rejoined() -> bool:
        try:
            status, body = old.readyz()
        except OSError:
            return False
        return old.alive() and status == 200 and "follower" in body

    wait_until(f"the {mode} leader back as a follower", rejoined, 120, logs)
    seen.rejoined = True
    return seen


@pytest.mark.parametrize(
    ("profile", "replicas", "failures", "kills", "db_outage", "partitions"),
    [
        _scenario("union", 2, 40, 2, 3.0, ()),
        _scenario("union", 2, 40, 1, 3.0, ("blackhole", "cut")),
        _scenario("union", 3, 2000, 10, 10.0, ("blackhole", "cut")),
        _scenario("oss", 3, 2000, 10, 10.0, ("blackhole", "cut")),
    ],
)
def test_replicas_on_postgres_through_leader_kills_a_database_stop_and_a_partition_act_once(
    tmp_path: Path,
    pg_url: str,
    postgres: PostgresServer,
    receiver: Receiver,
    profile: str,
    replicas: int,
    failures: int,
    kills: int,
    db_outage: float,
    partitions: tuple[str, ...],
) -> None:
    rng = random.Random(25)
    policy_file = write_policies(tmp_path / "policies.yaml", storm_policies())
    policies = load_policies([policy_file])
    notify = {"webhook": receiver.url, "retries": 2, "timeout": "2s"}
    proxies = [TcpProxy(address_of(pg_url)) for _ in range(replicas)]  # one per replica
    seen: list[Partition] = []
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0, profile=profile) as sb:
        procs = [
            DaemonProcess(
                tmp_path / f"r{i}",
                sb,
                policy_file,
                name=f"r{i}",
                extra={"state": proxied_url(pg_url, proxies[i]), "notify": notify},
            )
            for i in range(replicas)
        ]
        for p in procs:
            p.start()
        supervisor = Supervisor(procs)
        logs = lambda: "\n".join(p.logs(3000) for p in procs)  # noqa: E731
        try:
            wait_until("a leader", lambda: len(_leaders(procs)) == 1, 90, logs)
            waves = kills + 1
            killed = 0
            # the black hole early, the cut late (the database stop is at waves // 2)
            partition_waves = [max(0, waves // 4), max(0, waves - 2)][: len(partitions)]

            def between(wave: int) -> None:
                nonlocal killed
                if wave == waves // 2:  # the database goes away once, mid-storm, under a leader
                    wait_until("a leader to lose the database", lambda: len(_leaders(procs)) == 1, 120, logs)
                    postgres.stop()
                    time.sleep(db_outage)
                    postgres.start()
                for at, mode in zip(partition_waves, partitions, strict=True):
                    if wave == at:
                        seen.append(_partition(mode, procs, proxies, supervisor, logs))
                if killed < kills:
                    time.sleep(rng.uniform(0.2, 1.5))
                    wait_until("a leader to kill", lambda: len(_leaders(procs)) >= 1, 120, logs)
                    _leaders(procs)[0].kill()
                    killed += 1

            launch_storm(sb, failures, waves=waves, between=between)
            wait_until("a leader after the storm", lambda: len(_leaders(procs)) == 1, 120, logs)
            result = settle_all(sb, procs, policies, timeout=500)
            exhausted = result.count("give_up")
            wait_until(
                "every exhausted lineage notified", lambda: len(receiver.per_key()) >= exhausted, 180, logs
            )
            time.sleep(3)  # a late duplicate would show now
            fenced = sum(total(p.metrics(), "rerund_fenced_writes_total") for p in procs if p.alive())
            changes = sum(total(p.metrics(), "rerund_leader_changes_total") for p in procs if p.alive())
            creates = sb.stats()["requests"].get("CreateRun", 0)
        finally:
            supervisor.stop()
            for proxy in proxies:
                proxy.heal()
            for p in procs:
                if p.alive():
                    p.terminate(timeout=15)
            for proxy in proxies:
                proxy.close()
    per_key = receiver.per_key()
    duplicates = {k: n for k, n in per_key.items() if n > 1}
    print(
        f"\nchaos ({profile}): {replicas} replicas, {failures} failures, {kills} leader kills, database "
        f"stopped {db_outage:.0f}s, partitions {list(partitions)}: {result.row()}; CreateRun calls "
        f"{creates}; exhausted {exhausted}, webhook POSTs {sum(per_key.values())} "
        f"for {len(per_key)} keys; exits {sorted(supervisor.exits)}; most replicas reporting leader at "
        f"once {supervisor.max_leaders}; fenced writes (live replicas) {fenced:.0f}; leader changes "
        f"(live replicas) {changes:.0f}" + "".join(f"\n  partition: {p.row()}" for p in seen)
    )
    assert result.exact(), result.problems()
    assert result.failures == failures
    assert not duplicates, duplicates
    assert len(per_key) == exhausted and all(k.startswith("exhausted:") for k in per_key)
    assert killed == kills
    # A killed leader's lock goes with its session; the next one leads only after the term rose,
    # and a replica that lost the lead exits 3 (or was killed: -9). Never two acting: at most a
    # sampling instant where the old one has not noticed yet, and its writes are fenced.
    # A replica restarted while the database is stopped cannot open the shared ledger: it exits 2
    # with what to fix (as any start on an unreachable state does) and its supervisor retries.
    assert set(supervisor.exits) <= {-9, 2, 3}, supervisor.exits
    assert all("cannot open the state database" in why for why in supervisor.refusals), supervisor.refusals
    # the leader that lost the database stepped down, and each partitioned leader did
    assert supervisor.exits.count(3) == 1 + len(partitions)
    assert supervisor.max_leaders <= 2
    # A partitioned leader stops acting before another replica leads: black-holed, its own
    # check times out before PostgreSQL ends its idle lock session; cut, it cannot reach the
    # database at all (every write it tries is refused) while the samples may still catch it
    # reporting leading for an instant. Either way it exits 3 and rejoins as a follower.
    assert [p.mode for p in seen] == list(partitions)
    assert all(p.exit == 3 and p.rejoined for p in seen), [p.row() for p in seen]
    assert all(p.stopped_first for p in seen if p.mode == "blackhole"), [p.row() for p in seen]
    if failures >= 300:
        scenario = (
            f"{replicas} replicas on PostgreSQL, leader SIGKILL x{kills}, database stopped {db_outage:.0f}s"
        )
        if partitions:
            scenario += ", leader " + " and ".join(
                {"blackhole": "black-holed", "cut": "cut"}[p] for p in partitions
            )
        record(
            scenario if profile == "union" else f"{scenario} ({profile})",
            {**result.row(), "duplicates": result.duplicates, "missed": result.missed},
        )


def _budget_scenario(
    profile: str, replicas: int, failures: int, budget: int, kills: int, db_errors: float = 0.0
) -> Any:
    values = (profile, replicas, failures, budget, kills, db_errors)
    name = f"{profile}-{replicas}-replicas-{failures}-failures-budget-{budget}-{kills}-kills"
    name += f"-db-errors-{db_errors}" if db_errors else ""
    if failures >= 300:
        return pytest.param(*values, id=f"full-{name}", marks=[pytest.mark.slow, pytest.mark.timeout(1200)])
    return pytest.param(*values, id=f"short-{name}")


@pytest.mark.parametrize(
    ("profile", "replicas", "failures", "budget", "kills", "db_errors"),
    [
        _budget_scenario("union", 2, 60, 20, 2),
        _budget_scenario("union", 2, 60, 20, 2, db_errors=0.3),
        _budget_scenario("union", 3, 1000, 60, 4),
        _budget_scenario("oss", 3, 1000, 60, 4),
    ],
)
def test_a_global_budget_on_a_shared_state_is_exact_across_leader_kills(
    tmp_path: Path,
    pg_url: str,
    profile: str,
    replicas: int,
    failures: int,
    budget: int,
    kills: int,
    db_errors: float,
) -> None:
    """A retry storm under a global budget while the leader is SIGKILLed as the budget is being
    spent: only the leader decides, and a new leader counts the reruns of the window from the
    control plane's listing before it decides, so exactly ``budget`` reruns are issued across
    every leader, none twice, and the rest of the failures wait on the budget. ``db_errors``:
    that share of the sandbox's ListRuns fail (INTERNAL), a new leader's first listing of
    reruns among them."""
    rng = random.Random(25)
    doc = storm_policies(budget={"max_reruns": budget, "per": "10m"})
    policy_file = write_policies(tmp_path / "policies.yaml", doc)
    policies = load_policies([policy_file])
    workload: dict[str, Any] = {"tasks": {"storm.flaky": STORM_WORKLOAD["tasks"]["storm.flaky"]}}
    deferred = failures - budget
    with start_sandbox(workload=workload, time_scale=1.0, profile=profile) as sb:
        sb.set_faults(db_errors=db_errors)
        procs = [
            DaemonProcess(tmp_path / f"r{i}", sb, policy_file, name=f"r{i}", extra={"state": pg_url})
            for i in range(replicas)
        ]
        for p in procs:
            p.start()
        supervisor = Supervisor(procs)
        logs = lambda: "\n".join(p.logs(3000) for p in procs)  # noqa: E731
        issued = lambda: len(reruns(sb.runs()))  # noqa: E731
        try:
            wait_until("a leader", lambda: len(_leaders(procs)) == 1, 90, logs)
            # Each kill comes while the budget is being spent: a share of the failures is
            # launched, a few of its reruns are issued (some creates may be in flight), then the
            # leader goes; the last share is launched after the last kill.
            per_wave = budget // (kills + 1)
            for k in range(kills):
                sb.launch(task="storm.flaky", count=per_wave)
                target = min(budget - 1, issued() + rng.randint(1, max(1, per_wave - 1)))
                wait_until(f"{target} reruns before kill {k + 1}", lambda t=target: issued() >= t, 120, logs)
                wait_until("a leader to kill", lambda: len(_leaders(procs)) >= 1, 120, logs)
                _leaders(procs)[0].kill()
            sb.launch(task="storm.flaky", count=failures - kills * per_wave)
            wait_until("a leader after the kills", lambda: len(_leaders(procs)) == 1, 120, logs)
            sb.set_faults(db_errors=0.0)  # a failed read leaves its failure pending: count them after

            def budget_spent() -> bool:
                leaders = _leaders(procs)
                return issued() >= budget and len(leaders) == 1 and len(leaders[0].pending()) == deferred

            wait_until("the budget to be spent and the rest deferred", budget_spent, 600, logs, interval=1.0)
            sb.wait_idle(timeout=120)
            time.sleep(3)  # a few more passes: nothing beyond the budget may appear
            result = audit(sb.runs(), policies)
            leader = _leaders(procs)[0]
            pending = leader.pending()
            body = leader.decisions(limit=50)
            creates = sb.stats()["requests"].get("CreateRun", 0)
        finally:
            supervisor.stop()
            for p in procs:
                if p.alive():
                    p.terminate(timeout=15)
    row = budget_row(result, budget)
    print(
        f"\nbudget on a shared state ({profile}): {replicas} replicas, {failures} failures, budget "
        f"{budget}, {kills} leader kills, db_errors {db_errors}: {row}; CreateRun calls {creates}; "
        f"pending on the leader {len(pending)}; exits {sorted(supervisor.exits)}"
    )
    assert row["issued"] == budget and row["duplicates"] == 0 and row["missed"] == 0, row
    assert result.duplicates == 0 and not result.wrong, result.problems()
    assert len(pending) == deferred
    defers = [x for x in body["decisions"] if x["decision"] == "defer"]
    assert defers and all("budget 'global'" in x["reason"] for x in defers), body["decisions"][:3]
    assert set(supervisor.exits) <= {-9}, supervisor.exits
    assert supervisor.exits.count(-9) == kills
    if failures >= 300:
        scenario = f"budget {budget} per 10m, {replicas} replicas on PostgreSQL, leader SIGKILL x{kills}"
        record(scenario if profile == "union" else f"{scenario} ({profile})", row)
