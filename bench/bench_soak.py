"""Soak: the daemon for ``SOAK_MINUTES`` (default 30) at ~6 failures/s with faults, reporting what
its cost does over time.

One sandbox and one daemon process (``rerund sandbox --db``, ``rerund run``; poll 5 s, watch on,
default settings otherwise). The driver launches ``RATE`` runs a second of four kinds of
failure, each with its policy:

- ``soak.flaky`` — SYSTEM ConnectionResetError, recovers on the first rerun (rerun at once);
- ``soak.user`` — USER ValueError, never rerun (ignored: what an ignored failure costs);
- ``soak.timeout`` — TIMED_OUT, rerun after a 2 s backoff, recovers;
- ``soak.gpu`` — a hardware GPU fault (Xid 79), recover-rerun, fails twice: gives up after 2.

A reproduction check fires every minute (``soak.report``, outputs compared exactly). Faults,
at fixed shares of the duration: 200 ms on every RPC (10%-25%), 30% UNAVAILABLE for
``min(3 min, 10%)`` (40%-), WatchRuns streams dropped after 200 messages throughout, a SIGKILL
of the daemon and a restart (55%), a sandbox restart on its database (70%), six hot reloads
(SIGHUP after rewriting the policy file) spread over the run.

Reported per window (``SOAK_WINDOW_S``; 300 s, or 60 s for a run shorter than 15 minutes):
failures observed, the daemon's CPU ms per failure, RSS, ledger bytes per failure so far and
the slowest ``/healthz`` (probed every 0.5 s, 2 s timeout); per hot reload, the seconds until
the reload was counted (``rerund_policy_reloads_total``, polled every 50 ms), the daemon's CPU
seconds in the 5 s after it and the slowest ``/healthz`` then. At the end: duplicates and
flaky failures without a rerun (must be 0), USER failures rerun (must be 0).

Goals (issue 24): the last window's CPU per failure within 20% of the first's; RSS flat after
warm-up; no ``/healthz`` slower than 100 ms; a hot reload <= 1 s; ledger <= 500 bytes per
ignored failure.

Run: SOAK_MINUTES=6 .venv/bin/python bench/bench_soak.py   (make soak: 30 minutes)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import harness as h
import yaml

RATE = 6  # failures launched per second
KINDS = ("soak.flaky", "soak.user", "soak.timeout", "soak.gpu", "soak.flaky", "soak.user")
TASKS: dict[str, Any] = {
    "soak.flaky": {
        "duration": "0.2s",
        "behaviour": ["fail", "succeed"],
        "error": {"kind": "SYSTEM", "code": "ConnectionResetError", "message": "connection reset by peer"},
    },
    "soak.user": {
        "duration": "0.2s",
        "behaviour": ["fail"],
        "error": {"kind": "USER", "code": "ValueError", "message": "ValueError: bad row 17"},
    },
    "soak.timeout": {"duration": "0.2s", "behaviour": ["timeout", "succeed"]},
    "soak.gpu": {
        "duration": "0.2s",
        "behaviour": ["fail"],
        "error": {"kind": "SYSTEM", "code": "GpuXidError", "gpu_fault": {"kind": "XID", "code": 79}},
    },
    "soak.report": {"duration": "0.2s", "behaviour": ["succeed"], "outputs": {"rows": 1000}},
}
POLICIES = """\
apiVersion: rerund/v1
# reload {n}
defaults:
  max_attempts: 3
  backoff: {{initial: 0s, factor: 1, max: 0s, jitter: 0}}
policies:
  - name: user-errors
    match: {{error: {{kinds: [USER]}}}}
    retry: false
  - name: flaky
    match: {{tasks: [soak.flaky]}}
    retry: {{scope: run}}
  - name: timeouts
    match: {{tasks: [soak.timeout]}}
    retry: {{scope: run, backoff: {{initial: 2s, factor: 1, max: 2s, jitter: 0}}}}
  - name: gpu
    match: {{tasks: [soak.gpu]}}
    retry: {{scope: recover, max_attempts: 2}}
