"""What a ``rerund`` process imports: only what its command uses.

Users run ``rerund check``/``rerund test`` in pre-commit hooks and CI, and a daemon on an SQLite
file has no use for a database driver. Each command below runs in a real subprocess (a tiny
``-c`` wrapper around ``rerund.cli.main`` that writes ``sorted(sys.modules)`` when the process
exits) and the modules it must not have loaded are named. No timings: what is absent is what
costs nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon_support import REPO, DaemonProcess, fast_policies

# Runs ``rerund ARGS...`` (``sys.argv[1:]`` after the wrapper's own) and, however it ends, writes
# the names of the loaded modules to the file $RERUND_MODULES_OUT.
WRAPPER = (
    "import atexit, json, os, sys\n"
    "out = os.environ['RERUND_MODULES_OUT']\n"
    "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted(sys.modules))))\n"
    "from rerund.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)

DATABASE = ("sqlalchemy", "psycopg", "alembic")
CONTROL_PLANE = ("flyte", "rerund.adapters.flyte", "grpc", "httpx")
SANDBOX = ("rerund.sandbox",)
RUNTIME = ("rerund.app", "rerund.runtime.daemon", "rerund.runtime.http", "rerund.runtime.reconcile")
OFFLINE = DATABASE + CONTROL_PLANE + SANDBOX + RUNTIME

FAILURE = str(REPO / "policies" / "failures" / "connection-reset.yaml")
POLICIES = str(REPO / "policies")

COMMANDS: list[tuple[list[str], tuple[str, ...]]] = [
    (["--help"], OFFLINE),
    (["check", POLICIES], OFFLINE),
    (["test", POLICIES], OFFLINE),
    (["schema"], OFFLINE),
    (["explain", "--policies", POLICIES, "--failure", FAILURE], OFFLINE),
    (["run", "--help"], OFFLINE),
    (["status", "--help"], OFFLINE),
    (["sweep", "--help"], OFFLINE),
    (["state", "--help"], OFFLINE),
    (["sandbox", "--help"], OFFLINE),
]


def loaded(modules: list[str], heavy: tuple[str, ...]) -> list[str]:
    """The packages of ``heavy`` that are in ``modules`` (themselves or one of their modules)."""
    return [h for h in heavy if any(m == h or m.startswith(h + ".") for m in modules)]


def modules_of(argv: list[str], tmp_path: Path) -> tuple[int, list[str]]:
    out = tmp_path / "modules.json"
    env = {**os.environ, "RERUND_MODULES_OUT": str(out)}
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )
    modules: list[str] = json.loads(out.read_text())
    return proc.returncode, modules


@pytest.mark.parametrize(
    ("argv", "heavy"), COMMANDS, ids=[" ".join(Path(a).name for a in argv) for argv, _ in COMMANDS]
)
def test_an_offline_command_imports_no_control_plane_database_sandbox_or_daemon(
    argv: list[str], heavy: tuple[str, ...], tmp_path: Path
) -> None:
    code, modules = modules_of(argv, tmp_path)
    assert code == 0
    assert loaded(modules, heavy) == []


def test_a_daemon_on_an_sqlite_file_imports_no_database_driver_and_no_sandbox(
    sandbox, tmp_path: Path
) -> None:
    policies = tmp_path / "policies.yaml"
    policies.write_text(fast_policies({"apiVersion": "rerund/v1", "policies": []}))
    out = tmp_path / "modules.json"
    daemon = DaemonProcess(
        tmp_path / "d",
        sandbox,
        policies,
        prefix=(sys.executable, "-c", WRAPPER.replace("main(sys.argv[1:])", "main(sys.argv[2:])")),
        env={"RERUND_MODULES_OUT": str(out)},
    )
    daemon.start()
    daemon.wait_ready()
    assert daemon.terminate() == 0, daemon.logs()
    modules: list[str] = json.loads(out.read_text())
    assert "rerund.runtime.daemon" in modules and "rerund.adapters.flyte.control_plane" in modules
    assert loaded(modules, DATABASE + SANDBOX) == []
