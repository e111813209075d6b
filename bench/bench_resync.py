"""What one steady-state resync pass costs with N reruns in the budget window (issue 24).

The reconcile loop (``rerund.runtime.reconcile.Reconciler``) runs in-process against the
in-memory control plane of the unit tests (``tests/runtime/fake_control_plane.py``), so the
figure is the daemon's own CPU for a pass (no RPC, no protobuf decoding): N reruns created over
the last 50 minutes (a 1 h global budget, so every one of them is in the window), each
vouched for by its relation; a first pass lists them all; then passes 5 s apart, each with a
few new failures to rerun (``NEW_PER_PASS``, ~1 failure/s). Reported per N: the median and
slowest CPU ms of those passes, the reruns each listed, and the top functions of one of them
under cProfile. The in-memory control plane's own work (scanning its runs, building the
summaries a listing returns: on a real control plane the server's) is measured apart and
left out of the pass's CPU; on a real control plane each listed rerun also costs the adapter
its decoding, so the reruns listed per pass are reported too.

Run against another checkout's code by putting its package first on the path:
``PYTHONPATH=/path/to/other/daemon .venv/bin/python bench/bench_resync.py --no-write``.

Run: .venv/bin/python bench/bench_resync.py [--quick] [--no-write]
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import pstats
import statistics
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import harness as h

sys.path.insert(0, str(h.REPO / "tests"))

from prometheus_client import CollectorRegistry

import rerund
from rerund.policy import load_policies
from rerund.runtime.metrics import Metrics
from rerund.runtime.reconcile import Reconciler
from runtime.fake_control_plane import T0, Clock, FakeControlPlane, FakeRun

SIZES = (1_000, 10_000)
PASSES = 12
NEW_PER_PASS = 5
POLICIES = """\
apiVersion: rerund/v1
defaults:
  max_attempts: 3
  backoff: {initial: 0s, factor: 1, max: 0s, jitter: 0}
policies:
  - name: transient
    match: {error: {patterns: ['(?i)connection reset']}}
    retry: {scope: run}
budgets:
  global: {max_reruns: 1000000, per: 1h}
"""


class TimedControlPlane(FakeControlPlane):
    """The in-memory control plane, counting the CPU seconds its listings take (``served_s``)."""

    served_s = 0.0

    async def list_failed(self, project: str, domain: str, **kw: Any) -> Any:
        start = time.process_time()
        try:
            return await super().list_failed(project, domain, **kw)
        finally:
            self.served_s += time.process_time() - start

    async def list_reruns(self, project: str, domain: str, **kw: Any) -> Any:
        start = time.process_time()
        try:
            return await super().list_reruns(project, domain, **kw)
        finally:
            self.served_s += time.process_time() - start


def _world(n: int, tmp: Path) -> tuple[Clock, TimedControlPlane, Reconciler]:
    now = T0 + timedelta(hours=1)
    clock = Clock(now)
    cp = TimedControlPlane(clock)
    for i in range(n):
        at = now - timedelta(minutes=50) + timedelta(seconds=3000 * i / n)
        root = cp.add_failed(f"root{i:06d}", at=at, phase="SUCCEEDED")
        rerun = FakeRun(
            cp.ref(f"root{i:06d}-retry-1"),
            "SUCCEEDED",
            labels={"rerund-root": root.ref.name, "rerund-attempt": "1", "rerund-policy": "transient"},
            created_at=at,
            ended_at=at + timedelta(seconds=30),
            relation=root.ref,
        )
        cp.runs[rerun.ref] = rerun
    policy_file = tmp / "policies.yaml"
    policy_file.write_text(textwrap.dedent(POLICIES))
    policies = load_policies([policy_file])
    rec = Reconciler(
        cp,
        scopes=[("ml", "production")],
        policies=lambda: policies,
        metrics=Metrics(CollectorRegistry()),
        clock=clock,
        lookback=timedelta(hours=1),
    )
    return clock, cp, rec


def _top(profile: cProfile.Profile, n: int = 8) -> list[str]:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(n)
    rows = [line.strip() for line in out.getvalue().splitlines() if "(" in line and "/" in line]
    return rows[:n]


def measure(n: int, passes: int, tmp: Path) -> dict[str, Any]:
    clock, cp, rec = _world(n, tmp)

    async def run() -> dict[str, Any]:
        first = await rec.sync()
        await rec.drain(30)
        cpu_ms: list[float] = []
        listed: list[int] = []
        profile = cProfile.Profile()
        for p in range(passes):
            clock.advance(5)
            for k in range(NEW_PER_PASS):
                cp.add_failed(f"new{p:03d}x{k}", at=clock() - timedelta(seconds=1))
            profiled = p == passes - 1
            start, served = time.process_time(), cp.served_s
            if profiled:
                profile.enable()
            report = await rec.sync()
            await rec.drain(30)
            if profiled:
                profile.disable()
            else:
                cpu_ms.append((time.process_time() - start - (cp.served_s - served)) * 1000)
            listed.append(report.reruns_listed)
        return {
            "reruns_in_window": n,
            "first_pass_listed": first.reruns_listed,
            "pass_cpu_ms_median": round(statistics.median(cpu_ms), 2),
            "pass_cpu_ms_max": round(max(cpu_ms), 2),
            "reruns_listed_median": statistics.median(listed),
            "reruns_created": len(cp.reruns()),
            "profile_top_tottime": _top(profile),
        }

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    args = h.cli_args(argv)
    sizes = (200, 1_000) if args.quick else SIZES
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            rows.append(measure(n, PASSES, Path(tmp)))
    doc = {
        "rerund": str(Path(rerund.__file__).parent),
        "passes": PASSES,
        "new_failures_per_pass": NEW_PER_PASS,
        "rows": rows,
        "measured_at": h.now_iso() if hasattr(h, "now_iso") else time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(json.dumps(doc, indent=2))
    if not args.no_write:
        (h.RESULTS / "resync.json").write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