reproductions:
  - name: report
    schedule: "* * * * *"
    source: {{task: soak.report, phase: SUCCEEDED}}
    compare: {{outputs: exact}}
    misfire_grace: 5s
"""


def _post(url: str, body: Any) -> Any:
    return h.http_json(url, body, timeout=10)


class Sandbox:
    """``rerund sandbox`` on a fixed port and database, so it can be restarted in place."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = h.free_port()
        self.db = tmp / "sandbox.db"
        self.workload = h.workload_file(tmp, TASKS)
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.flyte_config = tmp / "flyte.yaml"

    def start(self) -> None:
        cmd = [h.RERUND, "sandbox", "--port", str(self.port), "--db", str(self.db)]
        cmd += ["--flyte-config", str(self.flyte_config), "--workload", str(self.workload)]
        cmd += ["--fault-drop-streams-after", "200"]
        log = (self.tmp / "sandbox.log").open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        h.wait_until("the sandbox to serve", lambda: bool(self.stats()), 60, interval=0.1)

    def stop(self) -> None:
        if self.proc is not None:
            h._stop(self.proc)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = h.http_json(f"{self.endpoint}/_sandbox/stats", timeout=5)
        return out

    def faults(self, **faults: Any) -> None:
        _post(f"{self.endpoint}/_sandbox/faults", faults)

    def launch(self, task: str, count: int = 1) -> list[str]:
        names: list[str] = _post(f"{self.endpoint}/_sandbox/runs", {"task": task, "count": count})["runs"]
        return names

    def runs(self) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = h.http_json(f"{self.endpoint}/_sandbox/runs", timeout=300)
        return runs


