"""``rerund status`` on a PostgreSQL state names the replica that leads (host:pid, term)."""

from __future__ import annotations

import pytest

from rerund.adapters.sqlstate.leadership import PostgresLeadership, postgres_engine
from rerund.cli import main
from rerund.sandbox.testing import SandboxHandle

pytestmark = pytest.mark.e2e


def _flags(sb: SandboxHandle, state: str) -> list[str]:
    return [
        "--endpoint", sb.endpoint, "--org", sb.org, "--scope", f"{sb.project}/{sb.domain}",
        "--insecure", "--state", state,
    ]  # fmt: skip


def test_rerund_status_names_the_leader_of_a_shared_state(
    sandbox: SandboxHandle, pg_url: str, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no policies here: budgets are not shown, the rest is
    assert main(["status", *_flags(sandbox, pg_url)]) == 0, capsys.readouterr().err
    assert "note: leader: no replica has led on this state yet" in capsys.readouterr().out

    engine = postgres_engine(pg_url)
    lead = PostgresLeadership(engine, identity="rerund-7f9c-0:12")
    try:
        assert lead.acquire()
        assert main(["status", *_flags(sandbox, pg_url)]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert "note: leader: rerund-7f9c-0:12 (term 1); the other replicas follow" in out
        assert pg_url.split("@")[0].split(":")[-1] not in out  # the password is not shown
    finally:
        lead.close()
