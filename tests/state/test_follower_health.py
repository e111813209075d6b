"""A follower is alive: while another replica holds the lead, the waiting replica's /healthz
answers ok (its event loop beats) and /readyz says it follows; when the lead frees, it leads."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rerund.adapters.sqlstate.leadership import LEADER_LOCK
from rerund.runtime import daemon as daemon_module
from rerund.runtime.daemon import Daemon

from .support import follower, get


def test_a_follower_waiting_for_the_lead_stays_alive_and_says_it_follows(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_module, "LOOP_STALL_S", 0.5)  # a follower that never beats fails fast
    monkeypatch.setattr(daemon_module, "_BEAT_S", 0.05)
    led: list[Daemon] = []
    with follower(tmp_path, pg_url, on_ready=led.append) as (port, other):  # another replica leads
        time.sleep(1.5)  # three liveness limits
        health = get(port, "/healthz")
        ready = get(port, "/readyz")
        assert led == []  # it did not take the lead
        other.execute(f"SELECT pg_advisory_unlock({LEADER_LOCK})")
        deadline = time.monotonic() + 30
        while not led and time.monotonic() < deadline:
            time.sleep(0.1)
    assert health == (200, "ok\n")
    assert ready is not None and ready[0] == 200 and "follower" in ready[1]
    assert len(led) == 1  # the lead freed: it leads
