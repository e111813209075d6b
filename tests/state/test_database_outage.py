"""A PostgreSQL state that goes away while the daemon runs: the ledger's writes fail with
``LedgerError`` (the recorder logs them and carries on), the daemon keeps deciding and issuing from
the control plane, and once the server is back the ledger's writes resume on new connections."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon_support import DaemonProcess, daemons, http_get, wait_until
from postgres_support import PostgresServer
from rerund.adapters.sqlstate import PostgresLedger
from rerund.adapters.sqlstate.ledger import CONNECT_TIMEOUT_S
from rerund.errors import LedgerError
from rerund.sandbox.testing import start_sandbox
from storms import STORM_WORKLOAD, storm_policies, write_policies

pytestmark = [pytest.mark.timeout(240)]
T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


def _decided(pg_url: str) -> set[str]:
    ledger = PostgresLedger(pg_url, create=False)
    try:
        return {r["run"] for r in ledger.history(limit=10_000)}
    finally:
        ledger.close()


@pytest.mark.e2e
def test_a_leader_whose_database_goes_away_steps_down_and_a_restart_catches_up_when_it_is_back(
    tmp_path: Path, postgres: PostgresServer, pg_url: str
) -> None:
    """With the leadership (issue 25) a daemon on a PostgreSQL state does not act without its
    database: it cannot confirm its term, so it stops acting and exits 3 for its supervisor
    (docs/replicas.md). Restarted once the database is back it leads again and catches up: the
    failures of the outage are decided and rerun once, nothing is lost, no traceback."""
    policy_file = write_policies(tmp_path / "policies.yaml", storm_policies())
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0) as sb:
        d = DaemonProcess(tmp_path / "d", sb, policy_file, extra={"state": pg_url})
        with daemons(d):
            d.wait_ready()
            before = sb.launch(task="storm.flaky", count=3)
            wait_until(
                "the first failures in the database", lambda: set(before) <= _decided(pg_url), 60, d.logs
            )

            postgres.stop()
            assert d.proc is not None and d.proc.wait(timeout=60) == 3
            assert "lost the lead" in d.logs(tail=10**6)
            during = sb.launch(task="storm.flaky", count=3)

            postgres.start()
            d.start()  # what its supervisor does
            after = sb.launch(task="storm.flaky", count=3)
            wait_until(
                "the failures of the outage and after it in the database",
                lambda: set(during) | set(after) <= _decided(pg_url),
                60,
                d.logs,
            )
            wait_until(
                "one rerun of each",
                lambda: all(
                    sum(r["name"] == f"{root}-retry-1" for r in sb.runs()) == 1 for root in [*during, *after]
                ),
                60,
                d.logs,
            )
            assert d.alive()
    assert "Traceback" not in d.logs(tail=10**6)


def test_a_database_that_does_not_answer_is_left_alone_for_a_backoff(
    postgres: PostgresServer, pg_url: str
) -> None:
    ledger = PostgresLedger(pg_url)

    def failure(run: str) -> bool:
        return ledger.record_failure(project="ml", domain="prod", run=run, failed_at=T0, now=T0)

    assert failure("a")
    postgres.stop()
    # A host that takes the connection and never answers (a partition, a hung server): the
    # kernel completes the handshake on the listening socket, PostgreSQL's startup never comes.
    with socket.socket() as silent:
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        silent.bind(("127.0.0.1", postgres.port))
        silent.listen(16)
        with pytest.raises(
            LedgerError, match=r"write failed: terminating connection .*; the record is lost$"
        ):
            failure("b")  # the open connection was closed by the server's stop
        with pytest.raises(
            LedgerError, match=r"write failed: .*timeout.*; the record is lost; rerund connects again in 1s"
        ):
            failure("b")  # waits the connect timeout once
        started = time.monotonic()
        with pytest.raises(
            LedgerError,
            match=r"ledger postgresql://rerund@127\.0\.0\.1:\d+/t_\w+ is unreachable \(.*timeout.*\); "
            r"rerund connects again in 1s; the record is lost",
        ):
            failure("c")  # no attempt during the backoff
        waited = time.monotonic() - started
    postgres.start()
    time.sleep(1.1)
    assert failure("d")  # the backoff is over and the server answers again
    assert ledger.counts()["failures"] == 2
    ledger.close()
    assert waited < CONNECT_TIMEOUT_S


def test_a_server_that_refuses_at_once_is_tried_again_at_once(postgres: PostgresServer, pg_url: str) -> None:
    ledger = PostgresLedger(pg_url)
    assert ledger.record_failure(project="ml", domain="prod", run="a", failed_at=T0, now=T0)
    postgres.stop()
    with pytest.raises(LedgerError, match=r"write failed: terminating connection .*; the record is lost$"):
        ledger.record_failure(project="ml", domain="prod", run="a", failed_at=T0, now=T0)
    try:
        for run in ("b", "c"):
            with pytest.raises(
                LedgerError, match=r"write failed: .*Connection refused.*; the record is lost$"
            ):
                ledger.record_failure(project="ml", domain="prod", run=run, failed_at=T0, now=T0)
    finally:
        postgres.start()
    assert ledger.record_failure(project="ml", domain="prod", run="d", failed_at=T0, now=T0)
    ledger.close()


@pytest.mark.e2e
@pytest.mark.parametrize("via", ["url", "state_password_file"])
def test_the_database_password_never_appears_in_logs_metrics_status_or_decisions(
    via: str, tmp_path: Path, postgres: PostgresServer, pg_url: str, pg_password_file: Path
) -> None:
    extra: dict[str, object] = {"state": pg_url, "log_level": "DEBUG"}
    if via == "state_password_file":
        extra = {**extra, "state": pg_url.replace(f":{postgres.password}@", "@")}
        extra["state_password_file"] = str(pg_password_file)
    policy_file = write_policies(tmp_path / "policies.yaml", storm_policies())
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0) as sb:
        d = DaemonProcess(tmp_path / "d", sb, policy_file, extra=extra)
        with daemons(d):
            d.wait_ready()  # ready as a follower too: wait until it leads and writes
            first = sb.launch(task="storm.flaky", count=2)
            wait_until(
                "the first failures in the database", lambda: set(first) <= _decided(pg_url), 60, d.logs
            )
            # Every HTTP surface while it leads on the database: the state URL shown without its
            # password.
            exposed = {
                "/metrics": d.metrics_text(),
                "/decisions": str(d.decisions()),
                "/readyz": d.readyz()[1],
                "/status": http_get(f"{d.url}/status")[1],
                "/": http_get(f"{d.url}/")[1],
            }
            assert d.decisions()["settings"]["state"] == pg_url.replace(f":{postgres.password}@", "@")
            # Then the database goes away: the ledger errors name the database in the log, and the
            # leader steps down (exit 3, test_a_leader_whose_database_goes_away_steps_down_...);
            # when it exits is a race with its next write, so only the log is read after it.
            postgres.stop()
            try:
                sb.launch(task="storm.flaky", count=2)
                assert d.proc is not None and d.proc.wait(timeout=60) == 3
            finally:
                postgres.start()
        exposed["log"] = d.log.read_text(errors="replace")
        assert "postgresql://" in exposed["log"]
    for where, text in exposed.items():
        assert postgres.password not in text, f"the database password leaked into {where}"
