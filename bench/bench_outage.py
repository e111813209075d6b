"""An outage over many failing runs: the outage breaker on against off, side by side.

The object store of task ``bench.store`` fails every execution with ``503 SlowDown`` for
``--outage`` seconds (the sandbox's ``POST /_sandbox/outages``); N runs of it are launched into
the outage at once. The policy reruns them with a 3-attempt exponential backoff (5 s, 10 s,
20 s: all three inside a 60 s outage). With ``incidents:`` (10 failures within 1 m open an
incident; one canary every 10 s) the daemon holds the reruns and releases them when a canary
succeeds; without it every lineage spends its attempts against the outage.

Reported per mode: lineages recovered and exhausted, reruns spent (canaries apart), reruns
per lineage, canaries, seconds from the outage's end to the last lineage recovered, and
duplicates (two reruns of one lineage attempt: must be 0). Goal (issue 27): breaker on, every
lineage recovered with <= 1.05 reruns per lineage plus the canaries; breaker off, most exhaust.

Run: nice -n 10 .venv/bin/python bench/bench_outage.py [--quick]   (about 4 minutes; --quick:
60 failures into a 15 s outage)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import harness as h

_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
TASKS: dict[str, Any] = {"bench.store": {"duration": "1s"}}
SLOWDOWN = {"kind": "SYSTEM", "code": "SlowDown", "message": "503 SlowDown: Please reduce your request rate."}
POLICY = """\
apiVersion: rerund/v1
defaults:
  max_attempts: 3
  backoff: {initial: 5s, factor: 2, max: 1m, jitter: 0.2}
policies:
  - name: object-store
    match: {error: {codes: [SlowDown]}}
    retry: {scope: run}
"""
BREAKER = """\
incidents:
  open: {failures: 10, within: 1m}
  probe_every: %s
"""


def _lineages(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        out.setdefault(r["labels"].get("rerund-root") or r["name"], []).append(r)
    for rs in out.values():
        rs.sort(key=lambda r: int(r["labels"].get("rerund-attempt", "0")))
    return out


def _canaries(lineages: dict[str, list[dict[str, Any]]]) -> int:
    n = 0
    for rs in lineages.values():
        before = 0
        for r in rs:
            count = int(r["labels"].get("rerund-canaries", "0"))
            n += count > before
            before = count
    return n


def _settled(sb: h.Sandbox, quiet: float, timeout: float) -> list[dict[str, Any]]:
    """The runs once every run is terminal and none appeared for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        runs = sb.runs()
        if len(runs) != last or any(r["phase"] not in _TERMINAL for r in runs):
            last, since = len(runs), time.monotonic()
        elif time.monotonic() - since >= quiet:
            return runs
        time.sleep(1.0)
    raise TimeoutError("the runs did not settle")


def scenario(tmp: Path, *, breaker: bool, failures: int, outage: float, probe_every: str) -> dict[str, Any]:
    policies = POLICY + (BREAKER % probe_every if breaker else "")
    work = tmp / ("sandbox-on" if breaker else "sandbox-off")
    work.mkdir(parents=True, exist_ok=True)
    with (
        h.sandbox(work, TASKS) as sb,
        h.daemon(tmp, sb, policies=policies, name="on" if breaker else "off", poll_interval="2s") as d,
    ):
        placed = h.http_json(
            f"{sb.endpoint}/_sandbox/outages",
            {"tasks": ["bench.*"], "for": f"{outage:g}s", "error": SLOWDOWN},
        )
        ends = datetime.fromisoformat(placed["ends_at"].replace("Z", "+00:00")).timestamp()
        sources = sb.launch("bench.store", failures)
        runs = _settled(sb, quiet=25.0, timeout=outage * 4 + 300)
        metrics = d.metrics()
    lineages = {k: v for k, v in _lineages(runs).items() if k in set(sources)}
    recovered = [rs for rs in lineages.values() if rs[-1]["phase"] == "SUCCEEDED"]
    reruns = sum(len(rs) - 1 for rs in lineages.values())
    canaries = _canaries(lineages)
    claims = Counter(
        (r["labels"].get("rerund-root"), r["labels"].get("rerund-attempt"))
        for rs in lineages.values()
        for r in rs[1:]
    )
    last_ok = max((h.ts(rs[-1]["updated_at"]) for rs in recovered), default=None)
    return {
        "mode": "breaker on" if breaker else "breaker off",
        "failures": failures,
        "recovered": len(recovered),
        "exhausted": len(lineages) - len(recovered),
        "reruns": reruns,
        "canaries": canaries,
        "reruns_per_lineage": round((reruns - canaries) / max(1, failures), 3),
        "recovered_s_after_outage": round(last_ok - ends, 1) if last_ok is not None else None,
        "duplicates": sum(n - 1 for n in claims.values() if n > 1),
        "exhausted_total_metric": sum(
            v for k, v in metrics.items() if k.startswith("rerund_lineages_exhausted_total")
        ),
    }


def run(*, failures: int = 500, outage: float = 60.0, probe_every: str = "10s") -> dict[str, Any]:
    rows = []
    with h.workdir("outage") as tmp:
        for breaker in (True, False):
            rows.append(
                scenario(tmp, breaker=breaker, failures=failures, outage=outage, probe_every=probe_every)
            )
    columns = [
        "mode", "failures", "recovered", "exhausted", "reruns", "canaries", "reruns_per_lineage",
        "recovered_s_after_outage", "duplicates",
    ]  # fmt: skip
    return {
        "benchmark": "outage",
        "scenario": f"{failures} runs fail in a {outage:g} s outage; 3 attempts, backoff 5s x2; "
        f"incidents: 10 failures within 1m, probe every {probe_every}",
        "goal": "breaker on: every lineage recovered, <= 1.05 reruns per lineage plus canaries; "
        "off: most exhaust",
        "machine": h.machine(),
        "table": {"columns": columns, "rows": rows},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="60 failures into a 15 s outage")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    doc = run(failures=60, outage=15.0, probe_every="3s") if args.quick else run()
    h.emit("outage", doc, write=not args.no_write and not args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
