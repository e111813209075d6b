"""The webhook's Slack text is Slack-escaped; its JSON fields stay raw (issue 22.12).

Slack reads ``<...>`` in a message's ``text`` as markup: ``<!channel>`` pings everyone,
``<https://evil|re-authenticate>`` is a link whose label hides its target. A run label, a task
version or a reproduction's output value can carry them, so the adapter escapes ``&``, ``<``
and ``>`` in ``text`` (what Slack shows) and sends every other field as it is (what programs
read). Tested through the real adapter against an HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rerund.adapters.webhook import WebhookNotifier
from rerund.core.lineage import exhausted_notice, failure_from
from rerund.core.model import ErrorInfo, GiveUp
from rerund.core.runs import FailureFacts, RunRef, RunSummary

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
HOSTILE = "<!channel> <https://evil.example|re-authenticate> R&D"
ESCAPED = "&lt;!channel&gt; &lt;https://evil.example|re-authenticate&gt; R&amp;D"


@pytest.fixture
def received() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    bodies: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", bodies
    server.shutdown()
    server.server_close()


def _exhausted() -> dict[str, Any]:
    facts = FailureFacts(
        summary=RunSummary(RunRef("ml", "production", "r-3"), "FAILED", task="train.fit", ended_at=T0),
        labels={"rerund-root": "orig", "rerund-attempt": "3"},
        action="a0",
        action_task="train.fit",
        error=ErrorInfo(kind="USER", code="E", message=HOSTILE),
        failed_at=T0,
    )
    reason = f"policy 'p' gives up on run 'r-3': no version of task 'train.fit' newer than {HOSTILE!r}"
    decision = GiveUp(policy="p", attempt=4, reason=reason, source_run="r-3", root="orig")
    return exhausted_notice(
        facts, failure_from(facts), decision, lineage=["orig", "r-3"], console_url="http://c/r-3", now=T0
    )


def _mismatch() -> dict[str, Any]:
    # The shape the reproduction runner sends: its reason and diff lines in the text.
    return {
        "text": f"rerund: reproduction check 'nightly' did not reproduce — outputs differ\n• o0: {HOSTILE}",
        "event": "reproduction_mismatch",
        "reason": f"outputs differ: {HOSTILE}",
    }


@pytest.mark.parametrize("build", [_exhausted, _mismatch], ids=["lineage exhausted", "reproduction mismatch"])
def test_the_slack_text_is_escaped_and_the_json_fields_stay_raw(received, build) -> None:
    url, bodies = received
    payload = build()

    asyncio.run(WebhookNotifier(url, retries=0).notify(payload))

    [body] = bodies
    assert ESCAPED in body["text"]
    assert "<" not in body["text"] and ">" not in body["text"]
    assert body["text"] == payload["text"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert HOSTILE in body["reason"]  # programs read the fields as they are
    assert {k: v for k, v in body.items() if k != "text"} == {k: v for k, v in payload.items() if k != "text"}
