"""One connection vocabulary (issue 28.3): every command that talks to the control plane or
reads the ledger takes the same flags — ``--config``, ``--state``, ``--endpoint``, ``--org``,
``--insecure``, ``--scope`` and the auth flags — from one place (``add_connection_arguments``),
read in one precedence (file < ``RERUND_*`` < flags); every ``--format`` has the kubectl-style
``-o`` alias. The test walks every subcommand's parser, so a new command cannot drift."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from rerund.adapters.ledger import Ledger
from rerund.cli import build_parser, main

VOCABULARY = ["--config", "--state", "--endpoint", "--org", "--insecure", "--scope", "--api-key-file",
              "--client-id", "--client-secret-file", "--auth-command", "--auth-command-file",
              "--ca-cert-file", "--http-proxy", "--http-proxy-file"]  # fmt: skip
# The commands that reach the control plane or the ledger (issue 28: `incidents` when it lands).
CONNECTED = {"run", "sweep", "status", "history", "explain", "repro list", "repro run", "repro history"}
# `demo` starts its own sandbox and daemon: its --config and --state are that daemon's, there is
# no control plane to name.
OWN_CONTROL_PLANE = {"demo"}


def commands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command's parser, by its words (``repro run``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                words = f"{prefix} {name}".strip()
                yield words, sub
                yield from commands(sub, words)


ALL = dict(commands(build_parser()))


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {o: a for a in parser._actions for o in a.option_strings}


def shape(action: argparse.Action) -> tuple[object, ...]:
    """What a flag is, besides its help text: its destination, kind, value and default."""
    return (action.dest, type(action).__name__, action.metavar, action.nargs, action.default, action.const)


def test_every_command_that_connects_is_found_by_the_walk() -> None:
    with_a_connection = {
        name for name, p in ALL.items() if {"--config", "--state", "--endpoint"} & set(options(p))
    }

    assert CONNECTED <= with_a_connection
    assert {"incidents"} & set(ALL) <= with_a_connection


@pytest.mark.parametrize(
    "name",
    sorted(
        n
        for n, p in ALL.items()
        if {"--config", "--state", "--endpoint", "--scope"} & set(options(p)) and n not in OWN_CONTROL_PLANE
    ),
)
def test_a_command_with_any_connection_flag_takes_the_whole_vocabulary_the_same_way(name: str) -> None:
    mine, reference = options(ALL[name]), options(ALL["run"])

    assert [flag for flag in VOCABULARY if flag not in mine] == []
    assert {f: shape(mine[f]) for f in VOCABULARY} == {f: shape(reference[f]) for f in VOCABULARY}


@pytest.mark.parametrize("name", sorted(n for n, p in ALL.items() if "--format" in options(p)))
def test_every_format_flag_has_the_kubectl_alias_o_and_takes_table_and_text_alike(name: str) -> None:
    flags = options(ALL[name])
    assert flags["-o"] is flags["--format"]

    fmt = flags["--format"]
    assert fmt.type is not None and fmt.choices is not None
    assert fmt.type("json") == "json"
    assert fmt.type("table") == fmt.type("text") == fmt.default


@pytest.fixture
def three_ledgers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A ledger named by the settings file, one by RERUND_STATE and one for --state."""
    paths = {layer: tmp_path / f"{layer}.db" for layer in ("file", "env", "flag")}
    for path in paths.values():
        Ledger(path).close()
    (tmp_path / "rerund.yaml").write_text(f"state: {paths['file']}\n")
    monkeypatch.chdir(tmp_path)
    return paths


@pytest.mark.parametrize(
    "layers, wins",
    [
        (["file"], "file"),
        (["file", "env"], "env"),
        (["file", "env", "flag"], "flag"),
        (["env", "flag"], "flag"),
    ],
    ids=["file", "env-over-file", "flag-over-env", "flag-without-file"],
)
def test_history_finds_its_ledger_in_the_precedence_of_rerund_run(
    three_ledgers: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys, layers: list[str], wins: str
) -> None:
    argv = ["history", "-o", "table"]
    if "file" in layers:
        argv += ["--config", "rerund.yaml"]
    if "env" in layers:
        monkeypatch.setenv("RERUND_STATE", str(three_ledgers["env"]))
    if "flag" in layers:
        argv += ["--state", str(three_ledgers["flag"])]

    assert main(argv) == 0
    assert capsys.readouterr().out == f"no decisions recorded yet in {three_ledgers[wins]}\n"


def test_o_json_is_format_json(three_ledgers: dict[str, Path], capsys) -> None:
    assert main(["history", "--state", str(three_ledgers["flag"]), "-o", "json"]) == 0
    assert capsys.readouterr().out == "[]\n"
