"""The ``watch`` setting: the WatchRuns stream is on by default and can be turned off (polling
only) from the file, ``RERUND_WATCH`` or ``--no-watch``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from rerund.app import App
from rerund.cli import main
from rerund.core.runs import RunSummary
from rerund.errors import ConfigError
from rerund.runtime.settings import load_settings

from .fake_control_plane import T0, Clock, FakeControlPlane, daemon_settings
from .test_reconcile import POLICIES


def test_the_watch_stream_is_on_by_default() -> None:
    assert load_settings(environ={}).watch is True


@pytest.mark.parametrize(
    ("file_text", "env", "flags", "expected"),
    [
        ("watch: false\n", {}, {}, False),
        ("", {"RERUND_WATCH": "false"}, {}, False),
        ("watch: false\n", {"RERUND_WATCH": "true"}, {}, True),
        ("", {"RERUND_WATCH": "true"}, {"watch": False}, False),
        ("", {}, {"watch": None}, True),
    ],
    ids=["file", "env", "env-over-file", "flag-over-env", "no-flag-keeps-default"],
)
def test_watch_can_be_turned_off_by_file_env_or_flag(
    tmp_path: Path, file_text: str, env: dict[str, str], flags: dict[str, bool | None], expected: bool
) -> None:
    config = tmp_path / "rerund.yaml"
    config.write_text(file_text)

    assert load_settings(config, environ=env, overrides=flags).watch is expected


def test_an_invalid_watch_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"RERUND_WATCH='sometimes' is not a boolean; use true or false"):
        load_settings(environ={"RERUND_WATCH": "sometimes"})


def test_run_help_documents_watch_and_no_watch(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])

    out = capsys.readouterr().out
    assert "--no-watch" in out and "RERUND_WATCH" in out


class _CountingWatches(FakeControlPlane):
    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.watches = 0

    async def watch(self, project: str, domain: str) -> AsyncIterator[RunSummary]:
        self.watches += 1
        async for summary in super().watch(project, domain):
            yield summary


@pytest.mark.parametrize("watch", [True, False], ids=["watch", "polling-only"])
def test_the_daemon_opens_watch_streams_only_when_watch_is_on(tmp_path: Path, watch: bool) -> None:
    clock = Clock(T0 + timedelta(minutes=5))
    cp = _CountingWatches(clock)
    settings = daemon_settings(tmp_path, POLICIES, http="off", watch=watch)
    daemon = App(settings, control_plane=cp, clock=clock, install_signals=False)
    thread = threading.Thread(target=lambda: asyncio.run(daemon.run()), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while cp.calls["list_failed"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cp.calls["list_failed"] >= 2, "the daemon did not poll"
        if watch:
            while cp.watches == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        daemon.request_stop()
        thread.join(15)
    assert (cp.watches > 0) is watch
