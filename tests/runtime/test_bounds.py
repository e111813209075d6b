"""Resources bounded by their input, through the reconcile shell (issue 11.5, 11.7)."""

from __future__ import annotations

import json

from rerund.core.model import MAX_MESSAGE_CHARS, ErrorInfo

from .fake_control_plane import T0
from .test_reconcile import World

HUGE = ErrorInfo(
    kind="SYSTEM", code="ConnectionResetError", message="Connection reset by peer " + "z" * 1_000_000
)


def test_a_one_megabyte_error_message_is_kept_as_its_head_size_and_hash(tmp_path) -> None:
    world = World(tmp_path)
    world.cp.add_failed(
        "abc123-retry-3",
        labels={"rerund-root": "abc123", "rerund-attempt": "3", "rerund-policy": "transient"},
        at=T0,
        error=HUGE,
    )
    world.clock.advance(60)

    world.sync()

    [payload] = world.notifier.sent
    message = payload["error"]["message"]
    assert message.startswith("Connection reset by peer zzz")
    assert "… [truncated: 1000025 bytes in all, sha256 " in message and message.endswith("zzz")
    assert len(message) < MAX_MESSAGE_CHARS + 100
    assert len(json.dumps(list(world.rec.recent))) < 10_000


def test_a_forged_attempt_of_two_to_the_63_is_recorded_as_ignored(tmp_path) -> None:
    world = World(tmp_path)
    world.cp.add_failed(
        "forged", labels={"rerund-root": "abc123", "rerund-attempt": str(2**63), "rerund-policy": "x"}, at=T0
    )
    world.clock.advance(60)

    report = world.sync()

    assert report.ok
    assert world.cp.reruns() == []
    [entry] = world.rec.recent
    assert entry["decision"] == "ignore"
    assert "has label rerund-attempt='9223372036854775808', which rerund never writes" in entry["reason"]
    [row] = world.ledger.history(run="forged")
    assert row["decision"] == "ignore"
    assert world.metric("rerund_decisions_total", policy="", decision="ignore") == 1
