"""``rerund status`` on a PostgreSQL state names the replica that leads (host:pid, term)."""

from __future__ import annotations

from pathlib import Path

import pytest

from postgres_support import PostgresServer
from rerund.adapters.sqlstate.leadership import PostgresLeadership, postgres_engine
from rerund.cli import main
from rerund.sandbox.testing import SandboxHandle

from .support import migrated

pytestmark = pytest.mark.e2e


def _flags(sb: SandboxHandle, state: str) -> list[str]:
    return [
        "--endpoint", sb.endpoint, "--org", sb.org, "--scope", f"{sb.project}/{sb.domain}",
        "--insecure", "--state", state,
    ]  # fmt: skip


@pytest.mark.parametrize("via", ["url", "state_password_file"])
def test_rerund_status_names_the_leader_of_a_shared_state(
    via: str,
    sandbox: SandboxHandle,
    postgres: PostgresServer,
    pg_url: str,
    pg_password_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # no policies here: budgets are not shown, the rest is
    migrated(pg_url)  # a daemon started on it
    flags = _flags(sandbox, pg_url)
    if via == "state_password_file":  # the password only in the file
        url = pg_url.replace(f":{postgres.password}@", "@")
        flags = [*_flags(sandbox, url), "--state-password-file", str(pg_password_file)]
    assert main(["status", *flags]) == 0, capsys.readouterr().err
    assert "note: leader: no replica has led on this state yet" in capsys.readouterr().out

    engine = postgres_engine(pg_url)
    lead = PostgresLeadership(engine, identity="rerund-7f9c-0:12")
    try:
        assert lead.acquire()
        assert main(["status", *flags]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert "note: leader: rerund-7f9c-0:12 (term 1); the other replicas follow" in out
        assert pg_url.split("@")[0].split(":")[-1] not in out  # the password is not shown
    finally:
        lead.close()
