"""`rerund status`, `explain RUN` and `history` read a PostgreSQL state from a workstation: the
URL without its password, the password from --state-password-file (a real sandbox, a real server)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from postgres_support import PostgresServer
from rerund.adapters.sqlstate import PostgresLedger
from rerund.cli import main
from rerund.core.records import RerunIssue
from rerund.core.runs import RunRef
from rerund.sandbox.testing import start_sandbox

pytestmark = pytest.mark.e2e

WORKLOAD = {
    "tasks": {
        "net.flaky": {
            "duration": "0.1s",
            "behaviour": ["fail"],
            "error": {
                "kind": "SYSTEM",
                "code": "ConnectionResetError",
                "message": "Connection reset by peer",
            },
        },
    }
}
POLICIES = """\
apiVersion: rerund/v1
policies:
  - name: transient
    match: {error: {kinds: [SYSTEM]}}
    retry: {max_attempts: 3}
"""


def test_status_explain_and_history_read_the_shared_state(
    tmp_path: Path, postgres: PostgresServer, pg_url: str, pg_password_file: Path, capsys
) -> None:
    policies = tmp_path / "policies.yaml"
    policies.write_text(POLICIES)
    url = pg_url.replace(f":{postgres.password}@", "@")
    with start_sandbox(WORKLOAD, time_scale=0.01) as sb:
        [failed] = sb.launch("net.flaky")
        sb.wait_idle()
        ledger = PostgresLedger(pg_url)  # what a replica recorded about it
        ledger.record_decision(
            project=sb.project,
            domain=sb.domain,
            run=failed,
            root=failed,
            decision={
                "decision": "rerun",
                "policy": "transient",
                "reason": "recorded by replica b",
                "attempt": 1,
            },
            now=datetime.now(UTC),
        )
        ledger.record_issue(
            RerunIssue(
                RunRef(sb.project, sb.domain, failed),
                f"{failed}-retry-1",
                failed,
                1,
                "transient",
                "run",
                "created",
            ),
            now=datetime.now(UTC),
        )
        ledger.close()
        flags = [
            "--endpoint", sb.endpoint, "--org", sb.org, "--scope", f"{sb.project}/{sb.domain}", "--insecure",
            "--policies", str(policies), "--state", url, "--state-password-file", str(pg_password_file),
        ]  # fmt: skip

        assert main(["status", *flags, "--format", "json"]) == 0, capsys.readouterr().err
        status = capsys.readouterr().out
        assert failed in status and "ledger cannot be read" not in status
        assert main(["explain", failed, *flags]) == 0, capsys.readouterr().err
        assert "decision:   rerun" in capsys.readouterr().out
    assert main(["history", "--state", url, "--state-password-file", str(pg_password_file)]) == 0
    assert "recorded by replica b" in capsys.readouterr().out
