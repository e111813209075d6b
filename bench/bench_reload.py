"""A hot reload at N cached failures: how long until every one is re-decided, and the slowest
``/healthz`` meanwhile (issue 24: a reload <= 1 s at 20,000 cached failures, no ``/healthz``
slower than 100 ms).

The daemon runs in-process (``rerund.app.App``, its own thread and event loop, default
settings, the in-memory control plane of the unit tests) with N failed runs whose USER error a
policy ignores, all inside the resync window. Once each is decided, the policy is renamed and
``request_reload`` called (what SIGHUP does); a log handler counts the decisions made under
the new name. A thread polls ``/healthz`` back to back (a fresh connection each time) and
records each answer's latency. Reported: seconds from the reload request to the last
re-decision, the process's CPU seconds in that time, the /healthz answers in it and the
slowest of them.

Run: .venv/bin/python bench/bench_reload.py [--quick] [--no-write]
(another checkout's code: PYTHONPATH=/path/to/other/daemon .venv/bin/python bench/bench_reload.py)
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import harness as h

sys.path.insert(0, str(h.REPO / "tests"))

import rerund
from rerund.app import App
from rerund.core.model import ErrorInfo
from rerund.runtime.daemon import Daemon
from runtime.fake_control_plane import T0, Clock, FakeControlPlane, daemon_settings

USER_ERROR = ErrorInfo(kind="USER", code="ValueError", message="bad input")
POLICIES = """\
apiVersion: rerund/v1
policies:
  - name: bad-input
    match: {error: {kinds: [USER]}}
    retry: false
"""


class Prober:
    """Polls ``/healthz`` from its own thread; keeps (time answered, seconds taken) per answer."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.answers: list[tuple[float, float]] = []
        self.failed = 0
        self._address = address
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            conn = http.client.HTTPConnection(*self._address, timeout=30)
            try:
                conn.request("GET", "/healthz")
                ok = conn.getresponse().status == 200
            except OSError:
                ok = False
            finally:
                conn.close()
            end = time.perf_counter()
            if ok:
                self.answers.append((end, end - start))
            else:
                self.failed += 1
            time.sleep(0.005)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


class Decisions(logging.Handler):
    """Counts the decision lines of ``policy``; ``last`` is when the latest arrived."""

    def __init__(self, policy: str) -> None:
        super().__init__(logging.INFO)
        self.policy = policy
        self.count = 0
        self.last = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "policy", None) == self.policy:
            self.count += 1
            self.last = time.perf_counter()


def _until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


def measure(n: int, tmp: Path) -> dict[str, Any]:
    clock = Clock(T0 + timedelta(minutes=5))  # fixed: every failure stays in the resync window
    cp = FakeControlPlane(clock)
    for i in range(n):
        cp.add_failed(f"bad{i:06d}", error=USER_ERROR, at=T0 + timedelta(minutes=1))
    settings = daemon_settings(tmp, POLICIES, http="127.0.0.1:0", poll_interval="5s")
    started: list[Daemon] = []
    ready = threading.Event()

    def on_ready(d: Daemon) -> None:
        started.append(d)
        ready.set()

    app = App(settings, control_plane=cp, clock=clock, install_signals=False, on_ready=on_ready)
    thread = threading.Thread(target=lambda: asyncio.run(app.run()), daemon=True)
    decisions = logging.getLogger("rerund.decisions")
    decisions.setLevel(logging.INFO)
    decisions.propagate = False
    first, again = Decisions("bad-input"), Decisions("bad-input-renamed")
    decisions.addHandler(first)
    decisions.addHandler(again)
    thread.start()
    try:
        if not ready.wait(60):
            raise TimeoutError("the daemon did not start")
        server = started[0].http
        assert server is not None
        _until("every failure decided", lambda: first.count >= n, 600)
        time.sleep(6)  # a pass with nothing new: the loop is idle
        with Prober(server.address) as prober:
            time.sleep(1)
            (tmp / "policies.yaml").write_text(POLICIES.replace("name: bad-input", "name: bad-input-renamed"))
            cpu0, t0 = time.process_time(), time.perf_counter()
            app.request_reload()
            _until("every failure re-decided", lambda: again.count >= n, 600)
            cpu1, t1 = time.process_time(), time.perf_counter()
            time.sleep(0.5)
        during = [s for at, s in prober.answers if t0 <= at <= t1 + 0.05]
        return {
            "cached_failures": n,
            "reload_s": round(again.last - t0, 3),
            "cpu_s": round(cpu1 - cpu0, 3),
            "healthz_answers_during": len(during),
            "slowest_healthz_ms_during": round(max(during) * 1000, 1) if during else None,
            "slowest_healthz_ms_overall": round(max(s for _, s in prober.answers) * 1000, 1),
            "healthz_failed": prober.failed,
        }
    finally:
        app.request_stop()
        thread.join(60)
        decisions.removeHandler(first)
        decisions.removeHandler(again)


def main(argv: list[str] | None = None) -> int:
    args = h.cli_args(argv)
    sizes = (2_000,) if args.quick else (5_000, 20_000)
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(measure(n, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    doc = {
        "rerund": str(Path(rerund.__file__).parent),
        "rows": rows,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(json.dumps(doc, indent=2))
    if not args.no_write:
        (h.RESULTS / "reload.json").write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
