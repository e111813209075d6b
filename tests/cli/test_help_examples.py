"""Every example line in a command's help (``rerund --help``, ``rerund sweep --help``, ...)
parses as written and names files that exist (issue 28.8: sweep's examples named
``outage.yaml`` and ``rerund.yaml``, which the repository does not have)."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from rerund.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
FILE = re.compile(r"(policies|deploy)/[\w./-]+|[\w.-]+\.(yaml|yml|db)")


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    out = [("rerund", build_parser())]
    for words, parser in list(out):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                out += [(f"{words} {name}", sub) for name, sub in action.choices.items()]
    return out


def examples() -> list[tuple[str, str]]:
    found = []
    for words, parser in parsers():
        text = re.sub(r"\\\n\s*", " ", parser.epilog or "")
        for line in text.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("rerund "):
                found.append((words, line))
    return found


EXAMPLES = examples()


def test_the_help_has_examples() -> None:
    assert {"rerund", "rerund sweep"} <= {words for words, _ in EXAMPLES}


@pytest.mark.parametrize(("where", "line"), EXAMPLES, ids=[f"{w}: {line[:60]}" for w, line in EXAMPLES])
def test_a_help_example_parses_and_names_files_that_exist(where: str, line: str) -> None:
    argv = shlex.split(line)[1:]
    _, extras = build_parser(argv[0]).parse_known_args(argv)

    assert extras == [], f"{where}: {line}: unrecognized {extras}"
    missing = [
        w for w in argv if FILE.fullmatch(w) and not w.startswith(".rerund/") and not (REPO / w).exists()
    ]
    assert missing == [], f"{where}: {line}"