class Daemon:
    """``rerund run`` with one config file; killed and started again on the same state."""

    def __init__(self, tmp: Path, sb: Sandbox) -> None:
        self.work = tmp / "daemon"
        self.work.mkdir()
        self.policy_file = self.work / "policies.yaml"
        self.policy_file.write_text(POLICIES.format(n=0))
        self.port = h.free_port()
        self.http = f"http://127.0.0.1:{self.port}"
        self.state = self.work / "rerund.db"
        self.config = self.work / "rerund.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "endpoint": sb.endpoint,
                    "org": h.ORG,
                    "scopes": [f"{h.PROJECT}/{h.DOMAIN}"],
                    "policies": [str(self.policy_file)],
                    "state": str(self.state),
                    "http": f"127.0.0.1:{self.port}",
                    "poll_interval": "5s",
                    "lookback": "1h",
                    "log_level": "WARNING",
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None
        # What earlier processes of the daemon counted (a SIGKILL restarts the counters).
        self.cpu_before = 0.0
        self.observed_before = 0.0

    def start(self) -> None:
        log = (self.work / "daemon.log").open("ab")
        self.proc = subprocess.Popen(
            [h.RERUND, "run", "--config", str(self.config)], stdout=log, stderr=log, cwd=self.work
        )
        h.wait_until(
            "the daemon's /readyz", lambda: h.http_text(f"{self.http}/readyz")[0] == 200, 120, interval=0.1
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.cpu_before += h.proc_usage(self.proc.pid)["cpu_s"]
        self.observed_before += self.observed_here()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            h._stop(self.proc)

    def metrics(self) -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        _, body = h.http_text(f"{self.http}/metrics")
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(body):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def total(self, name: str) -> float:
        return sum(v for k, v in self.metrics().items() if k == name or k.startswith(name + "{"))

    def observed_here(self) -> float:
        with contextlib.suppress(OSError, ValueError):
            return self.total("rerund_failures_observed_total")
        return 0.0

    def usage(self) -> dict[str, float]:
        assert self.proc is not None
        u = h.proc_usage(self.proc.pid)
        return {**u, "cpu_s": u["cpu_s"] + self.cpu_before}

    def reloads_ok(self) -> float:
        return self.metrics().get("rerund_policy_reloads_total{result=ok}", 0.0)


class Prober(threading.Thread):
    """``GET /healthz`` every 0.5 s; the slowest answer since ``take()``."""

    def __init__(self, d: Daemon) -> None:
        super().__init__(daemon=True)
        self.d = d
        self.slowest: dict[str, float] = {"window": 0.0, "reload": 0.0, "all": 0.0}
        self.probes = 0
        self.failed = 0
        self.stop = threading.Event()
        self.paused = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            if self.paused.is_set():
                continue
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(f"{self.d.http}/healthz", timeout=2) as resp:
                    resp.read()
                took = time.perf_counter() - start
                self.probes += 1
                for key in self.slowest:
                    self.slowest[key] = max(self.slowest[key], took)
            except OSError:
                self.failed += 1

    def take(self, key: str) -> float:
        """The slowest answer in ms since the last ``take(key)``."""
        out, self.slowest[key] = self.slowest[key], 0.0
        return round(out * 1000, 1)


class Launcher(threading.Thread):
    """``RATE`` runs a second, cycling through ``KINDS``; launches refused (a sandbox restart)
    are counted, not retried."""

    def __init__(self, sb: Sandbox) -> None:
        super().__init__(daemon=True)
        self.sb = sb
        self.stop = threading.Event()
        self.launched: dict[str, list[str]] = {k: [] for k in set(KINDS)}
        self.refused = 0

    def run(self) -> None:
        tick = time.monotonic()
        while not self.stop.is_set():
            for kind in KINDS[:RATE]:
                try:
                    self.launched[kind] += self.sb.launch(kind)
                except OSError:
                    self.refused += 1
            tick += 1.0
            self.stop.wait(max(0.0, tick - time.monotonic()))


def _cache_kib(d: Daemon) -> dict[str, float]:
    """KiB each cache holds, as ``rerund_cache_bytes{cache=...}`` says."""
    prefix = "rerund_cache_bytes{cache="
    return {k[len(prefix) : -1]: round(v / 1024, 1) for k, v in d.metrics().items() if k.startswith(prefix)}


def _ledger_at_end(state: Path) -> dict[str, Any]:
    """Rows, and the file's bytes after a checkpoint (the WAL folded in) per failure recorded;
    what an ignored failure costs (``ignored_failure_bytes``); issue rows by result."""
    with sqlite3.connect(state) as db:
        rows = {
            t: int(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in ("failures", "decisions")
        }
        issues = dict(db.execute("SELECT result, count(*) FROM issues GROUP BY result").fetchall())
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = state.stat().st_size
    return {
        **rows,
        "file_bytes": size,
        "bytes_per_failure": round(size / max(rows["failures"], 1)),
        "issues": issues,
        "ignored": ignored_failure_bytes(state),
    }


def ignored_failure_bytes(state: Path) -> dict[str, Any]:
    """Bytes per ignored failure in this ledger (issue 24: <= 500): a copy keeps only the rows
    of the ignored failures (their failures and decisions rows, the texts those point at; every
    other table emptied), VACUUMed; its size over their count. The copy's fixed pages (schema,
    empty tables, ~40 KB) are counted too."""
    copy = state.with_name("ignored-only.db")
    with contextlib.closing(sqlite3.connect(state)) as src, contextlib.closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # VACUUM shrinks the file itself, not a WAL
    try:
        with contextlib.closing(sqlite3.connect(copy)) as db, db:
            ignored = "SELECT project || '/' || domain || '/' || run FROM decisions WHERE decision = 'ignore'"
            n = int(db.execute(f"SELECT count(*) FROM (SELECT DISTINCT * FROM ({ignored}))").fetchone()[0])
            db.execute(f"DELETE FROM failures WHERE run_key NOT IN ({ignored})")
            db.execute("DELETE FROM decisions WHERE decision != 'ignore'")
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                if table not in ("failures", "decisions", "texts", "sqlite_sequence"):
                    db.execute(f"DELETE FROM {table}")
            columns = {r[1] for r in db.execute("PRAGMA table_info(decisions)")}
            if "texts" in tables and "reason_id" in columns:
                used = "SELECT reason_id FROM decisions WHERE reason_id IS NOT NULL"
                db.execute(f"DELETE FROM texts WHERE id NOT IN ({used})")
        with contextlib.closing(sqlite3.connect(copy)) as db:
            db.execute("VACUUM")
        size = copy.stat().st_size
    finally:
        copy.unlink(missing_ok=True)
    return {"failures": n, "file_bytes": size, "bytes_per_failure": round(size / max(n, 1))}


def run(minutes: float) -> dict[str, Any]:
    machine = h.machine()
    duration = minutes * 60
    window = float(os.environ.get("SOAK_WINDOW_S") or (300 if minutes >= 15 else 60))
    outage = min(180.0, 0.1 * duration)
    reload_at = [duration * f for f in (0.12, 0.28, 0.45, 0.62, 0.78, 0.92)]
    events: list[tuple[float, str]] = sorted(
        [
            (0.10 * duration, "latency on"),
            (0.25 * duration, "latency off"),
            (0.40 * duration, "unavailable on"),
        ]
        + [
            (0.40 * duration + outage, "unavailable off"),
            (0.55 * duration, "sigkill"),
            (0.70 * duration, "sandbox restart"),
        ]
        + [(t, "reload") for t in reload_at]
    )
    windows: list[dict[str, Any]] = []
    reloads: list[dict[str, Any]] = []
    log: list[str] = []
    with h.workdir("soak") as tmp:
        sb = Sandbox(tmp)
        sb.start()
        d = Daemon(tmp, sb)
        try:
            for name in sb.launch("soak.report", 2):  # what the reproduction check reruns
                del name
            d.start()
            prober, launcher = Prober(d), Launcher(sb)
            prober.start()
            launcher.start()
            start = time.monotonic()
            last = {"t": 0.0, "cpu": d.usage()["cpu_s"], "observed": 0.0}
            next_window = window
            reloads_done = 0
            while True:
                now = time.monotonic() - start
                if events and events[0][0] <= now:
                    _, what = events.pop(0)
                    log.append(f"{now:7.1f}s {what}")
                    if what == "latency on":
                        sb.faults(latency="200ms")
                    elif what == "latency off":
                        sb.faults(latency="0ms")
                    elif what == "unavailable on":
                        sb.faults(unavailable=0.3)
                    elif what == "unavailable off":
                        sb.faults(unavailable=0.0)
                    elif what == "sigkill":
                        prober.paused.set()
                        d.kill()
                        d.start()
                        prober.paused.clear()
                    elif what == "sandbox restart":
                        sb.stop()
                        sb.start()
                    elif what == "reload":
                        reloads_done += 1
                        before = d.reloads_ok()
                        cpu0 = d.usage()["cpu_s"]
                        prober.take("reload")
                        d.policy_file.write_text(POLICIES.format(n=reloads_done))
                        t0 = time.monotonic()
                        assert d.proc is not None
                        d.proc.send_signal(signal.SIGHUP)
                        h.wait_until("the reload", lambda b=before: d.reloads_ok() > b, 60, interval=0.05)
                        seen = time.monotonic() - t0
                        time.sleep(5)
                        reloads.append(
                            {
                                "reload": reloads_done,
                                "at_s": round(now, 1),
                                "counted_after_s": round(seen, 2),
                                "cpu_s_in_5s_after": round(d.usage()["cpu_s"] - cpu0, 2),
                                "slowest_healthz_ms": prober.take("reload"),
                            }
                        )
                    continue
                if now >= next_window or now >= duration:
                    u = d.usage()
                    observed = d.observed_before + d.observed_here()
                    n = observed - last["observed"]
                    ledger = d.total("rerund_ledger_bytes")
                    windows.append(
                        {
                            "window_end_min": round(now / 60, 1),
                            "failures": int(n),
                            "cpu_ms_per_failure": round(1000 * (u["cpu_s"] - last["cpu"]) / max(n, 1), 2),
                            "rss_mib": u["rss_mib"],
                            # what the daemon's caches hold (rerund_cache_bytes, summed; round 6 on)
                            "caches_mib": round(d.total("rerund_cache_bytes") / 2**20, 1),
                            # each cache apart, KiB (which of them grows with history)
                            "caches_kib": _cache_kib(d),
                            "ledger_bytes_per_failure": round(ledger / max(observed, 1)),
                            "slowest_healthz_ms": prober.take("window"),
                        }
                    )
                    last = {"t": now, "cpu": u["cpu_s"], "observed": observed}
                    next_window += window
                    if now >= duration:
                        break
                time.sleep(0.2)
            launcher.stop.set()
            launcher.join()
            time.sleep(15)  # the last failures handled, the last reruns created
            prober.stop.set()
            runs = sb.runs()
            alive = d.proc is not None and d.proc.poll() is None
            with contextlib.suppress(OSError):
                d.stop()
            rows = _ledger_at_end(d.state)
            tail = (d.work / "daemon.log").read_text(errors="replace")
        finally:
            d.stop()
            sb.stop()
    reruns = h.reruns_of([r for r in runs if "rerund-repro" not in (r.get("labels") or {})])
    flaky = [n for n in launcher.launched["soak.flaky"]]
    user = launcher.launched["soak.user"]
    duplicates = sum(len(v) - 1 for v in reruns.values() if len(v) > 1)
    missing = sum(1 for n in flaky if n not in reruns)
    user_rerun = sum(1 for n in user if n in reruns)
    first, final = windows[0], windows[-1]
    return {
        "benchmark": "soak",
        "what": f"{minutes:g} minutes at ~{RATE} failures/s with faults: cost per failure over time",
        "goal": "last window's CPU/failure within 20% of the first's; RSS flat; /healthz <= 100 ms; "
        "reload <= 1 s; ledger <= 500 B/ignored failure",
        "minutes": minutes,
        "short_run": minutes < 30,
        "window_s": window,
        "launched": {k: len(v) for k, v in launcher.launched.items()},
        "launch_refused": launcher.refused,
        "reruns": sum(len(v) for v in reruns.values()),
        "duplicates": duplicates,
        "flaky_missing_rerun": missing,
        "user_errors_rerun": user_rerun,
        "ledger_rows": rows,
        "healthz_probes": prober.probes,
        "healthz_failures": prober.failed,
        "daemon_alive_at_end": alive,
        "traceback_in_log": "Traceback" in tail,
        "cpu_last_vs_first": round(final["cpu_ms_per_failure"] / max(first["cpu_ms_per_failure"], 1e-9), 2),
        # The goal's "RSS flat after warm-up": RSS growth from the end of the first window to
        # the end, per 10,000 failures handled after the first window (< 10 MiB).
        "rss_mib_per_10k_failures_after_first_window": round(
            (final["rss_mib"] - first["rss_mib"]) * 10_000 / max(sum(w["failures"] for w in windows[1:]), 1),
            1,
        ),
        "slowest_healthz_ms": prober.take("all"),
        "slowest_reload_s": max((r["counted_after_s"] for r in reloads), default=None),
        "events": log,
        "reloads": reloads,
        "machine": machine,
        "results": windows,
        "table": {
            "columns": [
                "window_end_min",
                "failures",
                "cpu_ms_per_failure",
                "rss_mib",
                "caches_mib",
                "ledger_bytes_per_failure",
                "slowest_healthz_ms",
            ],
            "rows": windows,
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = h.cli_args(argv)
    minutes = float(os.environ.get("SOAK_MINUTES") or 30)
    doc = run(minutes)
    print(
        h.table(
            ["reload", "at_s", "counted_after_s", "cpu_s_in_5s_after", "slowest_healthz_ms"], doc["reloads"]
        )
    )
    name = "soak" if minutes >= 30 else "soak-short"
    h.emit(name, doc, write=not args.no_write)
    print(json.dumps({k: doc[k] for k in ("duplicates", "flaky_missing_rerun", "user_errors_rerun")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
