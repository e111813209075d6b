"""Control-plane cost: RPCs per handled failure, by RPC, from the sandbox's request counters.

One sandbox process and one daemon (watch on, ``poll_interval: 5s`` so every window below
contains resync passes; with the default 30 s the listing cost per failure is lower still).
Two windows, each: K runs fail at once, the daemon handles all of them, then one more full
resync pass runs; the RPCs served in the window divided by K are the cost per failure,
including the amortised ListRuns pages and the WatchRuns stream.

- ignored failures (task ``bench.ignored``, policy ``retry: false``);
- rerun failures (task ``bench.flaky``, rerun at once; the reruns succeed).

For comparison, a client process calls the SDK's own rerun path
(``flyte.with_runcontext(name=...).rerun(run)``) once per failed run on a fresh sandbox.

Repeats: from the per-run counters (``GET /_sandbox/requests``), the largest number of times one
RPC method named the same failed run while it was handled, and which methods repeated.

Both sandbox profiles are measured: ``union`` (the columns ``ignored`` / ``rerun``) and ``oss``,
open-source Flyte 2 (``ignored_oss`` / ``rerun_oss``): no label filters, so the daemon lists
every run created in the resync window and reads each one's labels once (GetRunDetails), and
looks before creating a rerun and checks whose run it got after (two GetRunDetails). The
``oss`` sandbox shows error details at once here (``--error-delay`` is 1 s by default: a failure
read before its details arrived is read again, 3 RPCs more).

Goals (on ``union``): at most 3 RPCs per ignored failure; per rerun at most the SDK's rerun
path + 3; no RPC repeated for the same run within a reconcile pass.

Run: .venv/bin/python bench/bench_rpc_cost.py [--quick | --failures N]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import harness as h
from bench_storm import diff_counts, measure_ceiling

K_DEFAULT, K_QUICK = 500, 40
POLL = "5s"


def _per(counts: dict[str, int], k: int) -> dict[str, float]:
    return {m: round(v / k, 2) for m, v in counts.items()}


def _repeats(by_run: dict[str, dict[str, int]], names: list[str]) -> dict[str, Any]:
    worst: dict[str, int] = {}
    for name in names:
        for method, n in by_run.get(name, {}).items():
            worst[method] = max(worst.get(method, 0), n)
    return {
        "max_per_run_by_rpc": dict(sorted(worst.items())),
        "repeated": sorted(m for m, n in worst.items() if n > 1),
    }


def _window(
    sb: h.Sandbox, task: str, k: int, handled: Callable[[], bool]
) -> tuple[list[str], dict[str, int]]:
    """Launch ``k`` runs of ``task``; wait until ``handled`` and one full resync pass after it."""
    before = sb.counts()
    names = sb.launch(task, count=k)
    h.wait_until(f"{k} {task} failures handled", handled, timeout=300, interval=0.2)
    # One more full pass after everything was handled (a pass lists reruns, then failed runs:
    # three ListRuns after this point include one whole pass).
    mark = sb.counts().get("ListRuns", 0)
    h.wait_until(
        "a full resync pass", lambda: sb.counts().get("ListRuns", 0) >= mark + 3, timeout=60, interval=0.2
    )
    time.sleep(0.5)
    return names, diff_counts(before, sb.counts())


def _measure(tmp: Any, size: int, poll: str, profile: str) -> dict[str, Any]:
    """Both windows against a sandbox of ``profile``: per-failure RPCs, repeats, duplicates."""
    with (
        h.sandbox(tmp, profile=profile) as sb,
        h.daemon(tmp, sb, name=f"rpc-{profile}", poll_interval=poll) as d,
    ):
        time.sleep(0.2)

        def decided(n: int) -> Callable[[], bool]:
            return lambda: d.total("rerund_decisions_total") >= n

        ignored, ignored_counts = _window(sb, "bench.ignored", size, decided(size))

        def rerun_done() -> bool:
            stats = sb.stats()["runs"]
            return (
                d.total("rerund_reruns_issued_total") >= size
                and stats.get("SUCCEEDED", 0) >= size
                and sum(stats.values()) >= 3 * size
            )

        flaky, rerun_counts = _window(sb, "bench.flaky", size, rerun_done)
        by_run = h.http_json(f"{sb.endpoint}/_sandbox/requests", timeout=120)["by_run"]
        runs = sb.runs()
    reruns = h.reruns_of(runs)
    ign_per, rer_per = _per(ignored_counts, size), _per(rerun_counts, size)
    return {
        "per_ignored_failure": ign_per,
        "per_rerun_failure": rer_per,
        "totals": {"ignored": round(sum(ign_per.values()), 2), "rerun": round(sum(rer_per.values()), 2)},
        "repeats_ignored": _repeats(by_run, ignored),
        "repeats_rerun": _repeats(by_run, flaky),
        "duplicates": sum(len(reruns[s]) - 1 for s in flaky if len(reruns.get(s, [])) > 1),
    }


def run(
    quick: bool = False, k: int | None = None, poll: str = POLL, profiles: tuple[str, ...] = ("union", "oss")
) -> dict[str, Any]:
    """Measure the SDK's rerun path once, then rerund against each sandbox profile (``union``;
    ``oss``: open-source Flyte 2, error details shown at once so no failure is read twice)."""
    machine = h.machine()  # before measuring: its load average is the one at the start
    size = k if k is not None else (K_QUICK if quick else K_DEFAULT)
    with h.workdir("rpc") as tmp:
        sdk = measure_ceiling(tmp, size, "sdk")
        measured = {p: _measure(tmp, size, poll, p) for p in profiles}
    sdk_per = {m: round(v / sdk["reruns"], 2) for m, v in sdk["rpcs"].items()}
    sdk_total = round(sum(sdk_per.values()), 2)
    main = measured[profiles[0]]
    ign_per, rer_per = main["per_ignored_failure"], main["per_rerun_failure"]
    ign_total, rer_total = main["totals"]["ignored"], main["totals"]["rerun"]
    ign_rep, rer_rep = main["repeats_ignored"], main["repeats_rerun"]
    others = [p for p in profiles[1:]]
    methods = sorted(
        set(sdk_per).union(
            *(set(m["per_ignored_failure"]) | set(m["per_rerun_failure"]) for m in measured.values())
        )
    )

    def row(m: str) -> dict[str, Any]:
        r: dict[str, Any] = {"rpc": m, "ignored": ign_per.get(m, 0.0), "rerun": rer_per.get(m, 0.0)}
        for p in others:
            r[f"ignored_{p}"] = measured[p]["per_ignored_failure"].get(m, 0.0)
            r[f"rerun_{p}"] = measured[p]["per_rerun_failure"].get(m, 0.0)
        r["sdk_rerun"] = sdk_per.get(m)
        return r

    rows = [row(m) for m in methods]
    total_row: dict[str, Any] = {"rpc": "total", "ignored": ign_total, "rerun": rer_total}
    for p in others:
        total_row[f"ignored_{p}"] = measured[p]["totals"]["ignored"]
        total_row[f"rerun_{p}"] = measured[p]["totals"]["rerun"]
    total_row["sdk_rerun"] = sdk_total
    rows.append(total_row)
    columns = [
        "rpc",
        "ignored",
        "rerun",
        *(f"{k}_{p}" for p in others for k in ("ignored", "rerun")),
        "sdk_rerun",
    ]
    goals = {
        "ignored_at_most_3": ign_total <= 3,
        "rerun_at_most_sdk_plus_3": rer_total <= sdk_total + 3,
        "no_rpc_repeated_per_run": not ign_rep["repeated"] and not rer_rep["repeated"],
    }
    return {
        "benchmark": "rpc_cost",
        "what": "RPCs per handled failure by RPC (sandbox counters), amortised listing and watch included",
        "goal": "ignored <= 3; rerun <= SDK rerun path + 3; no RPC repeated for the same run in a pass",
        "goals_met": goals,
        "failures_per_window": size,
        "poll_interval": poll,
        "quick": quick,
        "profile": profiles[0],
        "per_ignored_failure": ign_per,
        "per_rerun_failure": rer_per,
        "sdk_rerun_path": sdk_per,
        "totals": {"ignored": ign_total, "rerun": rer_total, "sdk_rerun_path": sdk_total},
        "repeats_ignored": ign_rep,
        "repeats_rerun": rer_rep,
        "duplicates": main["duplicates"],
        "profiles": {p: measured[p] for p in others},
        "machine": machine,
        "results": rows,
        "table": {"columns": columns, "rows": rows},
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    k = None
    if "--failures" in argv:  # a shortened run that still writes its results
        i = argv.index("--failures")
        k = int(argv[i + 1])
        del argv[i : i + 2]
    args = h.cli_args(argv)
    h.emit("rpc_cost", run(quick=args.quick, k=k), write=not args.no_write and not args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
