"""Resources bounded by their input, through the reconcile shell (issue 11.5, 11.7)."""

from __future__ import annotations

import json
from dataclasses import replace

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
        rerun_of=world.cp.add_lineage("abc123", 2, at=T0),
    )
    world.clock.advance(60)

    world.sync()

    [payload] = world.notifier.sent
    message = payload["error"]["message"]
    assert message.startswith("Connection reset by peer zzz")
    assert "… [truncated: 1000025 bytes in all, sha256 " in message and message.endswith("zzz")
    assert len(message) < MAX_MESSAGE_CHARS + 100
    assert len(json.dumps(list(world.rec.recent))) < 10_000


def test_a_forged_attempt_of_two_to_the_63_is_ignored_and_the_run_is_its_own_lineage(tmp_path) -> None:
    """Issue 22.2: labels nobody vouches for (no relation, not in the ledger) are ignored, however
    large the number: the run is decided as an original run, the forgery counted once."""
    world = World(tmp_path)
    world.cp.add_failed(
        "forged", labels={"rerund-root": "abc123", "rerund-attempt": str(2**63), "rerund-policy": "x"}, at=T0
    )
    world.clock.advance(60)

    report = world.sync()
    world.sync()

    assert report.ok
    assert [r.ref.name for r in world.cp.reruns()] == ["forged-retry-1"]
    [entry] = world.rec.recent
    assert entry["decision"] == "rerun" and entry["root"] == "forged"
    assert world.metric("rerund_forged_lineage_labels_total") == 1


def test_a_rerun_that_never_ends_does_not_pin_the_reruns_listing_and_is_followed_on_its_own(tmp_path) -> None:

    from rerund.core.runs import RunRef

    from .fake_control_plane import FakeRun

    world = World(tmp_path)
    world.cp.add_failed("stuck", at=T0)
    world.clock.advance(60)
    world.sync()
    [stuck] = world.cp.reruns()
    assert stuck.ref.name == "stuck-retry-1" and stuck.phase == "QUEUED"  # and it never ends

    listed = []
    for hour in range(72):  # three days of other lineages' reruns, ten an hour, all finished
        for i in range(10):
            ref = RunRef("ml", "production", f"h{hour}x{i}-retry-1")
            at = world.clock()
            world.cp.runs[ref] = FakeRun(
                ref,
                "SUCCEEDED",
                labels={"rerund-root": f"h{hour}x{i}", "rerund-attempt": "1", "rerund-policy": "transient"},
                created_at=at,
                ended_at=at,
                relation=RunRef("ml", "production", f"h{hour}x{i}"),
            )
        world.clock.advance(3600)
        listed.append(world.sync().reruns_listed)

    # The listing covers the resync window plus at most an hour, not three days: bounded.
    assert max(listed[-48:]) <= 40, listed[-48:]

    world.cp.runs[stuck.ref] = replace(world.cp.runs[stuck.ref], phase="SUCCEEDED", ended_at=world.clock())
    before = world.cp.calls["get_run"]
    world.clock.advance(600)  # followed on its own at most every 5 minutes
    world.sync()
    assert world.cp.calls["get_run"] == before + 1
    assert world.metric("rerund_rerun_outcomes_total", policy="transient", outcome="succeeded") == 1
    assert world.metric("rerund_lineages_recovered_total", policy="transient") == 1
