"""``rerund incidents`` and the incidents section of ``rerund status``: read from a real
ledger file, every cell escaped for a terminal, JSON as documented."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from rerund.adapters.ledger import Ledger
from rerund.cli import main
from rerund.cli.status import render_status
from rerund.core.incidents import IncidentRecord
from rerund.core.status import compute_status

NOW = datetime.now(UTC).replace(microsecond=0)
OPEN = IncidentRecord(
    fingerprint="3fa2c0ffee12",
    opened_at=NOW - timedelta(minutes=5),
    failures=14,
    first_seen=NOW - timedelta(minutes=6),
    last_seen=NOW - timedelta(minutes=1),
    held=9,
    canaries=2,
    canary="ml/prod/r1-retry-3",
    tasks=("etl.load",),
    projects=("ml/prod",),
    lineages=12,
    example="503 SlowDown \x1b[2J\x1b]0;owned\x07 from https://s3.example/...",
)
CLOSED = IncidentRecord(
    fingerprint="77aa00bb11cc",
    opened_at=NOW - timedelta(days=2),
    state="closed",
    closed_at=NOW - timedelta(days=2) + timedelta(minutes=3),
    failures=5,
    canaries=1,
    example="connection refused",
)
OLD = IncidentRecord(
    fingerprint="0123456789ab",
    opened_at=NOW - timedelta(days=20),
    state="closed",
    closed_at=NOW - timedelta(days=20),
)


@pytest.fixture
def state(tmp_path):
    path = tmp_path / "rerund.db"
    ledger = Ledger(path)
    for record in (OLD, CLOSED, OPEN):
        ledger.record_incident(record, now=record.closed_at or record.opened_at)
    ledger.close()
    return path


def test_incidents_lists_open_then_recent_closed_with_an_escaped_example(state, capsys) -> None:
    assert main(["incidents", "--state", str(state)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == [
        *("FINGERPRINT", "STATE", "OPENED", "(UTC)", "CLOSED", "(UTC)"),
        *("FAILURES", "LINEAGES", "HELD", "CANARIES", "TASKS"),
    ]
    assert lines[1].split()[:2] == ["3fa2c0ffee12", "open"]
    assert "2 (out: r1-retry-3)" in lines[1]
    assert lines[2].split()[:2] == ["77aa00bb11cc", "closed"]
    assert "0123456789ab" not in out  # closed 20 days ago: outside --since 7d
    assert "\x1b" not in out and "\x07" not in out
    assert "example: 503 SlowDown \\x1b[2J\\x1b]0;owned\\x07 from https://s3.example/..." in out


def test_incidents_as_json_and_over_a_longer_span(state, capsys) -> None:
    assert main(["incidents", "--state", str(state), "--since", "30d", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)["incidents"]
    assert [i["fingerprint"] for i in shown] == ["3fa2c0ffee12", "77aa00bb11cc", "0123456789ab"]
    assert shown[0] == OPEN.to_json()


def test_incidents_without_a_ledger_says_where_it_looked(tmp_path, capsys) -> None:
    assert main(["incidents", "--state", str(tmp_path / "none.db")]) != 0
    err = capsys.readouterr().err
    assert "no ledger at" in err and "none.db': pass --state PATH or --config FILE" in err


def test_status_shows_the_incidents(capsys) -> None:
    status = compute_status(now=NOW, incidents=[CLOSED, OPEN])
    text = render_status(status, "control plane x")
    assert "Incidents (2):" in text
    assert text.index("3fa2c0ffee12  open") < text.index("77aa00bb11cc  closed")
    assert "\x1b" not in text
    assert status.to_json()["incidents"][0]["fingerprint"] == "3fa2c0ffee12"


def test_explain_shows_the_evidence_of_a_failure_document(tmp_path, capsys) -> None:
    (tmp_path / "p.yaml").write_text(
        "apiVersion: rerund/v1\npolicies:\n  - name: etl\n    retry:\n"
        "      give_up_below: {recovery_rate: 0.1, min_reruns: 10, window: 7d}\n"
    )
    (tmp_path / "f.yaml").write_text(
        "run: r1\ntask: etl.load\nerror: {kind: USER, code: KeyError, message: \"KeyError: 'id'\"}\n"
        "failed_at: 2026-12-05T08:00:00Z\nevidence: {7d: [14, 0]}\n"
    )
    argv = ["explain", "--policies", str(tmp_path / "p.yaml"), "--failure", str(tmp_path / "f.yaml")]
    assert main([*argv, "--now", "2026-12-05T08:00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "give_up" in out
    assert "recovered 0 of 14 in 7d, below recovery_rate=0.1, min_reruns=10 (give_up_below)" in out


def test_status_lists_flaky_and_hopeless_fingerprints_with_their_rates() -> None:
    recoveries = {
        "aaaaaaaaaaaa": (10, 9),
        "bbbbbbbbbbbb": (14, 0),
        "cccccccccccc": (2, 0),
        "dddddddddddd": (8, 2),
    }
    status = compute_status(now=NOW, recoveries=recoveries)
    assert [r.fingerprint for r in status.flaky] == ["aaaaaaaaaaaa"]
    assert [r.fingerprint for r in status.hopeless] == ["bbbbbbbbbbbb"]  # 2 reruns are too few to judge
    text = render_status(status, "x")
    assert "Flaky fingerprints (reruns recover) (1):" in text
    assert "aaaaaaaaaaaa  10      9 (90%)" in text
    assert "bbbbbbbbbbbb  14      0 (0%)" in text
    assert status.to_json()["hopeless"] == [
        {"fingerprint": "bbbbbbbbbbbb", "reruns": 14, "recovered": 0, "rate": 0.0}
    ]
