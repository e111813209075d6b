"""Every code block of the docs is run or loaded, so the docs cannot rot (issue 28).

Each fenced block in ``docs/`` (and in the files the docs include with ``--8<--``, and in
README.md) is preceded by a marker the collector reads — ``<!-- check: KIND -->`` or
``<!-- check: KIND: why -->`` — saying what is done with it:

- ``policy``: a policy file, loaded by the real loader (``apiVersion`` added when the block is
  a part of a file that starts at ``policies:``); ``policy-retry``: a ``retry:`` block, loaded
  inside a policy;
- ``settings``: a daemon settings file, loaded by the daemon's settings loader;
- ``workload``: a sandbox workload file, loaded by the sandbox's loader;
- ``repo``: shell lines run from a directory holding the repository's ``policies/``,
  ``deploy/`` and ``rerund.example.yaml``, each exiting 0;
- ``demo``: shell lines run, as printed, in the working directory of a live ``rerund demo``
  (``RUN``: a run the demo reran), each exiting 0;
- ``sdk``: a Python snippet run against the sandbox (tests/sandbox/test_docs_sdk_snippet.py);
- ``yaml: why``: YAML that is not rerund's (a kustomization, a manifest): parsed here, and the
  reason names the test that uses it;
- ``not-run: why``: shell lines not run here (they need a cluster, a real control plane, or
  run forever); their ``rerund`` lines are still parsed by rerund's own parser and the repository
  files they name must exist;
- ``output``: a sample of output or a listing: nothing to run.

A block without a marker, or with an unknown kind, fails the test that names its file and line.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from demo_support import LiveDemo, live_demo
from rerund.cli import build_parser
from rerund.policy.loader import load_policies
from rerund.runtime.settings import load_settings
from rerund.sandbox.workload import load_workload

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
BIN = Path(sys.executable).parent
MARKER = re.compile(r"^<!-- check: ([\w-]+)(?::\s*(.+?))? -->$")
SNIPPET = re.compile(r'^--8<-- "([^":]+)(?::(\d+):(\d+))?"$')
KINDS = {"policy", "policy-retry", "settings", "workload", "repo", "demo", "sdk", "yaml", "not-run", "output"}
REPO_FILE = re.compile(r"(policies|deploy|bench|docs)/[\w./-]+|rerund\.example\.yaml")


@dataclass(frozen=True)
class Block:
    file: Path
    line: int
    lang: str
    text: str
    kind: str | None
    why: str | None

    @property
    def id(self) -> str:
        return f"{self.file.relative_to(REPO)}:{self.line}"


def _expand(path: Path) -> list[tuple[Path, int, str]]:
    """The lines of ``path`` as mkdocs renders them: ``--8<--`` includes expanded in place, each
    line with the file and line number it comes from."""
    out: list[tuple[Path, int, str]] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        found = SNIPPET.match(line.strip())
        if found and not line.startswith(" "):
            included = REPO / found.group(1)
            first = int(found.group(2) or 1)
            for file, n, text in _expand(included):
                if n >= first and (found.group(3) is None or n <= int(found.group(3))):
                    out.append((file, n, text))
            continue
        out.append((path, number, line))
    return out


def blocks(path: Path) -> Iterator[Block]:
    """The fenced blocks of ``path`` (includes expanded) with the marker before each."""
    lines = _expand(path)
    i = 0
    while i < len(lines):
        file, number, line = lines[i]
        if not line.lstrip().startswith("```"):
            i += 1
            continue
        indent = len(line) - len(line.lstrip())  # a block inside a list item is indented
        end = next(j for j in range(i + 1, len(lines)) if lines[j][2].lstrip().startswith("```"))
        body = [text[indent:] for _, _, text in lines[i + 1 : end]]
        if len(body) == 1 and (inc := SNIPPET.match(body[0].strip())):  # a whole file in a block
            body = (REPO / inc.group(1)).read_text().splitlines()
        before = next((text for _, _, text in reversed(lines[:i]) if text.strip()), "")
        marker = MARKER.match(before.strip())
        yield Block(
            file,
            number,
            line.strip()[3:].strip(),
            "\n".join(body) + "\n",
            marker.group(1) if marker else None,
            marker.group(2) if marker else None,
        )
        i = end + 1


def all_blocks() -> list[Block]:
    seen: dict[str, Block] = {}
    for page in [*sorted(DOCS.rglob("*.md")), REPO / "README.md"]:
        for block in blocks(page):
            seen.setdefault(block.id, block)
    return list(seen.values())


BLOCKS = all_blocks()


def of_kind(*kinds: str) -> list[Block]:
    return [b for b in BLOCKS if b.kind in kinds]


def shell_lines(text: str) -> list[str]:
    """The commands of a shell block: continuations joined, comments and blank lines dropped."""
    text = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in text.splitlines():
        line = line.split("  #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_every_block_says_how_it_is_checked(block: Block) -> None:
    assert block.kind in KINDS, (
        f"{block.id}: precede the block with <!-- check: KIND --> (one of {sorted(KINDS)}), "
        "see tests/docs/test_docs_blocks.py"
    )
    if block.kind in ("not-run", "yaml"):
        assert block.why, f"{block.id}: say why: <!-- check: {block.kind}: REASON -->"


@pytest.mark.parametrize("block", of_kind("policy", "policy-retry"), ids=lambda b: b.id)
def test_a_policy_example_loads(block: Block, tmp_path: Path) -> None:
    text = block.text
    if block.kind == "policy-retry":
        text = "policies:\n  - name: example\n    match: {}\n" + "\n".join(
            f"    {line}" for line in text.splitlines()
        )
    if not text.lstrip().startswith(("apiVersion", "#")) or "apiVersion:" not in text:
        text = "apiVersion: rerund/v1\n" + text
    (tmp_path / "example.yaml").write_text(text)

    load_policies([tmp_path / "example.yaml"])


@pytest.mark.parametrize("block", of_kind("yaml"), ids=lambda b: b.id)
def test_a_yaml_example_parses(block: Block) -> None:
    assert list(yaml.safe_load_all(block.text))


@pytest.mark.parametrize("block", of_kind("settings"), ids=lambda b: b.id)
def test_a_settings_example_loads(block: Block, tmp_path: Path) -> None:
    (tmp_path / "rerund.yaml").write_text(block.text)

    load_settings(tmp_path / "rerund.yaml", environ={})


@pytest.mark.parametrize("block", of_kind("workload"), ids=lambda b: b.id)
def test_a_workload_example_loads(block: Block, tmp_path: Path) -> None:
    (tmp_path / "workload.yaml").write_text(block.text)

    load_workload(tmp_path / "workload.yaml")


@pytest.mark.parametrize("block", of_kind("not-run", "repo", "demo"), ids=lambda b: b.id)
def test_a_rerund_line_parses_and_names_files_that_exist(block: Block) -> None:
    for line in shell_lines(block.text):
        words = [w.removeprefix(".venv/bin/") for w in shlex.split(line)]
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # VAR=value rerund ...
            words.pop(0)
        if "--" in words and words.index("--") + 1 < len(words):  # kubectl exec ... -- rerund ...
            words = words[words.index("--") + 1 :]
        if not words or words[0] != "rerund":
            continue
        argv = words[1:]
        argv = argv[: next((i for i, w in enumerate(argv) if w in (">", "|", "&&", ";")), len(argv))]
        args, extras = build_parser(argv[0] if argv else None).parse_known_args(argv)
        assert extras == [], f"{block.id}: {line}: unrecognized {extras}"
        assert getattr(args, "func", None) is not None, f"{block.id}: {line}"
        for word in argv:
            if REPO_FILE.fullmatch(word) and not word.startswith(".rerund"):
                assert (REPO / word).exists(), f"{block.id}: {line}: {word} does not exist"


def _repo_like(tmp: Path) -> Path:
    for name in ("policies", "deploy", "rerund.example.yaml"):
        (tmp / name).symlink_to(REPO / name)
    (tmp / ".venv").symlink_to(BIN.parent)  # `.venv/bin/rerund ...` as written
    return tmp


@pytest.mark.parametrize("block", of_kind("repo"), ids=lambda b: b.id)
def test_a_repo_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    cwd = _repo_like(tmp_path)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "200"}
    for line in shell_lines(block.text):
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", line],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert done.returncode == 0, f"{block.id}: {line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDemo]:
    cwd = _repo_like(tmp_path_factory.mktemp("docs-demo"))  # as `make run` at the repository root
    with live_demo(cwd) as running:
        yield running


@pytest.mark.e2e
@pytest.mark.parametrize("block", of_kind("demo"), ids=lambda b: b.id)
def test_a_demo_block_runs_against_a_live_demo(block: Block, demo: LiveDemo) -> None:
    for line in shell_lines(block.text):
        done = demo.shell(line)
        assert done.returncode == 0, f"{block.id}: {line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        assert done.stdout.strip(), f"{block.id}: {line} printed nothing"


def test_the_docs_check_every_kind_of_block_they_promise() -> None:
    """The Day-2 commands run against a live demo; the policy examples load."""
    assert of_kind("demo") and of_kind("policy") and of_kind("settings") and of_kind("repo")
