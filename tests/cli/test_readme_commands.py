"""Every ``rerund`` command the README shows parses as written, and every file it names exists.

(The commands' behaviour is tested where each command is; the README walk-through from a fresh
clone is in the ops report. This keeps the README from drifting from the command line.)
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from rerund.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def _commands() -> list[str]:
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        block = re.sub(r"\\\n\s*", " ", block)  # continuation lines
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            line = line.removeprefix(".venv/bin/")
            if line.startswith("rerund "):
                out.append(line.split(" > ", 1)[0].split(" | ", 1)[0])
    return out


COMMANDS = _commands()


def test_the_readme_shows_the_day_2_commands() -> None:
    for needed in ("rerund status --config", "rerund history --config", "rerund explain RUN --config"):
        assert any(c.startswith(needed) for c in COMMANDS), needed


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_parses_and_names_existing_files(command: str) -> None:
    argv = [a.replace("<run>", "somerun") for a in shlex.split(command)[1:]]
    args, extras = build_parser().parse_known_args(argv)
    assert extras == [], f"{command}: unrecognized {extras}"
    assert getattr(args, "func", None) is not None
    for arg in argv:
        if re.fullmatch(r"(policies|deploy|rerund\.example)[\w./-]*", arg):
            assert (REPO / arg).exists(), f"{command}: {arg} does not exist"


def test_readme_links_and_images_point_at_files_that_exist() -> None:
    for target in re.findall(r"\]\(((?!http|#)[^)]+)\)", README):
        assert (REPO / target).exists(), target
