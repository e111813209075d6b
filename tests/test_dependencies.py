"""rerund installs next to a user's own flyte: pyproject.toml declares the flyte SDK stack as the
ranges `make compat` tests, and constraints.txt pins what `make install` and the image use."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compat import STACKS

REPO = Path(__file__).resolve().parents[1]
SDK_STACK = ("flyte", "flyteidl2", "connectrpc")


def _requirements() -> dict[str, Requirement]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {canonicalize_name(r.name): r for r in map(Requirement, deps)}


def _constraints() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[canonicalize_name(name)] = Version(version)
    return pins


# The releases just outside each range: the one before the oldest tested, the one after the newest.
OUTSIDE = {
    "flyte": ("2.10.2", "2.13.0"),
    "flyteidl2": ("2.0.49", "2.0.52"),
    "connectrpc": ("0.8.0", "0.11.0"),
}


@pytest.mark.parametrize("name", SDK_STACK)
def test_the_flyte_sdk_stack_is_a_range_holding_exactly_the_tested_releases(name: str) -> None:
    spec = _requirements()[name].specifier
    assert not any(s.operator in ("==", "===") for s in spec), f"{name} is pinned: {spec}"
    assert Version(STACKS["oldest"][name]) in spec and Version(STACKS["newest"][name]) in spec
    assert not any(Version(v) in spec for v in OUTSIDE[name]), f"{name}{spec} holds untested releases"


def test_constraints_pin_every_runtime_dependency_exactly_inside_its_declared_range() -> None:
    pins, requirements = _constraints(), _requirements()
    missing = sorted(set(requirements) - set(pins))
    assert not missing, f"constraints.txt pins no version of {missing}"
    for name, requirement in requirements.items():
        assert pins[name] in requirement.specifier, f"constraints.txt: {name}=={pins[name]} {requirement}"
    for extra in requirements["psycopg"].extras:
        assert canonicalize_name(f"psycopg-{extra}") in pins  # pip constraints cannot carry extras


def test_the_newest_compat_stack_is_what_constraints_pin() -> None:
    pins = _constraints()
    assert {n: str(pins[n]) for n in SDK_STACK} == STACKS["newest"]


def test_the_project_venv_holds_the_constrained_versions() -> None:
    """make install installs under constraints.txt: the venv the tests run in has its versions."""
    have = {name: Version(importlib.metadata.version(name)) for name in _constraints()}
    assert have == _constraints()


def test_pip_resolves_rerund_next_to_an_older_flyte_of_the_range(tmp_path: Path) -> None:
    """What a user does: rerund and their own flyte in one install; pip keeps their flyte."""
    report = tmp_path / "report.json"
    older = "2.11.4"
    pip = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
    proc = subprocess.run(
        [*pip, "--report", str(report), str(REPO), f"flyte=={older}"],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    chosen = {
        i["metadata"]["name"]: i["metadata"]["version"] for i in json.loads(report.read_text())["install"]
    }
    assert chosen["flyte"] == older
    assert chosen["rerund"] == "0.1.0"
