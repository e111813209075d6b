"""Default ceiling: the same WAN storm with the old default ``max_concurrent_reruns: 8`` and with
today's default (64, nothing set), side by side in one run, plus the rate-limited storm with
default settings.

- ``SDK loop`` — a client process calling the SDK's rerun path at concurrency 8 (what a user
  writes without rerund), on a sandbox adding 50 ms to every RPC (``--fault-latency 50ms``).
- ``rerund, max_concurrent_reruns 8`` — the old default, set explicitly.
- ``rerund, defaults`` — no concurrency or rate setting at all.
- ``rerund, defaults, --rate-limit 100/s`` — behind a gateway refusing beyond 100 RPCs/s
  (RESOURCE_EXHAUSTED): the adaptive limit must keep refusals small with no ``max_rps`` set.

Goals (issue 24): defaults ≥ 3x the SDK loop under 50 ms; behind 100/s, RESOURCE_EXHAUSTED
≤ 5% of RPCs, 0 duplicates, 0 missed. A smaller N than ``bench_production`` (the machine is
shared); ``--failures N`` to change it.

Run: .venv/bin/python bench/bench_defaults.py [--quick] [--failures N]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import bench_production as bp
import bench_storm
import harness as h

N_DEFAULT, N_QUICK = 600, 60
WAN = ("--fault-latency", bp.LATENCY)
LIMIT = ("--rate-limit", f"{bp.RATE}/s")


def run(n: int, quick: bool) -> dict[str, Any]:
    machine = h.machine()
    with h.workdir("defaults") as tmp:
        sdk = bench_storm.measure_ceiling(tmp, n, "sdk", 8, WAN)
        sdk["who"] = "SDK loop (concurrency 8), 50 ms"
        old = bp.measure_rerund(tmp, n, WAN, "50 ms, max_concurrent_reruns 8", max_concurrent_reruns=8)
        new = bp.measure_rerund(tmp, n, WAN, "50 ms, defaults")
        limited = bp.measure_rerund(tmp, n, LIMIT, "100/s, defaults")
    rows = [sdk, old, new, limited]
    for row in rows[1:3]:
        row["x_sdk_loop"] = round(row["reruns_per_s"] / sdk["reruns_per_s"], 2)
    columns = [
        "who",
        "failures",
        "reruns",
        "seconds",
        "reruns_per_s",
        "x_sdk_loop",
        "resource_exhausted_share",
        "concurrency_at_end",
        "duplicates",
        "missing",
    ]
    return {
        "benchmark": "defaults",
        "what": "WAN storm: old default ceiling 8 vs today's default 64; rate-limited storm with defaults",
        "goal": "defaults >= 3x the SDK loop at 50 ms; behind 100/s RESOURCE_EXHAUSTED <= 5%, 0 dup/missed",
        "failures": n,
        "quick": quick,
        "old_default_x_sdk": old["x_sdk_loop"],
        "default_x_sdk": new["x_sdk_loop"],
        "rate_limited_resource_exhausted_share": limited["resource_exhausted_share"],
        "machine": machine,
        "results": rows,
        "table": {"columns": columns, "rows": rows},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--failures", type=int)
    args = p.parse_args(argv)
    n = args.failures or (N_QUICK if args.quick else N_DEFAULT)
    h.emit("defaults", run(n, args.quick), write=not args.no_write and not args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
