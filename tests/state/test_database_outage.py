"""A PostgreSQL state that goes away while the daemon runs: the ledger's writes fail with
``LedgerError`` (the recorder logs them and carries on), the daemon keeps deciding and issuing from
the control plane, and once the server is back the ledger's writes resume on new connections."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon_support import DaemonProcess, daemons, wait_until
from postgres_support import PostgresServer
from rerund.adapters.sqlstate import PostgresLedger
from rerund.sandbox.testing import start_sandbox
from storms import STORM_WORKLOAD, storm_policies, write_policies

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def _decided(pg_url: str) -> set[str]:
    ledger = PostgresLedger(pg_url, create=False)
    try:
        return {r["run"] for r in ledger.history(limit=10_000)}
    finally:
        ledger.close()


def test_the_daemon_outlives_its_database_going_away_and_records_again_when_it_is_back(
    tmp_path: Path, postgres: PostgresServer, pg_url: str
) -> None:
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
            during = sb.launch(task="storm.flaky", count=3)
            wait_until(
                "the reruns of the failures while the database is away",
                lambda: all(any(r["name"] == f"{root}-retry-1" for r in sb.runs()) for root in during),
                60,
                d.logs,
            )
            wait_until("a ledger write to fail", lambda: "write failed" in d.logs(tail=10**6), 30, d.logs)
            assert d.alive() and d.healthz()[0] == 200

            postgres.start()
            after = sb.launch(task="storm.flaky", count=3)
            wait_until(
                "the failures after the database is back in it",
                lambda: set(after) <= _decided(pg_url),
                60,
                d.logs,
            )
            assert d.alive()
    assert "Traceback" not in d.logs(tail=10**6)
