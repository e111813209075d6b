"""A follower is alive: while another replica holds the lead, the waiting replica's /healthz
answers ok (its event loop beats) and /readyz says it follows; when the lead frees, it leads."""

from __future__ import annotations

import asyncio
import http.client
import socket
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from rerund.adapters.sqlstate.leadership import LEADER_LOCK
from rerund.app import App
from rerund.runtime import daemon as daemon_module
from rerund.runtime.daemon import Daemon

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from fake_control_plane import T0, Clock, FakeControlPlane, daemon_settings

POLICIES = (
    "apiVersion: rerund/v1\npolicies:\n  - name: p\n"
    "    match: {error: {kinds: [SYSTEM]}}\n    retry: {max_attempts: 1}\n"
)


def _get(port: int, path: str) -> tuple[int, str] | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    except OSError:
        return None
    finally:
        conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_follower_waiting_for_the_lead_stays_alive_and_says_it_follows(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_module, "LOOP_STALL_S", 0.5)  # a follower that never beats fails fast
    monkeypatch.setattr(daemon_module, "_BEAT_S", 0.05)
    port = _free_port()
    settings = daemon_settings(tmp_path, POLICIES, http=f"127.0.0.1:{port}", state=pg_url)
    led: list[Daemon] = []
    app = App(settings, control_plane=FakeControlPlane(Clock(T0)), clock=Clock(T0), install_signals=False,
              on_ready=led.append)  # fmt: skip
    with psycopg.connect(pg_url, autocommit=True) as other:  # another replica leads
        assert other.execute(f"SELECT pg_try_advisory_lock({LEADER_LOCK})").fetchone() == (True,)
        thread = threading.Thread(target=lambda: asyncio.run(app.run()), daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while _get(port, "/readyz") is None and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.5)  # three liveness limits
            health = _get(port, "/healthz")
            ready = _get(port, "/readyz")
            assert led == []  # it did not take the lead
            other.execute(f"SELECT pg_advisory_unlock({LEADER_LOCK})")
            deadline = time.monotonic() + 30
            while not led and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            app.request_stop()
            thread.join(30)
    assert health == (200, "ok\n")
    assert ready is not None and ready[0] == 200 and "follower" in ready[1]
    assert len(led) == 1  # the lead freed: it leads
