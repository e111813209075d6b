"""A hot reload over many failures still owed does not stall ``/healthz`` (issue 24).

The daemon runs in-process on its own event loop against the in-memory control plane; a thread
polls ``/healthz`` as a liveness probe would, counting the answers. A logging handler (the
test's) notes, at each decision re-made under the reloaded policies, how many health answers
had arrived. Health answers arriving between the first and the last of those decisions show
the loop served ``/healthz`` while the reload's decisions were being made. Order, not timing:
nothing here compares a duration with a threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rerund.app import App
from rerund.core.model import ErrorInfo
from rerund.runtime import daemon as daemon_module
from rerund.runtime.daemon import Daemon

from .fake_control_plane import T0, Clock, FakeControlPlane, daemon_settings
from .test_daemon_http_history import _until
from .test_reconcile import POLICIES

FAILURES = 5_000
USER_ERROR = ErrorInfo(kind="USER", code="ValueError", message="bad input")
# Every transient failure is owed a rerun an hour after it failed: a reload decides each again.
DEFERRING = POLICIES.replace(
    "backoff: {initial: 10s, factor: 2, max: 1m", "backoff: {initial: 1h, factor: 1, max: 1h"
)


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


def test_health_is_answered_while_a_reload_re_decides_thousands_of_owed_failures(tmp_path: Path) -> None:
    # Fixed (every failure stays in the resync window), at the wall clock's time: the daemon's
    # scheduler runs a deferred failure's job by the wall clock (one in the past would fire at once).
    clock = Clock(datetime.now(UTC))
    cp = FakeControlPlane(clock)
    for i in range(FAILURES):
        cp.add_failed(f"slow{i:05d}", at=clock() - timedelta(minutes=4))
    settings = daemon_settings(tmp_path, DEFERRING, http="127.0.0.1:0", poll_interval="1s")
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
            first = AnswersAtDecisions("transient", lambda: poller.answers)
            decisions.addHandler(first)
            _until(lambda: len(first.seen) == FAILURES, "every failure deferred by 'transient'", 120)
            decisions.removeHandler(first)

            again = AnswersAtDecisions("transient-renamed", lambda: poller.answers, pause=0.0002)
            decisions.addHandler(again)
            (tmp_path / "policies.yaml").write_text(
                DEFERRING.replace("name: transient", "name: transient-renamed")
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


class HoldTheLoop(logging.Handler):
    """At the first decision line of ``policy``, blocks the thread that logs it (the daemon's
    event loop, as a stalled disk under the ledger would) until ``release`` is set or 30 s
    pass; ``holding`` is set while it blocks, ``released`` says whether ``release`` came."""

    def __init__(self, policy: str) -> None:
        super().__init__(logging.INFO)
        self.policy = policy
        self.holding = threading.Event()
        self.release = threading.Event()
        self.released: bool | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "policy", None) == self.policy and self.released is None:
            self.holding.set()
            self.released = self.release.wait(30)


@contextlib.contextmanager
def held_daemon(tmp_path: Path) -> Iterator[tuple[tuple[str, int], HoldTheLoop]]:
    """A daemon whose event loop is held inside its first decision (until ``release``)."""
    clock = Clock(T0 + timedelta(minutes=5))
    cp = FakeControlPlane(clock)
    cp.add_failed("bad00001", error=USER_ERROR, at=T0 + timedelta(minutes=1))
    settings = daemon_settings(tmp_path, POLICIES, http="127.0.0.1:0", poll_interval="1s")
    started: list[Daemon] = []
    ready = threading.Event()

    def on_ready(d: Daemon) -> None:
        started.append(d)
        ready.set()

    app = App(settings, control_plane=cp, clock=clock, install_signals=False, on_ready=on_ready)
    decisions = logging.getLogger("rerund.decisions")
    level = decisions.level
    decisions.setLevel(logging.INFO)
    hold = HoldTheLoop("bad-input")
    decisions.addHandler(hold)
    thread = threading.Thread(target=lambda: asyncio.run(app.run()), daemon=True)
    thread.start()
    try:
        assert ready.wait(20), "the daemon did not start"
        server = started[0].http
        assert server is not None
        assert hold.holding.wait(30), "the failure was not decided"
        yield server.address, hold
    finally:
        hold.release.set()
        decisions.removeHandler(hold)
        decisions.setLevel(level)
        app.request_stop()
        thread.join(30)
    assert hold.released, "the test let the event loop go only after 30 s"


def _health(address: tuple[str, int]) -> tuple[int, str] | None:
    conn = http.client.HTTPConnection(*address, timeout=10)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    except OSError:
        return None
    finally:
        conn.close()


def test_health_is_answered_while_the_event_loop_is_held_by_a_decision(tmp_path: Path) -> None:
    with held_daemon(tmp_path) as (address, hold):
        answer = _health(address)  # the loop is blocked inside the decision now
        hold.release.set()
    assert answer == (200, "ok\n")


def test_health_reports_an_event_loop_stuck_longer_than_the_liveness_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_module, "LOOP_STALL_S", 0.5)
    with held_daemon(tmp_path) as (address, hold):
        time.sleep(1.0)  # held: the loop has not run for more than the limit
        stuck = _health(address)
        hold.release.set()
        _until(
            lambda: _health(address) == (200, "ok\n"), "/healthz answering ok again once the loop runs", 30
        )
    assert stuck is not None and stuck[0] == 503
    assert re.match(
        r"^the event loop has not run for \d+s \(limit 0\.5s\): the daemon is stuck; restart it "
        r"\(what is owed is recomputed from the control plane on start\)\n$",
        stuck[1],
    ), stuck[1]
