"""Failover time: two ``rerund run`` replicas on one PostgreSQL state against the sandbox; the
leader is SIGKILLed and a run fails at the same moment; measured: seconds from the SIGKILL to
(a) the follower reporting ``rerund_leader 1`` and (b) the rerun of that failure created by it
(the sandbox's run list, polled every 20 ms). The killed replica is restarted as a follower
each time, as its supervisor would. Goal (issue 25): p99 of (b) <= 5 s.

Run: .venv/bin/python bench/bench_failover.py [--kills 20]
Prints JSON and a table; writes bench/results/failover.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))

import harness as h  # noqa: E402

from daemon_support import DaemonProcess, total  # noqa: E402
from postgres_support import start_server  # noqa: E402
from rerund.sandbox.testing import start_sandbox  # noqa: E402

WORKLOAD = {
    "tasks": {
        "fo.flaky": {
            "duration": "0.05s",
            "behaviour": ["fail", "succeed"],
            "error": {
                "kind": "SYSTEM",
                "code": "ConnectionResetError",
                "message": "ConnectionResetError: reset",
            },
        }
    }
}
POLICIES = """\
apiVersion: rerund/v1
defaults: {max_attempts: 3, backoff: {initial: 10ms, factor: 1, max: 10ms, jitter: 0}}
policies:
  - name: transient
    match: {error: {kinds: [SYSTEM]}}
    retry: {scope: run}
"""


def _wait(what: str, check: Any, timeout: float = 120.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


def _leading(p: DaemonProcess) -> bool:
    return p.alive() and total(p.metrics(), "rerund_leader") == 1.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    args = ap.parse_args()
    pg = start_server()
    tmp = Path(tempfile.mkdtemp(prefix="rerund-failover-"))
    policy_file = tmp / "policies.yaml"
    policy_file.write_text(POLICIES)
    took_lead: list[float] = []
    first_rerun: list[float] = []
    try:
        url = pg.create_database("failover")
        with start_sandbox(workload=WORKLOAD, time_scale=1.0) as sb:
            extra = {"state": url}
            procs = [
                DaemonProcess(tmp / n, sb, policy_file, name=n, extra=extra, poll_interval="30s")
                for n in "ab"
            ]
            for p in procs:
                p.start()
            try:
                for _ in range(args.kills):
                    _wait("one leader", lambda: sum(_leading(p) for p in procs) == 1)
                    leader = next(p for p in procs if _leading(p))
                    follower = next(p for p in procs if p is not leader)
                    time.sleep(1.0)  # both warm
                    t0 = time.monotonic()
                    leader.kill()
                    [failed] = sb.launch("fo.flaky")
                    led: list[float] = []

                    def rerun_exists(name: str = failed) -> bool:
                        if not led and _leading(follower):
                            led.append(time.monotonic() - t0)
                        return any(r.get("labels", {}).get("rerund-root") == name for r in sb.runs())

                    _wait("the new leader's rerun", rerun_exists)
                    first_rerun.append(time.monotonic() - t0)
                    _wait("the new leader's metric", lambda: _leading(follower))
                    took_lead.append(led[0] if led else time.monotonic() - t0)
                    leader.start()  # back as a follower
            finally:
                for p in procs:
                    if p.alive():
                        p.terminate(timeout=15)
    finally:
        pg.cleanup()
    result = {
        "benchmark": "failover",
        "machine": h.machine(),
        "kills": args.kills,
        "sigkill_to_new_leader_s": h.summarize(took_lead, 2),
        "sigkill_to_first_rerun_s": h.summarize(first_rerun, 2),
    }
    print(json.dumps(result, indent=2))
    rows = [
        ["SIGKILL -> follower leads", *(result["sigkill_to_new_leader_s"][k] for k in ("p50", "p99", "max"))],
        [
            "SIGKILL -> its first rerun",
            *(result["sigkill_to_first_rerun_s"][k] for k in ("p50", "p99", "max")),
        ],
    ]
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    h.RESULTS.mkdir(exist_ok=True)
    (h.RESULTS / "failover.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
