"""Storm with the ledger in PostgreSQL against the SQLite file, in the same run (issue 25).

The storm of ``bench_storm.py`` (N runs of ``bench.flaky`` fail at once; the daemon, idle and
ready, reads, decides, issues and records each), measured twice per round with a fresh sandbox
and daemon each time: once with ``state`` an SQLite file, once with a ``postgresql://`` URL
(a throwaway local server started by ``tests/postgres_support.py``: ``fsync=off``, as in the
tests — so this measures rerund's side of the database, not a disk's commit latency). Rounds
alternate the order so a drift of the shared machine does not favour one backend.

Reported per backend: reruns/s (sandbox clock, first failure to last rerun), the daemon's CPU
seconds and CPU milliseconds per rerun, duplicates and missing (must be 0), and the PostgreSQL
rate as a share of SQLite's (goal >= 0.8).

Run: nice -n 10 .venv/bin/python bench/bench_state.py [--quick] [--rounds 2]
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path
from statistics import median
from typing import Any

import harness as h
from bench_storm import measure_rerund

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from postgres_support import start_server

N_DEFAULT, N_QUICK = 2000, 200


def run(n: int, rounds: int) -> dict[str, Any]:
    machine = h.machine()
    server = start_server()
    rows: list[dict[str, Any]] = []
    try:
        with h.workdir("state") as tmp:
            for i in range(rounds):
                order = ("sqlite", "postgresql") if i % 2 == 0 else ("postgresql", "sqlite")
                for backend in order:
                    settings: dict[str, Any] = {}
                    if backend == "postgresql":
                        settings["state"] = server.create_database("bench_" + secrets.token_hex(4))
                    work = tmp / f"{backend}-{i}"
                    work.mkdir()
                    row = measure_rerund(work, n, **settings)
                    row["who"] = f"rerund, {backend} state"
                    row["backend"] = backend
                    row["round"] = i + 1
                    row["cpu_ms_per_rerun"] = round(1000 * row["daemon_cpu_s"] / max(1, row["reruns"]), 2)
                    rows.append(row)
    finally:
        server.cleanup()

    def med(backend: str, key: str) -> float:
        return round(float(median(r[key] for r in rows if r["backend"] == backend)), 2)

    share = round(med("postgresql", "reruns_per_s") / med("sqlite", "reruns_per_s"), 3)
    columns = [
        "who",
        "round",
        "failures",
        "reruns",
        "seconds",
        "reruns_per_s",
        "daemon_cpu_s",
        "cpu_ms_per_rerun",
        "duplicates",
        "missing",
    ]
    return {
        "benchmark": "state",
        "what": "N runs fail at once; reruns/s and daemon CPU with the ledger in PostgreSQL vs SQLite",
        "goal": "PostgreSQL state >= 80% of the SQLite state's rate",
        "failures": n,
        "rounds": rounds,
        "postgresql_share_of_sqlite_rate": share,
        "median_reruns_per_s": {b: med(b, "reruns_per_s") for b in ("sqlite", "postgresql")},
        "median_cpu_ms_per_rerun": {b: med(b, "cpu_ms_per_rerun") for b in ("sqlite", "postgresql")},
        "machine": machine,
        "results": rows,
        "table": {"columns": columns, "rows": rows},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    n = N_QUICK if args.quick else N_DEFAULT
    h.emit("state", run(n, args.rounds), write=not args.no_write and not args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
