"""Side by side with the obvious alternative: a cron-style script over the ``flyte`` CLI.

``bench/cron_rerun.sh`` is what a user would write: ``flyte get run --in-phase failed``, then
``flyte rerun <run> --name ...`` per failed run not yet in its done-file. Both it and rerund
face the same storm of N failed runs on a fresh sandbox process each, and both are crashed
once: SIGKILL right after the control plane served their (N/2)-th CreateRun — the worst moment,
when a rerun exists but its creator has not recorded it yet — then started again (the script
after 1.1 s, as the next cron tick would; rerund at once, with its ledger). Measured:

- seconds from the first failure to the last owed rerun created (sandbox clock). The script
  starts when every run has failed (no wait for a cron tick: its best case); rerund is running
  when the storm arrives;
- CPU seconds of everything each side ran (the script: bash, jq and every ``flyte`` process;
  rerund: the daemon processes, start-up of the restarted one included);
- duplicates: failed runs with more than one rerun; missing: failed runs with none.

The script names reruns ``<run>-<unix time>`` by default; with ``deterministic`` naming
(``<run>-retry``, "already exists" counted as done) it is measured on a smaller storm.
rerund is also measured without a crash.

Run: .venv/bin/python bench/bench_cron.py [--quick]
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness as h

SCRIPT = h.BENCH / "cron_rerun.sh"
N_DEFAULT, N_DETERMINISTIC, N_QUICK = 200, 10, 6


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _kill_at(sb: h.Sandbox, creates: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """SIGKILL ``proc``'s process group once the sandbox served ``creates`` CreateRuns."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if sb.counts().get("CreateRun", 0) >= creates:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.01)
    return False


def measure_script(tmp: Path, n: int, naming: str, crash: bool = True) -> dict[str, Any]:
    with h.sandbox(tmp) as sb:
        sources = sb.launch("bench.flaky", count=n)
        h.wait_until(f"{n} failures", lambda: sb.stats()["runs"].get("FAILED", 0) >= n, 60, 0.1)
        done = tmp / f"done-{naming}-{n}.txt"
        env = {**os.environ, "FLYTE": h.FLYTE, "PATH": f"{h.BIN}:{os.environ.get('PATH', '')}"}
        cmd = ["bash", str(SCRIPT), str(sb.flyte_config), str(done), naming]
        cpu0 = _children_cpu()
        start = time.monotonic()
        crashed = False
        proc = subprocess.Popen(cmd, env=env, cwd=tmp, start_new_session=True, stderr=subprocess.PIPE)
        if crash:
            crashed = _kill_at(sb, n // 2, proc, timeout=600)
            if crashed:
                time.sleep(1.1)
                proc = subprocess.Popen(cmd, env=env, cwd=tmp, start_new_session=True, stderr=subprocess.PIPE)
        _, err = proc.communicate(timeout=900)
        wall = time.monotonic() - start
        cpu = _children_cpu() - cpu0
        result = h.storm_outcome(sb, sources)
    return {
        "who": f"cron script ({naming} names)",
        "failures": n,
        "crashed": crashed,
        **result,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "stderr_tail": err.decode(errors="replace")[-300:] if err else "",
    }


def measure_rerund(tmp: Path, n: int, crash: bool) -> dict[str, Any]:
    name = f"rerund-{'crash' if crash else 'clean'}-{n}"
    with h.sandbox(tmp) as sb:
        cpu = 0.0
        crashed = False
        with h.daemon(tmp, sb, name=name) as d:
            before = d.usage()["cpu_s"]
            start = time.monotonic()
            sources = sb.launch("bench.flaky", count=n)
            if crash:
                last = before
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and sb.counts().get("CreateRun", 0) < n // 2:
                    last = d.usage()["cpu_s"]
                    time.sleep(0.005)
                d.kill()
                crashed = True
                cpu += last - before
            else:
                h.wait_until("all reruns", lambda: sum(sb.stats()["runs"].values()) >= 2 * n, 300, 0.1)
                cpu += d.usage()["cpu_s"] - before
        if crash:
            with h.daemon(tmp, sb, name=name, wait_ready=False) as d2:
                h.wait_until("all reruns", lambda: sum(sb.stats()["runs"].values()) >= 2 * n, 300, 0.1)
                time.sleep(0.3)
                cpu += d2.usage()["cpu_s"]
        wall = time.monotonic() - start
        result = h.storm_outcome(sb, sources)
    return {
        "who": "rerund (crash + restart)" if crash else "rerund (no crash)",
        "failures": n,
        "crashed": crashed,
        **result,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
    }


def run(quick: bool = False, n: int | None = None, n_deterministic: int | None = None) -> dict[str, Any]:
    machine = h.machine()  # before measuring: its load average is the one at the start
    size = n if n is not None else (N_QUICK if quick else N_DEFAULT)
    det = n_deterministic if n_deterministic is not None else (N_QUICK if quick else N_DETERMINISTIC)
    with h.workdir("cron") as tmp:
        rows = [
            measure_script(tmp, size, "timestamped"),
            measure_script(tmp, det, "deterministic"),
            measure_rerund(tmp, size, crash=True),
            measure_rerund(tmp, size, crash=False),
        ]
    script, ours = rows[0], rows[2]
    ratios = {
        "seconds": round(script["seconds"] / ours["seconds"], 1) if ours["seconds"] else None,
        "cpu_s": round(script["cpu_s"] / ours["cpu_s"], 1) if ours["cpu_s"] else None,
    }
    columns = ["who", "failures", "crashed", "seconds", "wall_s", "cpu_s", "reruns", "duplicates", "missing"]
    return {
        "benchmark": "cron",
        "what": "cron-style flyte CLI script vs rerund on the same storm, each SIGKILLed once mid-way",
        "failures": size,
        "ratio_script_over_rerund": ratios,
        "quick": quick,
        "machine": machine,
        "results": rows,
        "table": {"columns": columns, "rows": rows},
    }


def main(argv: list[str] | None = None) -> int:
    args = h.cli_args(argv)
    h.emit("cron", run(quick=args.quick), write=not args.no_write and not args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
