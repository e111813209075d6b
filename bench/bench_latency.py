"""Reaction latency: a run reaches FAILED -> its rerun exists on the control plane.

Measured on the control plane's own clock: the rerun's ``created_at`` minus the failed run's
``updated_at`` (the moment it became FAILED), both stamped by the sandbox. Three modes of the
daemon, each against a fresh sandbox in its own process:

- ``watch``: the WatchRuns subscription (default settings; the 30 s resync also runs);
- ``poll 1s``: ``watch: false``, ListRuns every second;
- ``poll 30s``: ``watch: false``, ListRuns every 30 s (fewer samples, to stay under 5 minutes).

Failures arrive one at a time at random moments (exponential gaps), so each is a separate
trial, and the daemon is otherwise idle. Goal with the subscription: p50 < 100 ms, p99 < 250 ms.

Run: .venv/bin/python bench/bench_latency.py [--quick]
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

import harness as h

# mode -> (settings, failures, mean gap between failures in seconds)
MODES: dict[str, tuple[dict[str, Any], int, float]] = {
    "watch": ({"watch": True, "poll_interval": "30s"}, 100, 0.3),
    "poll 1s": ({"watch": False, "poll_interval": "1s"}, 60, 0.3),
    "poll 30s": ({"watch": False, "poll_interval": "30s"}, 30, 2.5),
}
QUICK = {"watch": 10, "poll 1s": 8, "poll 30s": 0}
GOAL = {"p50_ms": 100, "p99_ms": 250}


def measure_mode(
    tmp: Path, mode: str, settings: dict[str, Any], failures: int, gap: float, seed: int = 7
) -> dict[str, Any]:
    """Launch ``failures`` failing runs one by one; return their reaction latencies (ms)."""
    rng = random.Random(seed)
    with h.sandbox(tmp) as sb, h.daemon(tmp, sb, name=mode.replace(" ", "-"), **settings) as d:
        names: list[str] = []
        started = time.monotonic()
        for _ in range(failures):
            time.sleep(min(rng.expovariate(1 / gap), 4 * gap))
            names.append(sb.launch("bench.flaky")[0])
        wanted = set(names)
        poll_s = float(str(settings["poll_interval"]).removesuffix("s"))

        def all_rerun() -> bool:
            return wanted <= set(h.reruns_of(sb.runs()))

        h.wait_until(f"{failures} reruns ({mode})", all_rerun, timeout=2 * poll_s + 60, interval=0.25)
        elapsed = time.monotonic() - started
        runs = sb.runs()
        by_name = {r["name"]: r for r in runs}
        reruns = h.reruns_of(runs)
        latencies = []
        for name in names:
            src = by_name[name]
            assert src["phase"] == "FAILED", (name, src["phase"])
            [rerun] = reruns[name]
            latencies.append((h.ts(rerun["created_at"]) - h.ts(src["updated_at"])) * 1000)
        usage = d.usage()
    row = {"mode": mode, **{f"{k}_ms" if k != "n" else k: v for k, v in h.summarize(latencies).items()}}
    row["wall_s"] = round(elapsed, 1)
    row["daemon_cpu_s"] = usage["cpu_s"]
    return {"row": row, "latencies_ms": [round(x, 1) for x in latencies]}


def run(quick: bool = False, modes: dict[str, int] | None = None) -> dict[str, Any]:
    """Measure every mode (``modes`` overrides the number of failures per mode; 0 skips it)."""
    machine = h.machine()  # before measuring: its load average is the one at the start
    sizes = modes if modes is not None else (QUICK if quick else {m: v[1] for m, v in MODES.items()})
    rows, samples = [], {}
    with h.workdir("latency") as tmp:
        for mode, (settings, _, gap) in MODES.items():
            n = sizes.get(mode, 0)
            if n <= 0:
                continue
            result = measure_mode(tmp, mode, settings, n, gap if not quick else min(gap, 0.3))
            rows.append(result["row"])
            samples[mode] = result["latencies_ms"]
    watch = next((r for r in rows if r["mode"] == "watch"), None)
    met = None
    if watch is not None and watch["n"]:
        met = watch["p50_ms"] < GOAL["p50_ms"] and watch["p99_ms"] < GOAL["p99_ms"]
    columns = ["mode", "n", "p50_ms", "p99_ms", "min_ms", "max_ms", "wall_s", "daemon_cpu_s"]
    return {
        "benchmark": "latency",
        "what": "failure terminal (sandbox updated_at) -> rerun created (sandbox created_at), ms",
        "goal": "with the subscription: p50 < 100 ms and p99 < 250 ms",
        "goal_met": met,
        "quick": quick,
        "machine": machine,
        "results": rows,
        "samples_ms": samples,
        "table": {"columns": columns, "rows": rows},
    }


def main(argv: list[str] | None = None) -> int:
    args = h.cli_args(argv)
    h.emit("latency", run(quick=args.quick), write=not args.no_write and not args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
