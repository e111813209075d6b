"""The PostgreSQL state from the command line: `rerund history` reads it from a workstation, a URL
that cannot be used exits 2 with what to fix (no traceback, never the password), a schema newer
than the binary is refused, and `rerund state migrate` copies a real SQLite ledger (twice: once)."""

from __future__ import annotations

import re
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from daemon_support import rerund_binary
from postgres_support import PostgresServer
from rerund.adapters.ledger import Ledger
from rerund.adapters.sqlstate import PostgresLedger, schema
from rerund.adapters.sqlstate.copy import NOT_COPIED, copy_sqlite_ledger
from rerund.adapters.sqlstate.outbox import SqlOutbox, sqlite_engine
from rerund.adapters.sqlstate.upgrade import VERSION_TABLE
from rerund.adapters.sqlstate.url import engine_url
from rerund.cli import main
from rerund.core.incidents import IncidentRecord, Members
from rerund.core.records import RerunIssue, RerunOutcome
from rerund.core.runs import RunRef
from rerund.runtime.settings import load_settings

T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


def _decide(ledger: Ledger | PostgresLedger, run: str, *, kind: str = "rerun", at: datetime = T0) -> None:
    ledger.record_decision(
        project="ml",
        domain="prod",
        run=run,
        root=run,
        decision={
            "decision": kind,
            "policy": "p",
            "reason": f"policy 'p' {kind}s run '{run}'",
            "attempt": 1 if kind == "rerun" else None,
        },
        now=at,
    )


