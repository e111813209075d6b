"""The SQLite audit ledger (real files in tmp_path) and the webhook notifier (httpx MockTransport)."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from rerund.adapters.ledger import Ledger
from rerund.adapters.webhook import WebhookNotifier, redact_url
from rerund.core.records import IssueResult, RerunIssue
from rerund.core.runs import RunRef
from rerund.errors import LedgerError, NotificationError

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
DECISION = {"decision": "rerun", "policy": "p", "reason": "because", "attempt": 1}


def _issue(ledger: Ledger, target: str, result: IssueResult = "created", at: datetime = T0) -> bool:
    return ledger.record_issue(
        RerunIssue(RunRef("ml", "prod", "abc"), target, "abc", 1, "p", "run", result), now=at
    )


def test_an_unusable_ledger_path_says_to_check_the_state_path(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "missing").write_text("a file where a directory should be")
    with pytest.raises(LedgerError, match=r"cannot be opened: .*; check the --state path is writable"):
        Ledger(tmp_path / "ro" / "missing" / "rerund.db")


@pytest.mark.parametrize("create", [True, False], ids=["daemon", "reading-command"])
def test_a_directory_as_the_ledger_path_says_to_pass_the_file(tmp_path: Path, create: bool) -> None:
    (tmp_path / "state").mkdir()
    with pytest.raises(
        LedgerError,
        match=re.escape(
            f"ledger {str(tmp_path / 'state')!r} is a directory, not a ledger file; pass the file itself "
            f"as --state, e.g. {tmp_path / 'state' / 'rerund.db'}"
        ),
    ):
        Ledger(tmp_path / "state", create=create)


@pytest.mark.parametrize("create", [True, False], ids=["daemon", "reading-command"])
def test_another_programs_sqlite_database_is_refused_and_left_untouched(tmp_path: Path, create: bool) -> None:
    path = tmp_path / "app.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(
        LedgerError, match=r"is an SQLite database but not a rerund ledger .* nothing was written"
    ):
        Ledger(path, create=create)
    assert path.read_bytes() == before


def test_a_corrupt_ledger_raises_a_ledger_error_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "rerund.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError):
        Ledger(path)


# -- webhook -------------------------------------------------------------------------------------

SLACK = "https://hooks.slack.com/services/T000/B000/very-secret-token"


def _notifier(handler, retries: int = 2) -> WebhookNotifier:
    return WebhookNotifier(
        SLACK,
        retries=retries,
        backoff_initial=0.001,
        backoff_max=0.002,
        transport=httpx.MockTransport(handler),
    )


def test_the_webhook_posts_the_payload_as_json() -> None:
    got: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        got.append(json.loads(request.content))
        return httpx.Response(200)

    asyncio.run(_notifier(handler).notify({"text": "rerund: lineage 'abc' exhausted", "run": "abc"}))

    assert got == [{"text": "rerund: lineage 'abc' exhausted", "run": "abc"}]


def test_the_webhook_retries_server_errors_then_succeeds() -> None:
    answers = iter([503, 429, 200])
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        code = next(answers)
        calls.append(code)
        return httpx.Response(code)

    asyncio.run(_notifier(handler).notify({"text": "x"}))

    assert calls == [503, 429, 200]


def test_the_webhook_gives_up_after_its_retries_without_showing_the_secret_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(
        NotificationError,
        match=r"failed after 3 attempts \(last: ConnectError\); the event stays in the ledger",
    ) as caught:
        asyncio.run(_notifier(handler).notify({"text": "x"}))

    assert "very-secret-token" not in str(caught.value)
    assert "https://hooks.slack.com/..." in str(caught.value)


def test_a_client_error_is_not_retried() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(404)
        return httpx.Response(404)

    with pytest.raises(NotificationError, match=r"refused the notification \(HTTP 404\); not retried"):
        asyncio.run(_notifier(handler).notify({"text": "x"}))

    assert calls == [404]


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.com:abc/very-secret-token", "http://[::1/very-secret-token"],
    ids=["port-not-a-number", "unclosed-ipv6-bracket"],
)
def test_a_webhook_url_httpx_cannot_parse_is_a_notification_error_without_the_secret(url: str) -> None:
    """Settings only check the scheme; an unparsable URL must fail as a NotificationError
    (counted, logged once) and not escape the recorder as httpx.InvalidURL."""
    with pytest.raises(
        NotificationError,
        match=r"is not a valid URL; not retried: fix notify\.webhook \(RERUND_NOTIFY_WEBHOOK, "
        r"--notify-webhook\)",
    ) as caught:
        asyncio.run(WebhookNotifier(url, retries=0).notify({"text": "x"}))

    assert "very-secret-token" not in str(caught.value)


def test_redact_url_keeps_only_scheme_host_and_port() -> None:
    assert redact_url(SLACK) == "https://hooks.slack.com/..."
    assert redact_url("http://127.0.0.1:8080/hook?token=abc") == "http://127.0.0.1:8080/..."
