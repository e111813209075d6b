"""Shared parts of the benchmarks: the sandbox and the daemon as separate processes, their CPU
seconds and peak RSS from /proc, the machine description, percentiles, tables and results.

Every benchmark runs the sandbox control plane (``rerund sandbox``) and the daemon
(``rerund run``) as two subprocesses talking real HTTP, so the daemon's CPU and memory are its
own. The sandbox is driven through its admin endpoint (``/_sandbox/``): launching runs, reading
runs and RPC counters.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
BIN = Path(sys.executable).parent
RERUND = str(BIN / "rerund")
FLYTE = str(BIN / "flyte")
ORG, PROJECT, DOMAIN = "sandbox", "bench", "development"
_TICK = os.sysconf("SC_CLK_TCK")


# -- numbers ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarize(values: Sequence[float], digits: int = 1) -> dict[str, Any]:
    """n, median, p99, min, max of ``values`` (rounded)."""
    if not values:
        return {"n": 0, "p50": None, "p99": None, "min": None, "max": None}
    return {
        "n": len(values),
        "p50": round(statistics.median(values), digits),
        "p99": round(percentile(values, 99), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


# -- the machine -----------------------------------------------------------------------------


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


def machine() -> dict[str, Any]:
    """What the numbers were measured on (include it in every result)."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "flyte": _version("flyte"),
        "flyteidl2": _version("flyteidl2"),
        "rerund_commit": _git("rev-parse", "--short", "HEAD"),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "shared": "2 cores shared with other workloads: figures are noisy",
        "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def finish(doc: dict[str, Any]) -> dict[str, Any]:
    doc.setdefault("machine", {})["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return doc


# -- processes -------------------------------------------------------------------------------


def proc_usage(pid: int) -> dict[str, float]:
    """CPU seconds (user+system) and RSS / peak RSS (MiB) of a live process from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {"cpu_s": math.nan, "rss_mib": math.nan, "peak_rss_mib": math.nan}
    utime, stime = int(fields[11]), int(fields[12])
    kb = {
        line.split(":")[0]: int(line.split()[1])
        for line in status.splitlines()
        if line.startswith(("VmRSS", "VmHWM"))
    }
    return {
        "cpu_s": round((utime + stime) / _TICK, 2),
        "rss_mib": round(kb.get("VmRSS", 0) / 1024, 1),
        "peak_rss_mib": round(kb.get("VmHWM", 0) / 1024, 1),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, body: Any = None, timeout: float = 60.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def http_text(url: str, timeout: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    """Poll ``check`` until true; returns the seconds waited; raises TimeoutError naming ``what``."""
    start = time.monotonic()
    while True:
        with contextlib.suppress(OSError, ValueError, KeyError):
            if check():
                return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, n: int = 4000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-n:]
    return ""


def workload_file(tmp: Path, tasks: Mapping[str, Any]) -> Path:
    path = tmp / "workload.yaml"
    path.write_text(yaml.safe_dump({"project": PROJECT, "domain": DOMAIN, "tasks": dict(tasks)}))
    return path


# The bench policies: one task whose failures are rerun at once (no backoff, at most one
# rerun: its second execution succeeds) and one whose failures are ignored.
BENCH_TASKS: dict[str, Any] = {
    "bench.flaky": {
        "behaviour": ["fail", "succeed"],
        "error": {"kind": "SYSTEM", "code": "ConnectionResetError", "message": "connection reset by peer"},
    },
    "bench.ignored": {
        "behaviour": ["fail"],
        "error": {"kind": "USER", "code": "ValueError", "message": "ValueError: bad input"},
    },
}
BENCH_POLICIES = """\
apiVersion: rerund/v1
defaults:
  max_attempts: 3
  backoff: {initial: 0s, factor: 1, max: 0s, jitter: 0}
policies:
  - name: ignore-bad-input
    match: {tasks: [bench.ignored]}
    retry: false
  - name: rerun-flaky
    match: {tasks: [bench.flaky]}
    retry: {scope: run}
"""


@dataclass
class Sandbox:
    """``rerund sandbox`` in a subprocess, driven through ``/_sandbox/``."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    flyte_config: Path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self, task: str, count: int = 1, labels: Mapping[str, str] | None = None) -> list[str]:
        body = {"task": task, "count": count, "labels": dict(labels or {})}
        names: list[str] = http_json(f"{self.endpoint}/_sandbox/runs", body)["runs"]
        return names

    def runs(self) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = http_json(f"{self.endpoint}/_sandbox/runs", timeout=120)
        return runs

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = http_json(f"{self.endpoint}/_sandbox/stats")
        return stats

    def rates(self) -> dict[str, Any]:
        """RPCs the sandbox served per whole second (``GET /_sandbox/rates``)."""
        rates: dict[str, Any] = http_json(f"{self.endpoint}/_sandbox/rates")
        return rates

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = self.stats()["requests"]
        return counts

    def usage(self) -> dict[str, float]:
        return proc_usage(self.proc.pid)


@contextlib.contextmanager
def sandbox(
    tmp: Path,
    tasks: Mapping[str, Any] | None = None,
    db: str = ":memory:",
    profile: str = "union",
    error_delay: str = "0s",
    args: Sequence[str] = (),
) -> Iterator[Sandbox]:
    """Start ``rerund sandbox`` on a free port with ``tasks`` (default ``BENCH_TASKS``);
    ``profile`` ``oss`` imitates open-source Flyte 2 (error details after ``error_delay``);
    ``args`` are extra flags (e.g. ``--fault-latency 50ms``, ``--rate-limit 100/s``)."""
    port = free_port()
    log = tmp / f"sandbox-{port}.log"
    config = tmp / f"flyte-{port}.yaml"
    cmd = [RERUND, "sandbox", "--port", str(port), "--db", db, "--flyte-config", str(config), *args]
    cmd += ["--profile", profile] + (["--error-delay", error_delay] if profile == "oss" else [])
    cmd += ["--workload", str(workload_file(tmp, tasks if tasks is not None else BENCH_TASKS))]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    sb = Sandbox(proc, port, log, config)
    try:
        wait_until("the sandbox to serve", lambda: proc.poll() is None and bool(sb.stats()), 60, interval=0.1)
    except TimeoutError:
        _stop(proc)
        raise RuntimeError(f"the sandbox did not start:\n{_tail(log)}") from None
    try:
        yield sb
    finally:
        _stop(proc)


@dataclass
class Daemon:
    """``rerund run`` in a subprocess."""

    proc: subprocess.Popen[bytes]
    http: str
    log: Path
    state: Path
    settings: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as {sample name with labels: value}."""
        from prometheus_client.parser import text_string_to_metric_families

        _, body = http_text(f"{self.http}/metrics")
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(body):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def total(self, name: str) -> float:
        return sum(v for k, v in self.metrics().items() if k == name or k.startswith(name + "{"))

    def usage(self) -> dict[str, float]:
        return proc_usage(self.proc.pid)

    def logs(self) -> str:
        return _tail(self.log)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


@contextlib.contextmanager
def daemon(
    tmp: Path,
    sb: Sandbox,
    *,
    policies: str = BENCH_POLICIES,
    name: str = "rerund",
    wait_ready: bool = True,
    **settings: Any,
) -> Iterator[Daemon]:
    """Start ``rerund run`` against ``sb``; extra keyword arguments are settings
    (``watch=False``, ``poll_interval="1s"``, ``max_concurrent_reruns=8``, ...)."""
    work = tmp / name
    work.mkdir(parents=True, exist_ok=True)
    policy_file = work / "policies.yaml"
    policy_file.write_text(policies)
    port = free_port()
    conf: dict[str, Any] = {
        "endpoint": sb.endpoint,
        "org": ORG,
        "scopes": [f"{PROJECT}/{DOMAIN}"],
        "policies": [str(policy_file)],
        "state": str(work / "rerund.db"),
        "http": f"127.0.0.1:{port}",
        "poll_interval": "30s",
        "lookback": "1h",
        "log_level": "WARNING",
        **settings,
    }
    config = work / "rerund.yaml"
    config.write_text(yaml.safe_dump(conf))
    log = work / "daemon.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [RERUND, "run", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT, cwd=work
        )
    d = Daemon(proc, f"http://127.0.0.1:{port}", log, Path(conf["state"]), conf)
    try:
        if wait_ready:
            wait_until(
                "the daemon's /readyz",
                lambda: proc.poll() is None and http_text(f"{d.http}/readyz")[0] == 200,
                60,
                interval=0.1,
            )
    except TimeoutError:
        _stop(proc)
        raise RuntimeError(f"the daemon did not become ready:\n{d.logs()}") from None
    try:
        yield d
    finally:
        _stop(proc)


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"rerund-bench-{prefix}-") as tmp:
        yield Path(tmp)


def reruns_of(runs: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Source run name -> the runs created as its reruns."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        rel = r.get("relation")
        if rel:
            out.setdefault(rel["run"], []).append(r)
    return out


def storm_outcome(sb: Sandbox, sources: Iterable[str]) -> dict[str, Any]:
    """First failure -> last rerun created, on the sandbox clock; reruns, duplicates, missing."""
    sources = list(sources)
    runs = sb.runs()
    by_name = {r["name"]: r for r in runs}
    reruns = reruns_of(runs)
    first_fail = min(ts(by_name[s]["updated_at"]) for s in sources)
    created = [ts(r["created_at"]) for s in sources for r in reruns.get(s, [])]
    return {
        "reruns": len(created),
        "missing": sum(1 for s in sources if s not in reruns),
        "duplicates": sum(len(reruns[s]) - 1 for s in sources if len(reruns.get(s, [])) > 1),
        "seconds": round(max(created) - first_fail, 2) if created else None,
    }


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# -- output ----------------------------------------------------------------------------------


def table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of ``rows`` (dicts) in ``columns`` order."""

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def markdown(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)

    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---:" for _ in columns) + "|"]
    out += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(out)


def emit(name: str, doc: dict[str, Any], *, write: bool = True) -> dict[str, Any]:
    """Print ``doc`` as JSON and its table; write ``bench/results/<name>.json``."""
    finish(doc)
    text = json.dumps(doc, indent=2, default=str)
    if write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{name}.json").write_text(text + "\n")
    print(text)
    t = doc.get("table")
    if t:
        print()
        print(table(t["columns"], t["rows"]))
    return doc


def cli_args(argv: Sequence[str] | None = None) -> Any:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="a reduced size for development")
    p.add_argument("--long", action="store_true", help="the longer variant (not run by make bench)")
    p.add_argument("--no-write", action="store_true", help="print only; do not write bench/results/")
    return p.parse_args(argv)
