"""Small things a user of the one-shot commands and the demo sees (issue 28.8), each as the
user sees it: a real subprocess, its stderr."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from daemon_support import free_port

REPO = Path(__file__).resolve().parents[2]
RERUND = [sys.executable, "-m", "rerund.cli"]


def unreachable_flags(tmp_path: Path) -> list[str]:
    (tmp_path / "p.yaml").write_text(
        "apiVersion: rerund/v1\npolicies:\n  - name: p\n    match: {error: {kinds: [SYSTEM]}}\n"
        "    retry: {max_attempts: 1}\n"
    )
    return [
        "--endpoint", f"http://127.0.0.1:{free_port()}", "--insecure", "--org", "sandbox",
        "--scope", "demo/development", "--policies", str(tmp_path / "p.yaml"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "argv, said",
    [
        (["status"], "(rerund status does not retry)"),
        (["explain", "demo/development/r1"], "(rerund explain does not retry)"),
        (["sweep", "--since", "1h", "--dry-run"], "nothing was rerun: check --endpoint"),
    ],
    ids=["status", "explain", "sweep"],
)
def test_a_one_shot_command_against_an_unreachable_control_plane_never_says_retrying(
    tmp_path: Path, argv: list[str], said: str
) -> None:
    done = subprocess.run(
        [*RERUND, *argv, *unreachable_flags(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )

    assert done.returncode == 2
    assert said in done.stderr
    assert "retrying" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def read_banner(demo: subprocess.Popen[str]) -> str:
    assert demo.stderr is not None
    seen = []
    for line in demo.stderr:
        seen.append(line)
        if "One line per decision follows" in line:
            return "".join(seen)
    pytest.fail("the demo ended before its banner:\n" + "".join(seen))


@pytest.mark.e2e
def test_the_demo_banner_says_when_the_page_port_moved_and_when_there_are_no_checks(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "apiVersion: rerund/v1\npolicies:\n  - name: p\n    match: {error: {kinds: [SYSTEM]}}\n"
        "    retry: {max_attempts: 1}\n"
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        demo = subprocess.Popen(
            [*RERUND, "demo", "--workload", str(REPO / "policies/demo/workload.yaml"), "--time-scale", "0.2",
             "--policies", str(tmp_path / "p.yaml"), "--http", f"127.0.0.1:{port}", "--duration", "120"],
            cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            banner = read_banner(demo)
        finally:
            demo.send_signal(signal.SIGINT)
            demo.communicate(timeout=60)

    page = re.search(r"  operator page +(\S+)  \(port (\d+) was taken, so another was chosen\)", banner)
    assert page is not None, banner
    assert page.group(2) == str(port) and not page.group(1).endswith(f":{port}/")
    assert "  reproduction checks    none in these policies" in banner
