"""`make compat`: the adapter and port contract tests over the oldest and the newest flyte release
pyproject.toml declares, each in a throwaway venv under ``.venv-compat/<name>``.

pyproject.toml declares ranges for the flyte SDK stack (flyte, flyteidl2, connectrpc) so rerund
installs next to a user's own flyte; constraints.txt pins what ``make install`` and the image use.
This script checks both ends of the ranges: for each entry of ``STACKS`` it creates (or reuses) a
venv, installs rerund with its test tools under constraints.txt with the stack's three pins in
place of the file's, checks the venv holds exactly those versions, and runs ``COMPAT_TESTS`` there.
tests/test_dependencies.py keeps ``STACKS`` honest (inside the ranges, newest = constraints.txt).

Usage::

    python tests/compat.py              # every stack
    python tests/compat.py oldest       # one stack
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMPAT = REPO / ".venv-compat"

# The oldest and the newest release of each range in pyproject.toml (flyte pins flyteidl2 exactly
# per release; connectrpc at the lowest version flyte allows in the oldest stack).
STACKS: dict[str, dict[str, str]] = {
    "oldest": {"flyte": "2.10.3", "flyteidl2": "2.0.50", "connectrpc": "0.9.0"},
    "newest": {"flyte": "2.12.1", "flyteidl2": "2.0.51", "connectrpc": "0.10.1"},
}
# The adapter and port contract tests: everything that drives the real SDK against the sandbox.
COMPAT_TESTS = ("tests/ports", "tests/adapters")
# What the tests need besides rerund (versions from pyproject's dev extras via constraints below).
TEST_TOOLS = ("pytest", "pytest-timeout", "hypothesis", "freezegun")


def constraints_for(stack: dict[str, str], pinned: str) -> str:
    """constraints.txt's text with the stack's pins in place of the file's lines for those names."""
    kept = [line for line in pinned.splitlines() if line.split("==")[0].strip().lower() not in stack]
    return "\n".join([*kept, *(f"{name}=={version}" for name, version in stack.items())]) + "\n"


def dev_pins() -> list[str]:
    """The dev extras' exact pins of TEST_TOOLS, read from pyproject.toml."""
    import tomllib

    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    return [req for req in dev if req.split("==")[0].lower() in TEST_TOOLS]


def run(*argv: str | Path, cwd: Path = REPO) -> None:
    print("+", " ".join(str(a) for a in argv), flush=True)
    subprocess.run([str(a) for a in argv], cwd=cwd, check=True)


def prepare(name: str, stack: dict[str, str]) -> Path:
    """The stack's venv, with rerund (editable) and the test tools installed; returns its python."""
    venv = COMPAT / name
    python = venv / "bin" / "python"
    if not python.exists():
        run(sys.executable, "-m", "venv", venv)
    constraints = venv / "constraints.txt"
    constraints.write_text(constraints_for(stack, (REPO / "constraints.txt").read_text()))
    run(python, "-m", "pip", "install", "--quiet", "-c", constraints, "-e", ".", *dev_pins())
    have = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, sys; "
            "print(' '.join(f'{n}=={m.version(n)}' for n in sys.argv[1:]))",
            *stack,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    want = [f"{n}=={v}" for n, v in stack.items()]
    if have != want:
        raise SystemExit(f"{venv} holds {have}, not {want}: remove {venv} and run make compat again")
    return python


def main(argv: list[str]) -> int:
    names = argv or list(STACKS)
    unknown = [n for n in names if n not in STACKS]
    if unknown:
        raise SystemExit(f"unknown stack {unknown[0]!r}: use one of {', '.join(STACKS)}")
    results = []
    for name in names:
        started = time.monotonic()
        python = prepare(name, STACKS[name])
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        code = subprocess.run(
            [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", *COMPAT_TESTS],
            cwd=REPO,
            env=env,
            check=False,
        ).returncode
        stack = " ".join(f"{n}=={v}" for n, v in STACKS[name].items())
        results.append((name, stack, code, time.monotonic() - started))
    for name, stack, code, seconds in results:
        print(f"compat {name:7} {stack}: {'passed' if code == 0 else 'FAILED'} ({seconds:.0f} s)")
    return 0 if all(code == 0 for _, _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
