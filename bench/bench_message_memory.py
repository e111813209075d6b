"""Memory and message size: the daemon's RSS after 1,000 ignored failures whose error messages are
5 MB each, against 1,000 whose messages are 100 bytes.

Two fresh sandbox + daemon pairs (default settings), one per message size (the sandbox's
``message_bytes`` workload option repeats the message to that size). The failures are of a task
the bench policy ignores (``retry: false``): read, decided and recorded, never rerun, so
nothing the daemon keeps for a rerun is ever taken back — the case where a cache that follows
message size grows without bound (issue 24: 40 such failures added 400 MB). Launched in waves
of ``WAVE``; after all are handled: the daemon's RSS, its peak RSS (VmHWM), the bytes its read
cache holds (``rerund_read_cache_bytes``) and the ledger's size.

Goal (issue 24): RSS with 5 MB messages within 50 MB of RSS with 100-byte ones.

Run: .venv/bin/python bench/bench_message_memory.py [--quick]
"""

from __future__ import annotations

import sys
import time
from typing import Any

import harness as h

N_DEFAULT, N_QUICK = 1000, 60
WAVE = 100
SIZES = (100, 5 * 1024 * 1024)
GOAL_MIB = 50


def _tasks(message_bytes: int) -> dict[str, Any]:
    return {
        "bench.ignored": {
            "behaviour": ["fail"],
            "duration": "0.05s",
            "error": {
                "kind": "USER",
                "code": "ValueError",
                "message": "ValueError: bad input in row 17 of the frame",
                "message_bytes": message_bytes,
            },
        }
    }


def measure(n: int, message_bytes: int) -> dict[str, Any]:
    with (
        h.workdir("message-memory") as tmp,
        h.sandbox(tmp, tasks=_tasks(message_bytes)) as sb,
        h.daemon(tmp, sb, name=f"msg-{message_bytes}") as d,
    ):
        base = d.usage()
        start = time.monotonic()
        for done in range(0, n, WAVE):
            sb.launch("bench.ignored", count=min(WAVE, n - done))
            target = min(done + WAVE, n)
            h.wait_until(
                f"{target} failures handled",
                lambda t=target: d.total("rerund_failures_observed_total") >= t,
                timeout=900,
                interval=0.5,
            )
        time.sleep(1.0)
        u = d.usage()
        metrics = d.metrics()
        if not d.alive():
            raise RuntimeError(f"the daemon died:\n{d.logs()}")
    return {
        "message_bytes": message_bytes,
        "failures": n,
        "rss_start_mib": base["rss_mib"],
        "rss_mib": u["rss_mib"],
        "peak_rss_mib": u["peak_rss_mib"],
        "read_cache_bytes": int(metrics.get("rerund_read_cache_bytes", 0)),
        "ledger_bytes": int(metrics.get("rerund_ledger_bytes", 0)),
        "daemon_cpu_s": round(u["cpu_s"] - base["cpu_s"], 2),
        "seconds": round(time.monotonic() - start, 1),
    }


def run(quick: bool = False) -> dict[str, Any]:
    machine = h.machine()
    n = N_QUICK if quick else N_DEFAULT
    rows = [measure(n, size) for size in SIZES]
    small, big = rows
    diff = round(big["rss_mib"] - small["rss_mib"], 1)
    return {
        "benchmark": "message_memory",
        "what": f"daemon RSS after {n} ignored failures: 100-byte messages vs 5 MB messages",
        "goal": f"RSS with 5 MB messages within {GOAL_MIB} MB of RSS with 100-byte ones",
        "failures": n,
        "quick": quick,
        "rss_difference_mib": diff,
        "goal_met": diff <= GOAL_MIB,
        "machine": machine,
        "results": rows,
        "table": {
            "columns": [
                "message_bytes",
                "failures",
                "rss_start_mib",
                "rss_mib",
                "peak_rss_mib",
                "read_cache_bytes",
                "ledger_bytes",
                "daemon_cpu_s",
                "seconds",
            ],
            "rows": rows,
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = h.cli_args(argv)
    h.emit("message_memory", run(quick=args.quick), write=not args.no_write and not args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