def _without_password(postgres: PostgresServer, url: str) -> str:
    return url.replace(f":{postgres.password}@", "@")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_history_reads_the_shared_state_from_a_workstation(
    postgres: PostgresServer, pg_url: str, pg_password_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = PostgresLedger(pg_url)
    _decide(ledger, "a")
    _decide(ledger, "b", kind="ignore")
    ledger.close()
    url = _without_password(postgres, pg_url)

    code = main(["history", "--state", url, "--state-password-file", str(pg_password_file)])
    out = capsys.readouterr().out

    assert code == 0
    assert out.splitlines() == [
        "2026-12-05T08:00:00Z  ignore   ml/prod/b  policy 'p' ignores run 'b'",
        "2026-12-05T08:00:00Z  rerun    ml/prod/a  policy 'p' reruns run 'a'",
    ]
    assert main(["history", "--state", pg_url, "--run", "a", "--format", "json"]) == 0
    assert '"root": "a"' in capsys.readouterr().out


def test_the_password_is_never_shown(postgres: PostgresServer, pg_url: str, capsys) -> None:
    url = pg_url + "?sslmode=disable&application_name=x"
    PostgresLedger(url).close()

    assert main(["history", "--state", url]) == 0
    out = capsys.readouterr().out
    database = pg_url.rsplit("/", 1)[1]
    assert out == f"no decisions recorded yet in postgresql://rerund@127.0.0.1:{postgres.port}/{database}\n"
    public = load_settings(overrides={"state": url}).public()
    assert public["state"] == f"postgresql://rerund@127.0.0.1:{postgres.port}/{database}"
    wrong = url.replace(postgres.password, "Wr0ng-s3cret")
    assert main(["history", "--state", wrong]) == 2
    assert "Wr0ng-s3cret" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "closed port",
            r"cannot open the state database postgresql://rerund@127\.0\.0\.1:\d+/postgres: .*; check the "
            r"host and port in the --state URL and that PostgreSQL is up and reachable from here",
        ),
        (
            "wrong password",
            r"cannot open the state database postgresql://rerund@127\.0\.0\.1:\d+/postgres: .*password "
            r"authentication failed.*; check the user and password: state_password_file "
            r"\(--state-password-file\), the URL's password, or libpq's PGPASSWORD/PGPASSFILE",
        ),
        (
            "missing database",
            r"cannot open the state database postgresql://rerund@127\.0\.0\.1:\d+/nowhere: .*does not "
            r"exist.*; create the database \(CREATE DATABASE \.\.\.\) or fix the database name in the "
            r"--state URL",
        ),
    ],
    ids=lambda v: v if " " in v and len(v) < 20 else "",
)
@pytest.mark.parametrize("command", ["history", "run"])
def test_a_database_url_that_cannot_be_used_exits_2_with_what_to_fix(
    postgres: PostgresServer, tmp_path: Path, command: str, case: str, message: str
) -> None:
    url = {
        "closed port": postgres.url().replace(f":{postgres.port}/", f":{_closed_port()}/"),
        "wrong password": postgres.url().replace(postgres.password, "not-the-password"),
        "missing database": postgres.url("nowhere"),
    }[case]
    argv = [rerund_binary(), command, "--state", url]
    if command == "run":
        policies = Path(__file__).parents[2] / "policies" / "rerund.yaml"
        argv += [
            "--endpoint",
            "http://127.0.0.1:1",
            "--org",
            "o",
            "--scope",
            "a/b",
            "--policies",
            str(policies),
        ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    assert "not-the-password" not in result.stderr


def test_a_schema_newer_than_the_binary_refuses_to_start_with_exit_2(pg_url: str, capsys) -> None:
    PostgresLedger(pg_url).close()
    engine = create_engine(engine_url(pg_url))
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0099'"))
    engine.dispose()

    assert main(["history", "--state", pg_url]) == 2
    assert re.search(
        r"has schema revision '0099', newer than this rerund knows .*run that version \(or newer\) of rerund",
        capsys.readouterr().err,
    )


def _real_file_ledger(path: Path) -> None:
    ledger = Ledger(path)
    ledger.group_commits(lambda flush: None)
    for n in range(2_500):
        at = T0 + timedelta(seconds=n)
        ledger.record_failure(project="ml", domain="prod", run=f"r{n}", failed_at=at, now=at)
        _decide(ledger, f"r{n}", kind="rerun" if n % 2 else "ignore", at=at)
    ledger.record_issue(
        RerunIssue(RunRef("ml", "prod", "r1"), "r1-retry-1", "r1", 1, "p", "run", "created"), now=T0
    )
    ledger.record_outcome(RerunOutcome(RunRef("ml", "prod", "r1-retry-1"), "p", "r1", 1, "SUCCEEDED"), now=T0)
    ledger.set_watermark("ml/prod", T0 + timedelta(hours=1))
    ledger.record_rerun_seen(
        RunRef("ml", "prod", "r2-by-hand"), RunRef("ml", "prod", "r2"), "SUCCEEDED", now=T0
    )
    ledger.record_reproduction(
        {
            "check": "nightly",
            "scheduled_for": "2026-12-05T08:00:00Z",
            "manual": False,
            "result": "matched",
            "reason": "same outputs",
            "diff": [],
        },
        now=T0,
    )
    ledger.close()


def test_state_migrate_copies_a_file_ledger_once_with_progress_and_counts(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rerund.db"
    _real_file_ledger(path)

    assert main(["state", "migrate", "--from", str(path), "--to", pg_url]) == 0
    first = capsys.readouterr()
    assert main(["state", "migrate", "--from", str(path), "--to", pg_url]) == 0
    second = capsys.readouterr().out

    assert "decisions: 2000/2500 rows" in first.err and "decisions: 2500/2500 rows" in first.err
    assert re.search(r"decisions\s+2500 read\s+2500 new\s+2500 in the database", first.out)
    assert re.search(r"decisions\s+2500 read\s+0 new\s+2500 in the database", second)
    assert re.search(r"reproductions\s+1 read\s+0 new\s+1 in the database", second)
    file, db = Ledger(path, create=False), PostgresLedger(pg_url, create=False)
    assert db.counts() == file.counts() == {"failures": 2500, "decisions": 2500, "issues": 1, "outcomes": 1}
    assert db.history(limit=3000) == file.history(limit=3000)
    assert db.lineage_rows(root="r1")["outcomes"][0]["phase"] == "SUCCEEDED"
    assert db.watermark("ml/prod") == file.watermark("ml/prod")
    assert db.latest_reproductions() == file.latest_reproductions()
    assert re.search(r"reruns_seen\s+1 read\s+0 new\s+1 in the database", second)  # evidence by hand
    db.close()
    file.close()


def test_state_migrate_refuses_a_target_that_is_not_a_database_url(tmp_path: Path, capsys) -> None:
    assert main(["state", "migrate", "--from", str(tmp_path / "a.db"), "--to", str(tmp_path / "b.db")]) == 2
    assert "--to is not a postgresql:// URL" in capsys.readouterr().err


# Tables that are not the ledger's facts: the leadership row is the target's own (who leads it).
_NOT_COPIED = {"leadership"}
assert _NOT_COPIED == NOT_COPIED


def test_state_migrate_copies_every_table_of_the_schema(tmp_path: Path, pg_url: str) -> None:
    """Every table of ``schema.metadata`` but the leadership row is copied, with all its rows
    (the table list comes from the schema: a table added to it and forgotten by ``copy.py``
    fails here)."""
    path = tmp_path / "rerund.db"
    _real_file_ledger(path)
    file = Ledger(path)
    file.record_incident(IncidentRecord("fp1", T0, example="OOM"), now=T0)
    file.record_incident(IncidentRecord("fp2", T0, state="closed", closed_at=T0), now=T0)
    file.save_incident_members(
        {"fp1": Members(runs=("r1",), lineages=("r1",)), "fp3": Members(window=(("r9", T0),))}, now=T0
    )
    file.close()
    outbox = SqlOutbox(sqlite_engine(path))
    outbox.put("exhausted:ml/prod/r1", {"event": "lineage_exhausted"}, now=T0)
    outbox.put("exhausted:ml/prod/r2", {"event": "lineage_exhausted"}, now=T0)
    outbox.delivered("exhausted:ml/prod/r2", now=T0)
    outbox.close()
    target = PostgresLedger(pg_url)
    try:
        copied = copy_sqlite_ledger(path, target)
    finally:
        target.close()

    wanted = set(schema.metadata.tables) - _NOT_COPIED
    assert {c.table for c in copied} == wanted
    source, db = create_engine(f"sqlite:///{path}"), create_engine(engine_url(pg_url))
    with source.connect() as s, db.connect() as d:
        for name in sorted(wanted):
            table = schema.metadata.tables[name]
            count = select(func.count()).select_from(table)
            assert (name, d.execute(count).scalar_one()) == (name, s.execute(count).scalar_one())
            assert s.execute(count).scalar_one() > 0, f"the test's file has no {name} row"
        outbox_rows = select(schema.outbox.c.key, schema.outbox.c.delivered_at).order_by("key")
        assert d.execute(outbox_rows).all() == s.execute(outbox_rows).all()
        assert [r.delivered_at is None for r in d.execute(outbox_rows)] == [True, False]
    source.dispose()
    db.dispose()
    incidents = PostgresLedger(pg_url, create=False)
    assert [(r.fingerprint, r.state) for r in incidents.incidents(since=T0)] == [
        ("fp1", "open"),
        ("fp2", "closed"),
    ]
    incidents.close()
