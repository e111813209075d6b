"""End to end: two ``rerund run`` daemons on one PostgreSQL state against the sandbox control plane.
One leads and acts, the other follows (ready, saying who leads) and takes over when the leader is
SIGKILLed or its database session is terminated; reruns are exactly those owed, and every exhausted
lineage reaches the webhook once."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon_support import DaemonProcess, daemons, total, wait_until
from daemon_support import settle as settle_all
from postgres_support import PostgresServer
from rerund.cli import main
from rerund.policy import load_policies
from rerund.sandbox.testing import start_sandbox
from storms import STORM_WORKLOAD, launch_storm, owed_reruns, storm_policies
from storms import write_policies as write_storm_policies

from .support import Receiver, terminate_leader

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def _leader(procs: tuple[DaemonProcess, ...]) -> DaemonProcess | None:
    leading = [p for p in procs if p.alive() and total(p.metrics(), "rerund_leader") == 1.0]
    return leading[0] if len(leading) == 1 else None


def _replicas(tmp_path: Path, sb: object, pg_url: str, webhook: str) -> tuple[DaemonProcess, DaemonProcess]:
    policy_file = write_storm_policies(tmp_path / "storm-policies.yaml", storm_policies())
    extra = {"state": pg_url, "notify": {"webhook": webhook, "retries": 1, "timeout": "2s"}}
    return (
        DaemonProcess(tmp_path / "a", sb, policy_file, name="a", extra=extra),
        DaemonProcess(tmp_path / "b", sb, policy_file, name="b", extra=extra),
    )


def _exhausted_keys(sb: object, receiver: Receiver) -> None:
    per_key = receiver.per_key()
    assert per_key and set(per_key.values()) == {1}, per_key
    assert all(k.startswith("exhausted:") for k in per_key), per_key


def _history(pg_url: str, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """``rerund history --state postgresql://… --format json`` from a workstation: the shared ledger."""
    capsys.readouterr()
    assert main(["history", "--state", pg_url, "--format", "json", "--limit", "100000"]) == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows


def test_two_replicas_on_postgres_one_leads_and_the_other_takes_over_when_it_is_killed(
    tmp_path: Path, pg_url: str, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = load_policies([write_storm_policies(tmp_path / "p.yaml", storm_policies())])
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0) as sb:
        a, b = _replicas(tmp_path, sb, pg_url, receiver.url)
        with daemons(a, b):
            wait_until(
                "one replica to lead", lambda: _leader((a, b)) is not None, 60, lambda: a.logs() + b.logs()
            )
            leader = _leader((a, b))
            assert leader is not None
            follower = b if leader is a else a
            leader.wait_ready()
            # The follower reads the leadership row on its next try of the lock (every second):
            # until then it may not have seen the row the leader writes right after its lock.
            wait_until(
                "the follower to see the leader",
                lambda: "leads (term 1)" in follower.readyz()[1],
                30,
                follower.logs,
            )
            status, body = follower.readyz()
            ready = json.loads(body)
            assert status == 200 and ready["role"] == "follower", body
            assert ready["reason"].startswith("follower: ") and "leads (term 1)" in ready["reason"], body
            assert json.loads(leader.readyz()[1])["role"] == "leader"

            launch_storm(sb, 30)
            result = settle_all(sb, [a, b], policies)
            assert result.exact(), result.problems()
            assert total(follower.metrics(), "rerund_reruns_issued_total") == 0.0
            assert total(leader.metrics(), "rerund_reruns_issued_total") == owed_reruns(30)
            wait_until(
                "the exhausted lineages notified", lambda: len(receiver.per_key()) == 3, 60, leader.logs
            )
            # One ledger for all replicas: the leader's decisions, read from anywhere.
            wait_until(
                "the leader's rerun decisions in the shared ledger",
                lambda: sum(r["decision"] == "rerun" for r in _history(pg_url, capsys)) == owed_reruns(30),
                30,
                leader.logs,
            )

            leader.kill()
            wait_until(
                "the follower to take over", lambda: _leader((follower,)) is follower, 60, follower.logs
            )
            assert total(follower.metrics(), "rerund_leader_changes_total") == 1.0
            launch_storm(sb, 30)
            result = settle_all(sb, [follower], policies)
            assert result.exact(), result.problems()
            assert result.failures == 60
            wait_until(
                "the new exhausted lineages notified", lambda: len(receiver.per_key()) == 6, 60, follower.logs
            )
            _exhausted_keys(sb, receiver)
            # Both leaders' decisions are in the one ledger, after the first leader is gone.
            wait_until(
                "both leaders' rerun decisions in the shared ledger",
                lambda: (
                    sum(r["decision"] == "rerun" for r in _history(pg_url, capsys)) == 2 * owed_reruns(30)
                ),
                30,
                follower.logs,
            )


def test_a_leader_whose_database_session_is_terminated_exits_3_and_the_follower_leads(
    tmp_path: Path, pg_url: str, receiver: Receiver
) -> None:
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0) as sb:
        a, b = _replicas(tmp_path, sb, pg_url, receiver.url)
        with daemons(a, b):
            wait_until(
                "one replica to lead", lambda: _leader((a, b)) is not None, 60, lambda: a.logs() + b.logs()
            )
            leader = _leader((a, b))
            assert leader is not None and leader.proc is not None
            follower = b if leader is a else a
            assert terminate_leader(pg_url) == 1
            assert leader.proc.wait(timeout=60) == 3
            assert "lost the lead" in leader.logs()
            wait_until(
                "the follower to take over", lambda: _leader((follower,)) is follower, 60, follower.logs
            )
            assert json.loads(follower.readyz()[1])["term"] == 2


def test_a_stopped_database_makes_the_leader_exit_and_readyz_say_why_until_it_returns(
    tmp_path: Path, pg_url: str, postgres: PostgresServer, receiver: Receiver
) -> None:
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0) as sb:
        a, b = _replicas(tmp_path, sb, pg_url, receiver.url)
        with daemons(a, b):
            wait_until(
                "one replica to lead", lambda: _leader((a, b)) is not None, 60, lambda: a.logs() + b.logs()
            )
            leader = _leader((a, b))
            assert leader is not None and leader.proc is not None
            follower = b if leader is a else a
            postgres.stop()
            try:
                assert leader.proc.wait(timeout=60) == 3
                wait_until(
                    "the follower's /readyz to fail", lambda: follower.readyz()[0] == 503, 60, follower.logs
                )
                reason = json.loads(follower.readyz()[1])["reason"]
                assert re.fullmatch(
                    r"the state database cannot be reached "
                    r"\((trying the leader lock|reading the leader): .+\); "
                    r"rerund keeps trying and acts only while it leads",
                    reason,
                ), reason
                assert follower.healthz()[0] == 200
            finally:
                postgres.start()
            wait_until(
                "the follower to lead once the database is back",
                lambda: _leader((follower,)) is follower,
                60,
                follower.logs,
            )
            assert follower.logs().count("the state database cannot be reached") <= 2  # one ERROR a minute
