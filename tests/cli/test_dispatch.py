"""The command table in ``rerund.cli``: each command imports only its own module.

``rerund run`` must not carry the other commands' dependency trees (the sandbox, rich, ...):
the table that makes that possible is checked here against what each module registers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys

import pytest

import rerund.cli as cli


def _choices(parser: argparse.ArgumentParser) -> list[str]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(sub.choices)


def test_every_listed_module_imports_and_registers_exactly_its_commands() -> None:
    for name in dict.fromkeys(cli._COMMANDS.values()):
        module = importlib.import_module(f"rerund.cli.{name}")
        parser = argparse.ArgumentParser()
        module.register(parser.add_subparsers(dest="command"))
        mine = sorted(c for c, m in cli._COMMANDS.items() if m == name)
        assert sorted(_choices(parser)) == mine, name


def test_the_full_parser_has_every_command_in_help_order() -> None:
    assert _choices(cli.build_parser()) == [
        "run",
        "history",
        "status",
        "incidents",
        "demo",
        "check",
        "explain",
        "test",
        "schema",
        "repro",
        "sweep",
        "suggest",
        "sandbox",
        "state",
    ]
    assert sorted(_choices(cli.build_parser())) == sorted(cli._COMMANDS)


def test_a_given_command_builds_only_its_module() -> None:
    assert _choices(cli.build_parser("run")) == ["run", "history"]
    assert _choices(cli.build_parser("explain")) == ["check", "explain", "test", "schema"]
    assert _choices(cli.build_parser("nosuch")) == _choices(cli.build_parser())


def test_rerund_run_imports_neither_the_sandbox_nor_the_other_commands() -> None:
    probe = (
        "import json, sys\n"
        "from rerund.cli import main\n"
        "try:\n"
        "    main(['run', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out.splitlines()[-1]))
    assert "rerund.cli.daemon" in loaded
    # the daemon itself (runtime, flyte, the HTTP server) only when it runs: tests/cli/test_startup_imports.py
    assert "rerund.runtime.daemon" not in loaded
    for other in ("demo", "policy", "explain", "repro", "status", "sweep", "sandbox"):
        assert f"rerund.cli.{other}" not in loaded, other
    assert not any(m == "rerund.sandbox" or m.startswith("rerund.sandbox.") for m in loaded)
    assert "pytest" not in loaded
    # httpx (and the rich, click and pygments it pulls in) only on a first webhook notification
    assert "httpx" not in loaded and "rich" not in loaded


def test_an_unknown_command_still_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["nosuch"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nosuch'" in err
    for command in cli._COMMANDS:
        assert f"'{command}'" in err
