"""Helpers for the replica tests: a real webhook receiver on 127.0.0.1 (it keeps every POST, body
and ``Idempotency-Key``, and answers 500 to the first ``fail_first``), and ending the leader's
database session as an operator (or a network) would."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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
