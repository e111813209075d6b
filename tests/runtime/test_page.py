"""The operator page rendered from values: everything escaped, sections and empty states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

from rerund.core.rules import Budget
from rerund.core.status import compute_status
from rerund.runtime.page import PageView, render_page

NOW = datetime(2026, 11, 30, 12, 0, 5, 123456, tzinfo=UTC)
HOSTILE = "<script>alert('x')</script>&\""


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def view(**extra: object) -> PageView:
    decisions = [
        {
            "at": (NOW - timedelta(minutes=1)).isoformat(),
            "project": "p",
            "domain": "d",
            "run": "r",
            "root": "r",
            "decision": "rerun",
            "policy": "pol",
            "attempt": 1,
            "reason": f"error {HOSTILE}",
            "not_before": (NOW + timedelta(hours=1)).isoformat(),
        }
    ]
    status = compute_status(
        now=NOW,
        decisions=decisions,
        budgets={"global": Budget(5, timedelta(hours=1))},
        reproductions=[
            {
                "check": "c",
                "result": "mismatch",
                "reason": "differs",
                "scheduled_for": "2026-11-30T11:00:00Z",
                "diff": [{"path": "outputs.x", "message": HOSTILE}],
            }
        ],
    )
    base: dict = {
        "status": status,
        "ready": True,
        "ready_reason": "a resync succeeded within 3 poll intervals",
        "last_sync": NOW,
        "settings": {"endpoint": "http://127.0.0.1:8090", "org": "sandbox", "dry_run": False},
        "policies": ["pol"],
        "decisions": decisions,
        "scopes": ["p/d"],
    }
    base.update(extra)
    return PageView(**base)


def test_everything_shown_is_escaped_so_no_tag_from_a_message_reaches_the_page() -> None:
    html = render_page(view(search=HOSTILE))
    parser = _Text()
    parser.feed(html)
    assert "script" not in parser.tags
    text = "".join(parser.text)
    assert f"error {HOSTILE}" in text  # shown as text, exactly
    assert f"outputs.x: {HOSTILE}" in text


def test_times_are_utc_to_the_second_with_a_z() -> None:
    html = render_page(view())
    assert "page generated at 2026-11-30T12:00:05Z" in html
    assert "2026-11-30T13:00:05Z" in html  # the due time of the rerun
    assert "+00:00" not in html


def test_empty_sections_say_so_and_the_page_refreshes_itself() -> None:
    empty = compute_status(now=NOW)
    html = render_page(view(status=empty, decisions=[]))
    assert '<meta http-equiv="refresh" content="10">' in html
    for sentence in (
        "No lineage is in flight: nothing is owed.",
        "No budget is configured.",
        "No lineage was exhausted.",
        "No lineage has recovered yet.",
        "No decision recorded yet.",
        "No reproduction result recorded yet.",
    ):
        assert sentence in html


def test_an_explanation_stops_the_refresh_and_an_error_is_shown_escaped() -> None:
    html = render_page(view(explain_run="r", explain_scope="p/d", explain_error=f"cannot {HOSTILE}"))
    assert "http-equiv" not in html
    assert "not refreshing while explaining" in html
    assert "cannot &lt;script&gt;" in html


def test_a_dry_run_and_a_daemon_that_is_not_ready_are_flagged() -> None:
    html = render_page(
        view(ready=False, ready_reason="no resync pass has succeeded yet", settings={"dry_run": True})
    )
    assert '<strong class="bad">not ready</strong>: no resync pass has succeeded yet' in html
    assert "DRY RUN: nothing is created" in html


def test_control_characters_from_a_query_or_a_message_are_shown_escaped_not_sent_raw() -> None:
    """NUL and other C0/C1 controls are not allowed in HTML text (a NUL is a parse error); a
    ``?explain=`` or an error message holding them is shown as ``\\x00``."""
    hostile = "ABC\x00\x01\x1b[31m\x7f\x85"
    html = render_page(view(explain_run=hostile, explain_scope="p/d", explain_error=f"no run {hostile}"))
    assert not any((ord(c) < 32 and c not in "\t\n\r") or 0x7F <= ord(c) <= 0x9F for c in html)
    assert "ABC\\x00\\x01\\x1b[31m\\x7f\\x85" in html
