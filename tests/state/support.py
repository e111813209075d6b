"""Helpers for the replica tests: a real webhook receiver on 127.0.0.1 (it keeps every POST, body
and ``Idempotency-Key``, and answers 500 to the first ``fail_first``), and ending the leader's
database session as an operator (or a network) would; an in-process replica that follows."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg

from rerund.adapters.sqlstate.leadership import LEADER_LOCK
from rerund.app import App


class Receiver:
    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self.fail_first = fail_first
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    if receiver.fail_first > 0:
                        receiver.fail_first -= 1
                        self.send_response(500)
                        self.end_headers()
                        return
                    receiver.received.append(json.loads(body))
                    receiver.keys.append(self.headers.get("Idempotency-Key") or "")
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def per_key(self) -> Counter[str]:
        with self._lock:
            return Counter(self.keys)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def terminate_leader(pg_url: str, timeout: float = 30.0) -> int:
    """``pg_terminate_backend`` on the session holding the leader lock; returns once PostgreSQL
    released the lock (the backend has exited). How many sessions it ended."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        ended = len(
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            ).fetchall()
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            held = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            ).fetchone()
            if held is not None and held[0] == 0:
                break
            time.sleep(0.02)
    return ended


def migrated(pg_url: str, password: str | None = None) -> str:
    """``pg_url``, its database brought to the schema's head first (the leadership and outbox
    tables are the ledger's schema, migrated when a daemon opens its state)."""
    from rerund.adapters.state import open_state

    open_state(pg_url, password=password).close()
    return pg_url


# -- an in-process replica that follows ------------------------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from fake_control_plane import T0, Clock, FakeControlPlane, daemon_settings  # noqa: E402

FOLLOWER_POLICIES = (
    "apiVersion: rerund/v1\npolicies:\n  - name: p\n"
    "    match: {error: {kinds: [SYSTEM]}}\n    retry: {max_attempts: 1}\n"
)


def get(port: int, path: str) -> tuple[int, str] | None:
    """``GET path`` on 127.0.0.1:``port``: (status, body), or None when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    except OSError:
        return None
    finally:
        conn.close()


@contextlib.contextmanager
def follower(
    tmp_path: Path, pg_url: str, *, on_ready: Callable[[Any], None] | None = None
) -> Iterator[tuple[int, psycopg.Connection[Any]]]:
    """An in-process replica on ``pg_url`` that follows: another connection (yielded, so a test
    can let the lead go with ``pg_advisory_unlock``) holds the lead. Yields (its HTTP port, that
    connection) once its /readyz answers; stops it on exit."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    settings = daemon_settings(tmp_path, FOLLOWER_POLICIES, http=f"127.0.0.1:{port}", state=pg_url)
    app = App(settings, control_plane=FakeControlPlane(Clock(T0)), clock=Clock(T0), install_signals=False,
              on_ready=on_ready)  # fmt: skip
    with psycopg.connect(pg_url, autocommit=True) as other:  # another replica leads
        assert other.execute(f"SELECT pg_try_advisory_lock({LEADER_LOCK})").fetchone() == (True,)
        thread = threading.Thread(target=lambda: asyncio.run(app.run()), daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while get(port, "/readyz") is None and time.monotonic() < deadline:
                time.sleep(0.1)
            yield port, other
        finally:
            app.request_stop()
            thread.join(30)
    assert not thread.is_alive(), "the replica did not stop within 30 s"
