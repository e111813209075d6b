"""A hot reload over many cached failures does not stall ``/healthz`` (issue 24).

The daemon runs in-process on its own event loop against the in-memory control plane; a thread
polls ``/healthz`` as a liveness probe would, counting the answers. A logging handler (the
test's) notes, at each decision re-made under the reloaded policies, how many health answers
had arrived. Health answers arriving between the first and the last of those decisions show
the loop served ``/healthz`` while the reload's decisions were being made. Order, not timing:
nothing here compares a duration with a threshold.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from rerund.app import App
from rerund.core.model import ErrorInfo
from rerund.runtime.daemon import Daemon

from .fake_control_plane import T0, Clock, FakeControlPlane, daemon_settings
from .test_daemon_http_history import _until
from .test_reconcile import POLICIES

FAILURES = 5_000
USER_ERROR = ErrorInfo(kind="USER", code="ValueError", message="bad input")


class HealthPoller:
    """Polls ``/healthz`` from its own thread until stopped; ``answers`` counts the 200s."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.answers = 0
        self._address = address
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            conn = http.client.HTTPConnection(*self._address, timeout=30)
            try:
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    self.answers += 1
            except OSError:
                pass
            finally:
                conn.close()

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


class AnswersAtDecisions(logging.Handler):
    """At each decision line of ``policy``, the number of health answers received so far.

    ``pause`` (seconds) makes each decision line cost that much more, without the CPU (as a
    slow disk under the ledger would): the poller thread gets the interpreter in the meantime,
    so on a loaded machine the count depends on the loop, not on which thread gets the CPU."""

    def __init__(self, policy: str, answers: Callable[[], int], pause: float = 0.0) -> None:
        super().__init__(logging.INFO)
        self.policy = policy
        self.answers = answers
        self.pause = pause
        self.seen: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "policy", None) == self.policy:
            self.seen.append(self.answers())
            time.sleep(self.pause)


def test_health_is_answered_while_a_reload_re_decides_thousands_of_cached_failures(tmp_path: Path) -> None:
    clock = Clock(T0 + timedelta(minutes=5))  # fixed: every failure stays in the resync window
    cp = FakeControlPlane(clock)
    for i in range(FAILURES):
        cp.add_failed(f"bad{i:05d}", error=USER_ERROR, at=T0 + timedelta(minutes=1))
    settings = daemon_settings(tmp_path, POLICIES, http="127.0.0.1:0", poll_interval="1s")
    started: list[Daemon] = []
    ready = threading.Event()

    def on_ready(d: Daemon) -> None:
        started.append(d)
        ready.set()

    app = App(settings, control_plane=cp, clock=clock, install_signals=False, on_ready=on_ready)
    thread = threading.Thread(target=lambda: asyncio.run(app.run()), daemon=True)
    decisions = logging.getLogger("rerund.decisions")
    level = decisions.level
    decisions.setLevel(logging.INFO)
    thread.start()
    try:
        assert ready.wait(20), "the daemon did not start"
        server = started[0].http
        assert server is not None
        with HealthPoller(server.address) as poller:
            first = AnswersAtDecisions("bad-input", lambda: poller.answers)
            decisions.addHandler(first)
            _until(lambda: len(first.seen) == FAILURES, "every failure ignored by 'bad-input'", 120)
            decisions.removeHandler(first)

            again = AnswersAtDecisions("bad-input-renamed", lambda: poller.answers, pause=0.0002)
            decisions.addHandler(again)
            (tmp_path / "policies.yaml").write_text(
                POLICIES.replace("name: bad-input", "name: bad-input-renamed")
            )
            app.request_reload()
            _until(lambda: len(again.seen) == FAILURES, "every failure re-decided after the reload", 120)
            decisions.removeHandler(again)
    finally:
        decisions.setLevel(level)
        app.request_stop()
        thread.join(30)
    assert not thread.is_alive(), "the daemon did not stop within 30 s"
    # One answer may already be on its way when a busy stretch begins; more than one in between
    # means the loop answered /healthz while it was re-deciding.
    assert again.seen[-1] - again.seen[0] >= 2, (again.seen[0], again.seen[-1])
