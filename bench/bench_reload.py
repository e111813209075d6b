"""A hot reload at N cached failures, K of them still owed: how long until the reload's work
is done, and the slowest ``/healthz`` meanwhile (issue 24: a reload <= 1 s at 20,000 cached
failures, no ``/healthz`` slower than 100 ms).

The daemon runs in-process (``rerund.app.App``, its own thread and event loop, default
settings, the in-memory control plane of the unit tests) with N failed runs, all inside the
resync window: N - K with a USER error a policy ignores (settled), K with a SYSTEM error a
policy reruns after a 1 h backoff (owed: deferred). Once each is decided, the policy file is
rewritten and ``request_reload`` called (what SIGHUP does): ``renamed`` renames both policies
(every failure decided again gets a new decision: a ledger row and a log line), ``comment``
changes only a comment (the rules decide as before). A thread polls ``/healthz`` back to back
(a fresh connection each time). Reported: seconds from the reload request to the end of the
first resync pass that began after the new policies were in force (the pass that makes the
reload's decisions), the process's CPU seconds in that time, the decisions made under the
renamed policies (ignored ones, owed ones), and the /healthz answers in that time and the
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
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import harness as h

sys.path.insert(0, str(h.REPO / "tests"))

import rerund
from rerund.app import App
from rerund.core.model import ErrorInfo
from rerund.core.runs import RunSummary
from rerund.runtime.daemon import Daemon
from runtime.fake_control_plane import Clock, FakeControlPlane, daemon_settings

USER_ERROR = ErrorInfo(kind="USER", code="ValueError", message="bad input")
SYSTEM_ERROR = ErrorInfo(kind="SYSTEM", code="ConnectionResetError", message="connection reset by peer")
POLICIES = """\
apiVersion: rerund/v1
# {comment}
policies:
  - name: bad-input{suffix}
    match: {{error: {{kinds: [USER]}}}}
    retry: false
  - name: slow{suffix}
    match: {{error: {{kinds: [SYSTEM]}}}}
    retry: {{backoff: {{initial: 1h, factor: 1, max: 1h, jitter: 0}}}}
"""
SIZES = (
    (20_000, 0, "renamed"),
    (20_000, 2_000, "renamed"),
    (20_000, 2_000, "comment"),
    (20_000, 20_000, "renamed"),
)
QUICK = ((2_000, 200, "renamed"), (2_000, 200, "comment"))


class OpenStreamControlPlane(FakeControlPlane):
    """The unit tests' control plane with a watch stream that stays open after its snapshot,
    as WatchRuns does (the tests' stream ends after the snapshot, and the daemon reconnecting
    every second would decide the whole snapshot again each time: not what a reload costs)."""

    async def watch(self, project: str, domain: str) -> AsyncIterator[RunSummary]:
        async for summary in super().watch(project, domain):
            yield summary
        await asyncio.Event().wait()


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
    """Counts the decision lines per policy."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        policy = getattr(record, "policy", None)
        if policy is not None:
            self.count[policy] = self.count.get(policy, 0) + 1


class Reloaded(logging.Handler):
    """When the reloaded policies came into force (the daemon's "policies reloaded" line)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("policies reloaded"):
            self.at = time.perf_counter()


def time_passes(daemon: Daemon) -> list[tuple[float, float]]:
    """(start, end) of every resync pass of ``daemon`` from now on."""
    passes: list[tuple[float, float]] = []
    rec = daemon.reconciler
    sync = rec.sync

    async def timed() -> Any:
        start = time.perf_counter()
        try:
            return await sync()
        finally:
            passes.append((start, time.perf_counter()))

    rec.sync = timed  # type: ignore[method-assign]
    return passes


def _until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


def measure(n: int, owed: int, change: str, tmp: Path) -> dict[str, Any]:
    # Fixed (every failure stays in the resync window), at the wall clock's time: the daemon's
    # scheduler runs a deferred failure's job by the wall clock (one in the past would fire at once).
    clock = Clock(datetime.now(UTC))
    cp = OpenStreamControlPlane(clock)
    for i in range(n):
        error = SYSTEM_ERROR if i < owed else USER_ERROR
        cp.add_failed(f"f{i:06d}", error=error, at=clock() - timedelta(minutes=4))
    policies = POLICIES.format(comment="first", suffix="")
    settings = daemon_settings(tmp, policies, http="127.0.0.1:0", poll_interval="5s")
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
    counted, reloaded = Decisions(), Reloaded()
    decisions.addHandler(counted)
    daemon_log = logging.getLogger("rerund.daemon")
    daemon_log.setLevel(logging.INFO)
    daemon_log.addHandler(reloaded)
    thread.start()
    try:
        if not ready.wait(60):
            raise TimeoutError("the daemon did not start")
        server = started[0].http
        assert server is not None
        _until(
            "every failure decided",
            lambda: counted.count.get("bad-input", 0) + counted.count.get("slow", 0) >= n,
            600,
        )
        time.sleep(6)  # a pass with nothing new: the loop is idle
        passes = time_passes(started[0])
        with Prober(server.address) as prober:
            time.sleep(1)
            new = POLICIES.format(comment="second", suffix="-renamed" if change == "renamed" else "")
            (tmp / "policies.yaml").write_text(new)
            cpu0, t0 = time.process_time(), time.perf_counter()
            app.request_reload()
            _until("the reload in force", lambda: reloaded.at is not None, 60)
            _until(
                "a pass begun after it, ended", lambda: any(s >= (reloaded.at or 0) for s, _ in passes), 600
            )
            cpu1 = time.process_time()
            t1 = next(e for s, e in passes if s >= (reloaded.at or 0))
            time.sleep(0.5)
        during = [s for at, s in prober.answers if t0 <= at <= t1 + 0.05]
        return {
            "cached_failures": n,
            "owed": owed,
            "reload": change,
            "reload_s": round(t1 - t0, 3),
            "cpu_s": round(cpu1 - cpu0, 3),
            "decided_again": {
                "ignored": counted.count.get("bad-input-renamed", 0),
                "owed": counted.count.get("slow-renamed", 0),
            },
            "healthz_answers_during": len(during),
            "slowest_healthz_ms_during": round(max(during) * 1000, 1) if during else None,
            "slowest_healthz_ms_overall": round(max(s for _, s in prober.answers) * 1000, 1),
            "healthz_failed": prober.failed,
        }
    finally:
        app.request_stop()
        thread.join(60)
        decisions.removeHandler(counted)
        daemon_log.removeHandler(reloaded)


def main(argv: list[str] | None = None) -> int:
    args = h.cli_args(argv)
    rows = []
    for n, owed, change in QUICK if args.quick else SIZES:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(measure(n, owed, change, Path(tmp)))
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
