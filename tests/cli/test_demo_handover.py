"""``rerund demo`` hands over its connection (issue 28.1): while it runs, ``.rerund/demo.yaml``
(rerund settings) and ``.rerund/flyte.yaml`` (the flyte CLI's config) exist in the working
directory, and every copy-paste line its banner prints works as printed — run here as
subprocesses, the way a user pastes them into a second terminal, against a live demo."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from rerund.runtime.settings import load_settings

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DECISION = re.compile(r" rerun +demo/development/(r\w+): ")


class LiveDemo:
    """A ``rerund demo`` subprocess in its own working directory, read up to its first rerun."""

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

    def shell(self, line: str) -> subprocess.CompletedProcess[str]:
        """Run a pasted line (``rerund``/``flyte`` from this venv, RUN filled in) in the demo's
        working directory."""
        argv = [a.replace("RUN", self.run) for a in shlex.split(line)]
        exe = {"rerund": [sys.executable, "-m", "rerund.cli"], "flyte": [str(BIN / "flyte")]}[argv[0]]
        env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
        return subprocess.run(
            [*exe, *argv[1:]], cwd=self.cwd, capture_output=True, text=True, timeout=120, env=env
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
    if demo.poll() is None:
        demo.send_signal(signal.SIGINT)
    try:
        _, rest = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    return rest


@pytest.fixture(scope="module")
def live_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDemo]:
    cwd = tmp_path_factory.mktemp("demo-cwd")
    demo, seen = start_demo(cwd)
    try:
        read_until(demo, seen, re.compile("One line per decision follows"))
        run = read_until(demo, seen, DECISION).group(1)
        yield LiveDemo(cwd, seen, run)
    finally:
        stop(demo)


def test_the_demo_writes_its_settings_and_a_flyte_config_into_dot_rerund(live_demo: LiveDemo) -> None:
    settings = load_settings(live_demo.cwd / ".rerund/demo.yaml")
    flyte = yaml.safe_load((live_demo.cwd / ".rerund/flyte.yaml").read_text())

    assert settings.endpoint is not None and settings.endpoint.startswith("http://127.0.0.1:")
    assert (settings.org, [s.key for s in settings.scopes]) == ("sandbox", ["demo/development"])
    assert Path(settings.state) == live_demo.cwd / ".rerund/demo.db"
    assert [Path(p) for p in settings.policies] == [REPO / "policies/library", REPO / "policies"]
    assert flyte["admin"] == {"endpoint": settings.endpoint, "insecure": True}
    assert flyte["task"] == {"org": "sandbox", "project": "demo", "domain": "development"}


def test_the_banner_prints_the_day_2_commands_for_the_demo(live_demo: LiveDemo) -> None:
    assert live_demo.commands() == [
        "rerund status --config .rerund/demo.yaml",
        "rerund history --config .rerund/demo.yaml",
        "rerund history --config .rerund/demo.yaml --run RUN",
        "rerund explain RUN --config .rerund/demo.yaml",
        "flyte --config .rerund/flyte.yaml get run -p demo -d development",
    ]


# a pasted line -> a text its output holds
EXPECTED = {
    "rerund status": "rerund status at ",
    "rerund history --config .rerund/demo.yaml": "demo/development/",
    "rerund history --config .rerund/demo.yaml --run": "lineage demo/development/",
    "rerund explain": "decision:",
    "flyte": "Name",
}


@pytest.mark.parametrize("index", range(5), ids=["status", "history", "history-run", "explain", "flyte"])
def test_each_pasted_line_works_against_the_live_demo(live_demo: LiveDemo, index: int) -> None:
    line = live_demo.commands()[index]
    done = live_demo.shell(line)

    assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    expected = next(v for k, v in sorted(EXPECTED.items(), key=lambda kv: -len(kv[0])) if line.startswith(k))
    assert expected in done.stdout, done.stdout[-2000:]
    if line.startswith("flyte"):
        assert live_demo.run in done.stdout


def test_a_new_demo_starts_a_fresh_ledger_and_keeps_it_after_it_stops(tmp_path: Path) -> None:
    handover = tmp_path / ".rerund"
    handover.mkdir()
    (handover / "demo.db").write_text("not a ledger: an old demo's leftover")
    demo, seen = start_demo(tmp_path)
    read_until(demo, seen, DECISION)
    rest = stop(demo)

    assert "rerund demo: summary" in rest
    assert f"  ledger         {handover / 'demo.db'} (rerund history --config .rerund/demo.yaml)" in rest
    done = subprocess.run(
        [sys.executable, "-m", "rerund.cli", "history", "--config", ".rerund/demo.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and "demo/development/" in done.stdout, done.stderr
