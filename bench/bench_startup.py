"""Start-up cost of the ``rerund`` commands, side by side with another checkout.

Pre-commit hooks and CI run ``rerund check``/``rerund test`` on every commit, and the test suite
starts hundreds of ``rerund`` processes: what a command imports before it does anything is paid
each time. Measured for each command, whole process from outside (start to exit):

- CPU seconds (user + system of the process, ``os.wait4``) and wall seconds, median of N runs;
- the import time the interpreter reports itself (``python -X importtime``: the sum of the
  top-level imports' cumulative time), median of the same runs' count;
- which heavy packages the process loaded (flyte, the sandbox, SQLAlchemy/psycopg/Alembic, the
  daemon's runtime), from ``sys.modules`` when it exits;
- ``rerund run``: seconds from the process's start to ``/readyz`` 200 against ``rerund sandbox``,
  and the daemon's CPU seconds at that moment.

With ``--before DIR`` (a checkout with its own ``.venv``; default ``/tmp/startup-before`` when it
exists) each run of a command alternates between the two, so a drift of the machine's speed
falls on both sides alike. The inputs (policies, failure file) are this checkout's for both.

    git worktree add /tmp/startup-before main && make -C /tmp/startup-before install
    .venv/bin/python bench/bench_startup.py [--quick] [--before DIR] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import harness as h
import yaml

POLICIES = str(h.REPO / "policies")
FAILURE = str(h.REPO / "policies" / "failures" / "connection-reset.yaml")
COMMANDS: dict[str, list[str]] = {
    "rerund --help": ["--help"],
    "rerund check policies/": ["check", POLICIES],
    "rerund test policies/": ["test", POLICIES],
    "rerund schema": ["schema"],
    "rerund explain --policies --failure": ["explain", "--policies", POLICIES, "--failure", FAILURE],
    "rerund run --help": ["run", "--help"],
}
HEAVY = {
    "flyte": ("flyte",),
    "sandbox": ("rerund.sandbox",),
    "sql": ("sqlalchemy", "psycopg", "alembic"),
    "daemon": ("rerund.runtime.daemon",),
}
DEFAULT_BEFORE = Path("/tmp/startup-before")
_WRAPPER = (
    "import atexit, json, os, sys\n"
    "out = os.environ['RERUND_MODULES_OUT']\n"
    "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted(sys.modules))))\n"
    "from rerund.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
_IMPORT_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$")


def _timed(cmd: Sequence[str], **kwargs: Any) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, exit status) of one run of ``cmd``, its output discarded."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=h.REPO, **kwargs)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, wall, proc.returncode


def _import_ms(python: str, args: Sequence[str]) -> float:
    """The sum of the top-level imports' cumulative microseconds, as ``-X importtime`` reports."""
    err = subprocess.run(
        [python, "-X", "importtime", "-m", "rerund.cli", *args], capture_output=True, text=True, cwd=h.REPO
    ).stderr
    total = sum(int(m.group(1)) for line in err.splitlines() if (m := _IMPORT_LINE.match(line)))
    return total / 1000


