"""``rerund demo`` hands over its connection (issue 28.1): while it runs, ``.rerund/demo.yaml``
(rerund settings) and ``.rerund/flyte.yaml`` (the flyte CLI's config) exist in the working
directory, and every copy-paste line its banner prints works as printed — run here as
subprocesses, the way a user pastes them into a second terminal, against a live demo."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from demo_support import DECISION, REPO, LiveDemo, live_demo, read_until, start_demo, stop
from rerund.runtime.settings import load_settings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDemo]:
    with live_demo(tmp_path_factory.mktemp("demo-cwd")) as running:
        yield running


def test_the_demo_writes_its_settings_and_a_flyte_config_into_dot_rerund(demo: LiveDemo) -> None:
    settings = load_settings(demo.cwd / ".rerund/demo.yaml")
    flyte = yaml.safe_load((demo.cwd / ".rerund/flyte.yaml").read_text())

    assert settings.endpoint is not None and settings.endpoint.startswith("http://127.0.0.1:")
    assert (settings.org, [s.key for s in settings.scopes]) == ("sandbox", ["demo/development"])
    assert Path(settings.state) == demo.cwd / ".rerund/demo.db"
    assert [Path(p) for p in settings.policies] == [REPO / "policies/library", REPO / "policies"]
    assert flyte["admin"] == {"endpoint": settings.endpoint, "insecure": True}
    assert flyte["task"] == {"org": "sandbox", "project": "demo", "domain": "development"}


def test_the_banner_prints_the_day_2_commands_for_the_demo(demo: LiveDemo) -> None:
    assert demo.commands() == [
        "rerund status --config .rerund/demo.yaml",
        "rerund history --config .rerund/demo.yaml",
        "rerund history --config .rerund/demo.yaml --run RUN",
        "rerund explain RUN --config .rerund/demo.yaml",
        "flyte --config .rerund/flyte.yaml get run -p demo -d development",
    ]


# a pasted line -> a text its output holds
EXPECTED = {
    "rerund status": "rerund status at ",
    "rerund history --config .rerund/demo.yaml": "demo/development/",
    "rerund history --config .rerund/demo.yaml --run": "lineage demo/development/",
    "rerund explain": "decision:",
    "flyte": "Name",
}


@pytest.mark.parametrize("index", range(5), ids=["status", "history", "history-run", "explain", "flyte"])
def test_each_pasted_line_works_against_the_live_demo(demo: LiveDemo, index: int) -> None:
    line = demo.commands()[index]
    done = demo.shell(line)

    assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    expected = next(v for k, v in sorted(EXPECTED.items(), key=lambda kv: -len(kv[0])) if line.startswith(k))
    assert expected in done.stdout, done.stdout[-2000:]
    if line.startswith("flyte"):
        assert demo.run in done.stdout


def test_a_new_demo_starts_a_fresh_ledger_and_keeps_it_after_it_stops(tmp_path: Path) -> None:
    handover = tmp_path / ".rerund"
    handover.mkdir()
    (handover / "demo.db").write_text("not a ledger: an old demo's leftover")
    demo, seen = start_demo(tmp_path)
    read_until(demo, seen, DECISION)
    rest = stop(demo)

    assert "rerund demo: summary" in rest
    assert f"  ledger         {handover / 'demo.db'} (rerund history --config .rerund/demo.yaml)" in rest
    done = subprocess.run(
        [sys.executable, "-m", "rerund.cli", "history", "--config", ".rerund/demo.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and "demo/development/" in done.stdout, done.stderr


def test_the_handover_settings_name_the_ledger_by_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So the file works from any directory. (A ``--state`` URL of a shared state store is
    written as it is: ``write_handover`` leaves a value with ``://`` alone.)"""
    from rerund.cli.demo import write_handover
    from rerund.runtime.settings import Settings

    monkeypatch.chdir(tmp_path)
    settings = Settings(
        endpoint="http://127.0.0.1:8090", org="sandbox", scopes=["demo/development"], state="demo.db"
    )
    files = write_handover(tmp_path / ".rerund", settings, project="demo", domain="development")

    assert files == (".rerund/demo.yaml", ".rerund/flyte.yaml")
    assert yaml.safe_load((tmp_path / ".rerund/demo.yaml").read_text())["state"] == str(tmp_path / "demo.db")
    flyte = yaml.safe_load((tmp_path / ".rerund/flyte.yaml").read_text())
    assert flyte["admin"]["endpoint"] == "http://127.0.0.1:8090"
