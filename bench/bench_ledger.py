"""Ledger bytes per ignored failure: the SQLite ledger's size over the failures it recorded.

Two measurements:

- ``ledger: <schema>`` — N ignored failures recorded straight into a fresh ledger file the way
  the daemon records them (``record_failure`` + ``record_decision`` of an ``Ignore``, group
  commits every 50 rows), with today's ``Ledger`` and with the ``Ledger`` of the commit before
  compaction (``BASELINE``, loaded from git), side by side; the file after a WAL checkpoint, and
  its bytes per table and index (SQLite's ``dbstat``).
- ``daemon`` — a daemon (default settings) against a sandbox handling N failures of a task the
  bench policy ignores: the ledger file plus its WAL as the daemon leaves it running, and
  after a checkpoint.

Goal (issue 24): at most 500 bytes per ignored failure.

Run: .venv/bin/python bench/bench_ledger.py [--quick]
"""

from __future__ import annotations

import importlib.util
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import harness as h

N_DEFAULT, N_QUICK = 10_000, 1000
BASELINE = "c0b26ba"  # main before issue 24's compact ledger
GOAL = 500


def _ledger_class(commit: str | None) -> Any:
    if commit is None:
        from rerund.adapters.ledger import Ledger

        return Ledger
    source = subprocess.run(
        ["git", "-C", str(h.REPO), "show", f"{commit}:daemon/rerund/adapters/ledger.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="rerund-bench-ledger-")) / f"ledger_{commit}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"ledger_{commit}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.Ledger


def _checkpointed(path: Path) -> tuple[int, dict[str, int]]:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        parts = {str(n): int(b) for n, b in db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")}
    return path.stat().st_size, parts


def measure_direct(n: int, commit: str | None) -> dict[str, Any]:
    from rerund.core.model import Ignore
    from rerund.core.redact import public_decision

    ledger_class = _ledger_class(commit)
    with h.workdir("ledger") as tmp:
        path = tmp / "rerund.db"
        pending: list[Any] = []
        ledger = ledger_class(path)
        ledger.group_commits(pending.append)
        start = datetime(2026, 12, 1, tzinfo=UTC)
        for i in range(n):
            run = f"r{(i * 2654435761) % 2**32:08x}{i:06d}xyzab"  # 20 characters, random order
            at = start + timedelta(milliseconds=37 * i)
            ledger.record_failure(project=h.PROJECT, domain=h.DOMAIN, run=run, failed_at=at, now=at)
            reason = f"policy 'ignore-bad-input' never reruns run {run!r} (retry: false)"
            decision = Ignore(policy="ignore-bad-input", reason=reason, source_run=run, root=run)
            ledger.record_decision(
                project=h.PROJECT,
                domain=h.DOMAIN,
                run=run,
                root=run,
                decision=public_decision(decision.to_json()),
                now=at,
            )
            if i % 50 == 49:
                ledger.flush()
        ledger.close()
        size, parts = _checkpointed(path)
    top = sorted(parts.items(), key=lambda kv: -kv[1])[:6]
    return {
        "who": f"ledger: {'today' if commit is None else commit + ' (before)'}",
        "failures": n,
        "file_bytes": size,
        "bytes_per_failure": round(size / n),
        "largest": ", ".join(f"{name} {b / n:.0f}" for name, b in top),
    }


def measure_daemon(n: int) -> dict[str, Any]:
    wave = 500
    with h.workdir("ledger-daemon") as tmp, h.sandbox(tmp) as sb, h.daemon(tmp, sb, name="ledger") as d:
        for done in range(0, n, wave):
            sb.launch("bench.ignored", count=min(wave, n - done))
            target = min(done + wave, n)
            h.wait_until(
                f"{target} failures handled",
                lambda t=target: d.total("rerund_failures_observed_total") >= t,
                timeout=900,
                interval=0.5,
            )
        time.sleep(1.0)  # a group commit flushes
        live = int(d.total("rerund_ledger_bytes"))
        size, parts = _checkpointed(d.state)
    top = sorted(parts.items(), key=lambda kv: -kv[1])[:6]
    return {
        "who": "daemon (today)",
        "failures": n,
        "live_bytes": live,
        "file_bytes": size,
        "bytes_per_failure": round(size / n),
        "live_bytes_per_failure": round(live / n),
        "largest": ", ".join(f"{name} {b / n:.0f}" for name, b in top),
    }


def run(quick: bool = False) -> dict[str, Any]:
    machine = h.machine()
    n = N_QUICK if quick else N_DEFAULT
    rows = [measure_direct(n, BASELINE), measure_direct(n, None), measure_daemon(min(n, 3000))]
    today = rows[1]["bytes_per_failure"]
    return {
        "benchmark": "ledger",
        "what": "ledger bytes per ignored failure: before/after compaction, and as a daemon leaves it",
        "goal": f"at most {GOAL} bytes per ignored failure",
        "failures": n,
        "quick": quick,
        "bytes_per_failure_before": rows[0]["bytes_per_failure"],
        "bytes_per_failure": today,
        "goal_met": today <= GOAL,
        "machine": machine,
        "results": rows,
        "table": {
            "columns": [
                "who",
                "failures",
                "file_bytes",
                "bytes_per_failure",
                "live_bytes_per_failure",
                "largest",
            ],
            "rows": rows,
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = h.cli_args(argv)
    h.emit("ledger", run(quick=args.quick), write=not args.no_write and not args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