def _heavy(python: str, args: Sequence[str]) -> str:
    """The heavy packages (``HEAVY``'s names) a run of ``rerund ARGS`` loaded, or "none"."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "modules.json"
        env = {**os.environ, "RERUND_MODULES_OUT": str(out)}
        subprocess.run([python, "-c", _WRAPPER, *args], capture_output=True, env=env, cwd=h.REPO)
        modules = json.loads(out.read_text()) if out.exists() else []
    found = [
        name
        for name, packages in HEAVY.items()
        if any(m == p or m.startswith(p + ".") for m in modules for p in packages)
    ]
    return "+".join(found) or "none"


def _daemon_ready(rerund: str, sb: h.Sandbox, tmp: Path) -> tuple[float, float]:
    """(seconds from start to /readyz 200, the daemon's CPU seconds then) of one ``rerund run``."""
    tmp.mkdir(parents=True, exist_ok=True)
    policies = tmp / "policies.yaml"
    policies.write_text(h.BENCH_POLICIES)
    port = h.free_port()
    config = tmp / "rerund.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "endpoint": sb.endpoint,
                "org": h.ORG,
                "scopes": [f"{h.PROJECT}/{h.DOMAIN}"],
                "policies": [str(policies)],
                "state": str(tmp / "rerund.db"),
                "http": f"127.0.0.1:{port}",
                "log_level": "WARNING",
            }
        )
    )
    url = f"http://127.0.0.1:{port}/readyz"
    start = time.monotonic()
    with (tmp / "daemon.log").open("ab") as log:
        proc = subprocess.Popen([rerund, "run", "--config", str(config)], stdout=log, stderr=log, cwd=tmp)
    try:
        while proc.poll() is None:
            try:
                if h.http_text(url, timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.01)
        ready = time.monotonic() - start
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited: {(tmp / 'daemon.log').read_text()[-2000:]}")
        cpu = h.proc_usage(proc.pid)["cpu_s"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return ready, cpu


def _median_ms(values: Sequence[float]) -> float:
    return round(statistics.median(values) * 1000)


def run(sides: dict[str, Path], runs: int) -> dict[str, Any]:
    machine = h.machine()
    python = {side: str(root / ".venv" / "bin" / "python") for side, root in sides.items()}
    rows: list[dict[str, Any]] = []
    for label, args in COMMANDS.items():
        cpu: dict[str, list[float]] = {s: [] for s in sides}
        wall: dict[str, list[float]] = {s: [] for s in sides}
        imports: dict[str, list[float]] = {s: [] for s in sides}
        for _ in range(runs):
            for side in sides:  # alternately: before, after, before, after, ...
                c, w, code = _timed([python[side], "-m", "rerund.cli", *args])
                if code != 0:
                    raise RuntimeError(f"{side}: {label} exited {code}")
                cpu[side].append(c)
                wall[side].append(w)
                imports[side].append(_import_ms(python[side], args))
        row: dict[str, Any] = {"command": label}
        for side in sides:
            row[f"cpu_ms_{side}"] = _median_ms(cpu[side])
            row[f"wall_ms_{side}"] = _median_ms(wall[side])
            row[f"import_ms_{side}"] = round(statistics.median(imports[side]))
            row[f"heavy_{side}"] = _heavy(python[side], args)
        rows.append(row)
        print(json.dumps(row), flush=True)
    with h.workdir("startup") as tmp, h.sandbox(tmp) as sb:
        ready: dict[str, list[float]] = {s: [] for s in sides}
        cpu_ready: dict[str, list[float]] = {s: [] for s in sides}
        for i in range(runs):
            for side, root in sides.items():
                r, c = _daemon_ready(str(root / ".venv" / "bin" / "rerund"), sb, tmp / f"{side}-{i}")
                ready[side].append(r)
                cpu_ready[side].append(c)
        row = {"command": "rerund run: start -> /readyz 200"}
        for side in sides:
            row[f"cpu_ms_{side}"] = _median_ms(cpu_ready[side])
            row[f"wall_ms_{side}"] = _median_ms(ready[side])
            row[f"import_ms_{side}"] = None
            row[f"heavy_{side}"] = None
        rows.append(row)
    columns = ["command"] + [f"{k}_{s}" for k in ("cpu_ms", "wall_ms", "import_ms", "heavy") for s in sides]
    return {
        "benchmark": "startup",
        "runs": runs,
        "sides": {side: {"path": str(root), "commit": _commit(root)} for side, root in sides.items()},
        "machine": machine,
        "results": rows,
        "table": {"columns": columns, "rows": rows},
    }


def _commit(root: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="2 runs each; writes nothing")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--before", type=Path, help=f"a checkout with its .venv (default {DEFAULT_BEFORE})")
    args = p.parse_args(argv)
    before = args.before or (DEFAULT_BEFORE if (DEFAULT_BEFORE / ".venv").exists() else None)
    sides = ({"before": before} if before else {}) | {"after": h.REPO}
    runs = 2 if args.quick else args.runs
    h.emit("startup", run(sides, runs), write=not args.no_write and not args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
