"""Shared helpers for tests that run the real daemon (``rerund run`` in a subprocess) against the
in-process sandbox control plane over real HTTP.

``DaemonProcess`` starts, SIGKILLs, SIGTERMs and restarts one daemon from a settings file it
writes itself, and reads its ``/metrics``, ``/healthz``, ``/readyz`` and ``/decisions``.
``wait_until`` waits on a condition with a generous deadline (the machine may be loaded: never
assert on timings, only on what eventually holds).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def write_settings(path: Path, sb: Any, **settings: Any) -> Path:
    """A daemon settings file at ``path`` for sandbox ``sb`` (its endpoint, org and its one
    project/domain as the scope) plus ``settings``."""
    doc = {"endpoint": sb.endpoint, "org": sb.org, "scopes": [f"{sb.project}/{sb.domain}"], **settings}
    path.write_text(yaml.safe_dump(doc))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body) of a GET; HTTP errors are answers, not exceptions."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout: float = 120.0,
    logs: Callable[[], str] = str,
    interval: float = 0.2,
) -> None:
    """Poll ``check`` until it holds; fail with ``what`` and ``logs()`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            if check():
                return
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{logs()}")


def parse_metrics(body: str) -> Samples:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def rerund_binary() -> str:
    path = Path(sys.executable).parent / "rerund"
    return str(path) if path.exists() else "rerund"


def fast_policies(doc: Mapping[str, Any]) -> str:
    """A policy document as YAML text (helpers keep backoff short in tests)."""
    return str(yaml.safe_dump(dict(doc), sort_keys=False))


class DaemonProcess:
    """One ``rerund run`` subprocess against ``sb``; its state file and log live in ``workdir``.

    ``start`` waits for ``/healthz`` (not ``/readyz``: under injected faults a pass may fail).
    Every (re)start appends to the same log file, so ``logs()`` covers the whole test.
    """

    def __init__(
        self,
        workdir: Path,
        sb: Any,
        policies: Path,
        *,
        name: str = "daemon",
        poll_interval: str = "1s",
        lookback: str = "1h",
        overlap: str = "2m",
        extra: Mapping[str, Any] | None = None,
        args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.workdir = workdir
        self.prefix = prefix  # a command the daemon runs under, e.g. ("faketime", "-f", "+30m")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / f"{name}.yaml"
        self.state = workdir / f"{name}.db"
        self.log = workdir / f"{name}.log"
        self.args = args
        self.env = dict(env or {})
        settings: dict[str, Any] = {
            "endpoint": sb.endpoint,
            "org": sb.org,
            "scopes": [{"project": sb.project, "domain": sb.domain}],
            "policies": [str(policies)],
            "state": str(self.state),
            "http": f"127.0.0.1:{self.port}",
            "poll_interval": poll_interval,
            "lookback": lookback,
            "overlap": overlap,
            "rpc_timeout": "10s",
        }
        settings.update(extra or {})
        self.config.write_text(yaml.safe_dump(settings, sort_keys=False))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, wait: bool = True) -> DaemonProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = {**os.environ, **self.env}
        if "FLYTE_API_KEY" not in self.env:
            env.pop("FLYTE_API_KEY", None)
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts + 1} ---\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [*self.prefix, rerund_binary(), "run", "--config", str(self.config), *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
                # Under a prefix (faketime forks the daemon and waits for it) the daemon is not
                # our child: its own session lets ``_reap`` end whatever the prefix left behind
                # (two daemons outlived a CI run that way, still running an hour later).
                start_new_session=bool(self.prefix),
            )
        self.starts += 1
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 90.0) -> None:
        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"the daemon exited with {self.proc.returncode}\n{self.logs()}")
            return http_get(f"{self.url}/healthz", timeout=2)[0] == 200

        wait_until("the daemon's /healthz", up, timeout, self.logs)

    def wait_ready(self, timeout: float = 120.0) -> None:
        wait_until("the daemon's /readyz", lambda: self.readyz()[0] == 200, timeout, self.logs)

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._reap()

    def _reap(self) -> None:
        """Under a prefix, SIGKILL what is left of the daemon's session once the prefix ended."""
        if self.prefix and self.proc is not None and self.proc.poll() is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit status (SIGKILL after ``timeout``)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reap()
        return int(self.proc.returncode)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- observing ---------------------------------------------------------------------------

    def logs(self, tail: int = 8000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"{self.log.name}:\n{text[-tail:]}"

    def metrics_text(self) -> str:
        return http_get(f"{self.url}/metrics")[1]

    def metrics(self) -> Samples:
        return parse_metrics(self.metrics_text())

    def healthz(self) -> tuple[int, str]:
        return http_get(f"{self.url}/healthz")

    def readyz(self) -> tuple[int, str]:
        return http_get(f"{self.url}/readyz")

    def decisions(self, limit: int = 100_000) -> dict[str, Any]:
        status, body = http_get(f"{self.url}/decisions?limit={limit}", timeout=10)
        assert status == 200, body
        result: dict[str, Any] = json.loads(body)
        return result

    def pending(self) -> dict[str, Any]:
        pending: dict[str, Any] = self.decisions(limit=0)["pending"]
        return pending


@contextlib.contextmanager
def daemons(*procs: DaemonProcess) -> Iterator[tuple[DaemonProcess, ...]]:
    """Start the daemons; SIGTERM (then SIGKILL) each when the block ends."""
    try:
        for p in procs:
            p.start()
        yield procs
    finally:
        for p in procs:
            if p.alive():
                p.terminate(timeout=15)


def settle(
    sb: Any,
    procs: tuple[DaemonProcess, ...] | list[DaemonProcess],
    policies: Any,
    timeout: float = 300.0,
    *,
    quiet_passes: int = 2,
    planted: frozenset[str] = frozenset(),
) -> Any:
    """Wait until the control plane holds every rerun the policies owe, nothing is executing
    and no daemon has anything pending (so no further rerun can appear); return the oracle's
    ``Audit`` of the final state (``planted``: runs the scenario planted, see ``audit``)."""
    from rerun_oracle import audit

    last: list[Any] = []
    quiet = [0]

    def done() -> bool:
        runs = sb.runs()
        if any(r["phase"] not in ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED") for r in runs):
            quiet[0] = 0
            return False
        a = audit(runs, policies, planted=planted)
        last[:] = [a]
        if a.missed or any(p.alive() and p.pending() for p in procs):
            quiet[0] = 0
            return False
        quiet[0] += 1  # a few consecutive quiet looks: nothing is about to be created
        return quiet[0] >= quiet_passes

    def why() -> str:
        text = last[0].problems() if last else "(no audit yet)"
        return text + "\n" + "\n".join(p.logs(4000) for p in procs)

    wait_until("every owed rerun to exist and nothing pending", done, timeout, why, interval=1.0)
    return last[0]
