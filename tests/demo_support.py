"""A live ``rerund demo`` for tests: a subprocess in its own working directory, read up to its
first rerun, and the lines a user would paste into a second terminal run as subprocesses there
(``rerund`` and ``flyte`` from this venv, ``RUN`` filled in with a run the demo reran)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DECISION = re.compile(r" rerun +demo/development/(r\w+): ")


class LiveDemo:
    """A running demo: its working directory, its banner and the name of a run it reran."""

    def __init__(self, cwd: Path, banner: list[str], run: str) -> None:
        self.cwd, self.banner, self.run = cwd, banner, run

    def commands(self) -> list[str]:
        """The lines under "Try, in another terminal", as printed."""
        start = next(i for i, line in enumerate(self.banner) if "Try, in another terminal" in line)
        out = []
        for line in self.banner[start + 1 :]:
            if not line.strip():
                break
            out.append(line.strip())
        return out

    def shell(self, line: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``line`` as a user pastes it into a shell in the demo's working directory, with
        this venv's ``rerund`` and ``flyte`` first on PATH and ``RUN`` replaced by the rerun run."""
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "200"}
        env["NO_COLOR"] = "1"
        text = re.sub(r"\bRUN\b", self.run, line)
        return subprocess.run(
            ["bash", "-o", "pipefail", "-c", text],
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )


def start_demo(cwd: Path, *extra: str) -> tuple[subprocess.Popen[str], list[str]]:
    demo = subprocess.Popen(
        [sys.executable, "-m", "rerund.cli", "demo", "--workload", str(REPO / "policies/demo/workload.yaml"),
         "--config", str(REPO / "policies/demo/daemon.yaml"), "--time-scale", "0.2",
         "--http", "127.0.0.1:0", "--duration", "300", *extra],
        cwd=cwd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    return demo, []


def read_until(demo: subprocess.Popen[str], seen: list[str], pattern: re.Pattern[str]) -> re.Match[str]:
    assert demo.stderr is not None
    for line in demo.stderr:
        seen.append(line.rstrip("\n"))
        if found := pattern.search(line):
            return found
    pytest.fail("the demo ended early:\n" + "\n".join(seen[-50:]))


def stop(demo: subprocess.Popen[str]) -> str:
    """SIGINT (Ctrl-C) and what the demo printed after; killed if it does not stop."""
    if demo.poll() is None:
        demo.send_signal(signal.SIGINT)
    try:
        _, rest = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    return rest


@contextmanager
def live_demo(cwd: Path) -> Iterator[LiveDemo]:
    """A demo running in ``cwd`` until the block ends, read up to its first rerun."""
    demo, seen = start_demo(cwd)
    try:
        read_until(demo, seen, re.compile("One line per decision follows"))
        run = read_until(demo, seen, DECISION).group(1)
        yield LiveDemo(cwd, seen, run)
    finally:
        stop(demo)
