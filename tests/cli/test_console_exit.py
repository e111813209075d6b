"""The ``rerund`` command ends without finalizing the interpreter once the flyte SDK is loaded.

The SDK's transport (pyqwest: Rust, tokio) keeps native threads that can abort the process
(SIGABRT, exit 134) while the interpreter is torn down: on a loaded machine, 2 in 240 runs of
``rerund explain`` against an unreachable control plane exited 134 after printing their answer
(0 in 240 since). That race cannot be forced in a test; what is tested is the mechanism: with
the SDK loaded no finalization runs (an ``atexit`` hook is the witness), the exit code is
``main``'s and what was printed is all there; without it the interpreter ends as usual."""

from __future__ import annotations

import subprocess
import sys

import pytest

_SCRIPT = """
import atexit, sys
if sys.argv[1] == "sdk":
    import flyte  # noqa: F401
atexit.register(lambda: print("finalized", file=sys.stderr, flush=True))
sys.argv = ["rerund", *sys.argv[2:]]
from rerund.cli import console
console()
"""


@pytest.mark.parametrize(
    ("loaded", "argv", "code", "said"),
    [
        ("sdk", ["--version"], 0, "rerund"),
        ("sdk", ["check", "/nonexistent.yaml"], 1, "1 problem found"),
        ("sdk", ["--no-such-option"], 2, "unrecognized argument: --no-such-option"),
    ],
    ids=["version", "problem", "usage-error"],
)
def test_with_the_sdk_loaded_the_command_ends_with_its_code_and_output_and_no_finalization(
    loaded: str, argv: list[str], code: int, said: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, loaded, *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == code, done.stderr
    assert "finalized" not in done.stderr  # the interpreter was not torn down
    printed = done.stdout + done.stderr
    assert said in printed and printed.endswith("\n")  # the answer, whole


def test_without_the_sdk_the_interpreter_ends_as_usual() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, "plain", "--version"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "finalized" in done.stderr
