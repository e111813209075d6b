"""Production conditions, side by side in one run: a WAN storm, a rate-limited storm, and the CPU
each rerun costs.

- ``WAN storm`` — N runs fail at once on a sandbox that adds 50 ms to every RPC
  (``--fault-latency 50ms``). The SDK's own rerun path at concurrency 8 (a client process calling
  ``flyte.with_runcontext(name=...).rerun(run)``) against rerund with adaptive concurrency up to
  ``max_concurrent_reruns`` 128 and ``max_rps`` 1200. Goal: rerund at least 4x the SDK path's rate,
  and never above its ``max_rps``, judged twice: ``peak_sent_rps``, the most RPCs rerund sent
  in one whole second by its own clock (``rerund_control_plane_peak_rps``, counted as each RPC
  leaves the gate, after its wait), must not exceed it; ``peak_rpc_per_s``, the most the sandbox
  counted arriving in one whole second by its clock — the same RPCs, shifted by the sandbox's
  own scheduling on a loaded machine (a Python server that stalls for 20 ms handles 20 ms of
  requests late, in its next second) — must not exceed it by more than 2%.
- ``rate-limited storm`` — N/2 runs fail at once behind ``--rate-limit 100/s`` (RESOURCE_EXHAUSTED
  beyond it). rerund twice: with no ``max_rps`` (adaptive concurrency alone) and with
  ``max_rps: 95`` (set to the gateway's limit, as an operator would). Goal: a rerun rate at least
  80% of what the limit allows for rerund's RPC mix (limit / RPCs per rerun), RESOURCE_EXHAUSTED
  at most 5% of its RPCs, 0 duplicates and 0 missed.
- ``CPU per rerun`` — from the same WAN storm: the daemon's CPU seconds per rerun against the SDK
  client's, each the median of five runs taken alternately (``REPEATS``: the machine is shared
  and one run of either side varies by up to ±1 ms). Goal: at most 2 ms more.

The SDK path is not measured behind the rate limit: it does not retry RESOURCE_EXHAUSTED, so a
plain SDK client fails there (which is the point of the adaptive layer).

Run: .venv/bin/python bench/bench_production.py [--quick] [--failures N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import bench_storm
import harness as h

N_DEFAULT, N_QUICK = 2000, 200
LATENCY = "50ms"
RATE = 100
WAN_SETTINGS = {"max_concurrent_reruns": 128, "max_rps": 1200}
# The sandbox counts arrivals by its own clock, after its own scheduling on a loaded machine:
# the same RPCs can land up to this share above the cap in one of its seconds.
ARRIVAL_TOLERANCE = 1.02
REPEATS = 5


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose CPU per rerun is the median of ``runs`` (a copy)."""
    ordered = sorted(runs, key=lambda r: r["cpu_ms_per_rerun"])
    return dict(ordered[(len(ordered) - 1) // 2])


def measure_rerund(
    tmp: Path, n: int, sandbox_args: tuple[str, ...], label: str, **settings: Any
) -> dict[str, Any]:
    """The daemon, idle and ready, then ``n`` runs launched at once on a sandbox with
    ``sandbox_args``."""
    with (
        h.sandbox(tmp, args=sandbox_args) as sb,
        h.daemon(tmp, sb, name=f"prod-{label}", **settings) as d,
    ):
        before = d.usage()
        counts_before = sb.counts()
        sources = sb.launch("bench.flaky", count=n)
        h.wait_until(
            f"{n} reruns from rerund ({label})",
            lambda: int(sum(sb.stats()["runs"].values())) >= 2 * n,
            timeout=1800,
            interval=0.5,
        )
        time.sleep(0.5)
        after = d.usage()
        window = h.storm_outcome(sb, sources)
        stats = sb.stats()
        counts = bench_storm.diff_counts(counts_before, sb.counts())
        metrics = d.metrics()
        peak = sb.rates()["peak_rpc_per_s"]
        if not d.alive():
            raise RuntimeError(f"the daemon died during the storm:\n{d.logs()}")
    refused = int(stats.get("rate_limited", 0))
    rpcs = sum(counts.values())
    seconds = window["seconds"] or 1e-6
    reruns = window["reruns"]
    return {
        "who": f"rerund ({label})",
        "failures": n,
        "reruns": reruns,
        "seconds": seconds,
        "reruns_per_s": round(reruns / seconds, 1),
        "daemon_cpu_s": round(after["cpu_s"] - before["cpu_s"], 2),
        "cpu_ms_per_rerun": round(1000 * (after["cpu_s"] - before["cpu_s"]) / max(reruns, 1), 2),
        "rpcs": rpcs,
        "rpcs_per_rerun": round((rpcs - refused) / max(reruns, 1), 2),
        "resource_exhausted": refused,
        "resource_exhausted_share": round(refused / max(rpcs, 1), 4),
        "peak_rpc_per_s": peak,
        "peak_sent_rps": int(metrics.get("rerund_control_plane_peak_rps") or 0),
        "max_rps": settings.get("max_rps", 0),
        "concurrency_at_end": metrics.get("rerund_control_plane_concurrency"),
        "duplicates": window["duplicates"],
        "missing": window["missing"],
        "rpcs_by_method": counts,
    }


def run(n: int, quick: bool) -> dict[str, Any]:
    machine = h.machine()
    wan_args = ("--fault-latency", LATENCY)
    limit_args = ("--rate-limit", f"{RATE}/s")
    with h.workdir("production") as tmp:
        # The WAN pair runs REPEATS times, alternating, on this shared machine: the CPU figures
        # compared are the medians of each side's runs, the other figures the median run's.
        sdks, wans = [], []
        for _ in range(REPEATS):
            sdk = bench_storm.measure_ceiling(tmp, n, "sdk", 8, wan_args)
            sdk["cpu_ms_per_rerun"] = round(1000 * sdk["client_cpu_s"] / max(sdk["reruns"], 1), 2)
            sdks.append(sdk)
            wans.append(measure_rerund(tmp, n, wan_args, "50 ms", **WAN_SETTINGS))
        sdk, wan = _median_run(sdks), _median_run(wans)
        sdk["who"] = "SDK rerun path, 50 ms (concurrency 8)"
        for row, runs in ((sdk, sdks), (wan, wans)):
            row["cpu_ms_per_rerun_runs"] = [r["cpu_ms_per_rerun"] for r in runs]
        # No second of any run above max_rps, by rerund's count or the sandbox's.
        wan["peak_sent_rps"] = max(r["peak_sent_rps"] for r in wans)
        wan["peak_rpc_per_s"] = max(r["peak_rpc_per_s"] for r in wans)
        wan["duplicates"] = sum(r["duplicates"] for r in wans)
        wan["missing"] = sum(r["missing"] for r in wans)
        sdk["duplicates"] = sum(r["duplicates"] for r in sdks)
        sdk["missing"] = sum(r["missing"] for r in sdks)
        m = max(1, n // 2)  # behind the gateway a storm takes ~limit/8 reruns a second
        limited = measure_rerund(tmp, m, limit_args, "100/s, adaptive only", max_concurrent_reruns=64)
        capped = measure_rerund(tmp, m, limit_args, "100/s, max_rps 95", max_concurrent_reruns=64, max_rps=95)
    for row in (limited, capped):
        allowed = RATE / row["rpcs_per_rerun"] if row["rpcs_per_rerun"] else 0.0
        row["allowed_reruns_per_s"] = round(allowed, 1)
        row["share_of_allowed"] = round(row["reruns_per_s"] / allowed, 3) if allowed else None
    ratio = round(wan["reruns_per_s"] / sdk["reruns_per_s"], 2)
    cpu_extra = round(wan["cpu_ms_per_rerun"] - sdk["cpu_ms_per_rerun"], 2)
    goals = {
        "wan_4x_sdk_path": ratio >= 4.0,
        "wan_never_above_max_rps": wan["peak_sent_rps"] <= WAN_SETTINGS["max_rps"]
        and wan["peak_rpc_per_s"] <= WAN_SETTINGS["max_rps"] * ARRIVAL_TOLERANCE,
        "rate_limited_80pct_of_allowed": {
            r["who"]: (r["share_of_allowed"] or 0) >= 0.8 for r in (limited, capped)
        },
        "rate_limited_at_most_5pct_resource_exhausted": {
            r["who"]: r["resource_exhausted_share"] <= 0.05 for r in (limited, capped)
        },
        "exact_0_duplicates_0_missing": all(
            r["duplicates"] == 0 and r["missing"] == 0 for r in (sdk, wan, limited, capped)
        ),
        "cpu_at_most_2ms_more_than_sdk_path": cpu_extra <= 2.0,
    }
    rows = [sdk, wan, limited, capped]
    columns = [
        "who",
        "failures",
        "reruns",
        "seconds",
        "reruns_per_s",
        "cpu_ms_per_rerun",
        "rpcs_per_rerun",
        "peak_sent_rps",
        "peak_rpc_per_s",
        "resource_exhausted_share",
        "share_of_allowed",
        "duplicates",
        "missing",
    ]
    return {
        "benchmark": "production",
        "what": "WAN storm (50 ms per RPC) and rate-limited storm (100 RPC/s): rerund against the SDK path",
        "failures": n,
        "quick": quick,
        "wan_ratio_to_sdk_path": ratio,
        "cpu_ms_more_than_sdk_path": cpu_extra,
        "goals_met": goals,
        "machine": machine,
        "results": rows,
        "table": {"columns": columns, "rows": rows},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help=f"{N_QUICK} failures; writes nothing")
    p.add_argument("--failures", type=int, default=None, help=f"storm size (default {N_DEFAULT})")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    n = args.failures or (N_QUICK if args.quick else N_DEFAULT)
    h.emit("production", run(n, args.quick), write=not args.no_write and not args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
