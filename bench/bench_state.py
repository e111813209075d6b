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

``--before DIR`` adds a third daemon per round: the PostgreSQL state run by another checkout's
package (``DIR``: its ``daemon`` folder, e.g. ``git archive <commit> daemon | tar -x``), put first
on the daemon's ``PYTHONPATH`` — a change's before and after side by side, on the same machine
and load, with SQLite as the control.

Run: nice -n 10 .venv/bin/python bench/bench_state.py [--quick] [--rounds 2]
     [--before DIR --before-label TEXT]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median
from typing import Any

import harness as h
from bench_storm import measure_rerund

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from postgres_support import start_server

N_DEFAULT, N_QUICK = 2000, 200


@contextmanager
def _package(before: str | None) -> Iterator[None]:
    """The daemons started inside run the package in ``before`` (None: this checkout's)."""
    if before is None:
        yield
        return
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = before + (os.pathsep + saved if saved else "")
    try:
        yield
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved


def run(n: int, rounds: int, before: str | None = None, before_label: str = "before") -> dict[str, Any]:
    machine = h.machine()
    server = start_server()
    rows: list[dict[str, Any]] = []
    backends = ["sqlite", "postgresql"] + (["postgresql-before"] if before else [])
    try:
        with h.workdir("state") as tmp:
            for i in range(rounds):
                order = backends[i % len(backends) :] + backends[: i % len(backends)]
                for backend in order:
                    settings: dict[str, Any] = {}
                    if backend.startswith("postgresql"):
                        settings["state"] = server.create_database("bench_" + secrets.token_hex(4))
                    work = tmp / f"{backend}-{i}"
                    work.mkdir()
                    with _package(before if backend == "postgresql-before" else None):
                        row = measure_rerund(work, n, **settings)
                    row["who"] = (
                        f"rerund, postgresql state ({before_label})"
                        if backend == "postgresql-before"
                        else f"rerund, {backend} state"
                    )
                    row["backend"] = backend
                    row["round"] = i + 1
                    row["cpu_ms_per_rerun"] = round(1000 * row["daemon_cpu_s"] / max(1, row["reruns"]), 2)
                    rows.append(row)
    finally:
        server.cleanup()

    def med(backend: str, key: str) -> float:
        return round(float(median(r[key] for r in rows if r["backend"] == backend)), 2)

    share = round(med("postgresql", "reruns_per_s") / med("sqlite", "reruns_per_s"), 3)
    extra: dict[str, Any] = {}
    if before:
        extra["before"] = before_label
        extra["before_share_of_sqlite_rate"] = round(
            med("postgresql-before", "reruns_per_s") / med("sqlite", "reruns_per_s"), 3
        )
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
        **extra,
        "median_reruns_per_s": {b: med(b, "reruns_per_s") for b in backends},
        "median_cpu_ms_per_rerun": {b: med(b, "cpu_ms_per_rerun") for b in backends},
        "machine": machine,
        "results": rows,
        "table": {"columns": columns, "rows": rows},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--before", help="another checkout's daemon folder, run as a third daemon per round")
    p.add_argument("--before-label", default="before")
    args = p.parse_args(argv)
    n = N_QUICK if args.quick else N_DEFAULT
    h.emit(
        "state",
        run(n, args.rounds, args.before, args.before_label),
        write=not args.no_write and not args.quick,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
