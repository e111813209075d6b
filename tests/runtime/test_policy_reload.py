# ruff: noqa: E501  (exact user-visible messages are kept on one line to be greppable)
"""Hot reload of a large policy set (issue 22.8): parsed off the event loop, logged in brief.

Off the loop is shown without timing: one policy file is a FIFO that only the event loop
writes. A reload that read it on the loop would wait for itself forever (the hang guard turns
that into a failure); a reload in a worker thread lets the loop write it and then completes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from hang_guard import hang_guard
from rerund.runtime.daemon import PolicyHolder
from rerund.runtime.metrics import Metrics
from test_safeyaml import plain_policies

ONE = "apiVersion: rerund/v1\npolicies:\n  - name: {name}\n    match: {{tasks: [{name}]}}\n"


def _holder(*paths: Path) -> tuple[PolicyHolder, list[int]]:
    changes: list[int] = []
    holder = PolicyHolder(paths, Metrics(CollectorRegistry()), lambda: changes.append(1))
    holder.load()
    return holder, changes


def test_a_reload_reads_and_parses_the_policies_off_the_event_loop(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(ONE.format(name="first"))
    (tmp_path / "b.yaml").write_text(ONE.format(name="second"))
    link = tmp_path / "second.yaml"
    link.symlink_to(tmp_path / "b.yaml")
    holder, changes = _holder(tmp_path / "a.yaml", link)
    fifo = tmp_path / "third.fifo"
    os.mkfifo(fifo)
    link.unlink()
    link.symlink_to(fifo)  # the second file is now a pipe only the event loop writes

    def write_the_pipe() -> None:
        with fifo.open("w") as pipe:  # opens once the reload's reader has opened it
            pipe.write(ONE.format(name="third"))

    async def scenario() -> bool:
        reload = asyncio.ensure_future(holder.reload("SIGHUP"))
        await asyncio.sleep(0)  # the reload starts and waits for the pipe
        write_the_pipe()  # on the loop: possible only while the reader is elsewhere
        return await reload

    with hang_guard(30, "a policy reload whose file only the event loop writes"):
        assert asyncio.run(scenario()) is True

    assert holder.current.names() == ["first", "third"]
    assert changes == [1]


def test_a_reload_of_twelve_policies_logs_the_count_and_the_first_five_names_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "many.yaml"
    path.write_text(ONE.format(name="only"))
    holder, _ = _holder(path)
    path.write_text(plain_policies(12))

    with caplog.at_level(logging.INFO, logger="rerund.daemon"):
        assert asyncio.run(holder.reload("file changed")) is True

    [line] = [r.getMessage() for r in caplog.records if "policies reloaded" in r.getMessage()]
    assert line == (
        "policies reloaded (file changed): 12 in force: p00000, p00001, p00002, p00003, p00004 and 7 more"
    )


def test_a_rejected_reload_with_twelve_problems_logs_the_first_ten_and_a_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "many.yaml"
    path.write_text(ONE.format(name="only"))
    holder, _ = _holder(path)
    path.write_text(plain_policies(12).replace("tasks:", "task:"))  # 12 unknown keys

    with caplog.at_level(logging.ERROR, logger="rerund.daemon"):
        assert asyncio.run(holder.reload("file changed")) is False

    lines = [r.getMessage() for r in caplog.records if "policy reload" in r.getMessage()]
    # issue 28.8: one record per line (a log collector reads lines), never a multi-line ERROR
    assert [line.count("\n") for line in lines] == [0] * 11
    assert lines[0] == (
        "policy reload (file changed) rejected: 12 problem(s); the last good policies (1) stay in force; "
        f"`rerund check {path}` lists them all"
    )
    assert lines[1].startswith(
        f"policy reload (file changed) problem 1 of 12: {path}:5:7: policies[0].match.task: unknown key 'task'"
    )
    assert lines[-1].startswith("policy reload (file changed) problem 10 of 12: ")
    assert holder.current.names() == ["only"]


# The same two at scale (10,001 policies, ~30 s each) run under `make chaos`; the two above
# cover the same log lines in the normal suite.
@pytest.mark.slow
def test_a_reload_of_ten_thousand_policies_logs_counts_and_the_first_names_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "many.yaml"
    path.write_text(ONE.format(name="only"))
    holder, _ = _holder(path)
    path.write_text(plain_policies(10_001))

    with caplog.at_level(logging.INFO, logger="rerund.daemon"):
        assert asyncio.run(holder.reload("file changed")) is True

    [line] = [r.getMessage() for r in caplog.records if "policies reloaded" in r.getMessage()]
    assert line == (
        "policies reloaded (file changed): 10001 in force: p00000, p00001, p00002, p00003, p00004 "
        "and 9996 more"
    )


@pytest.mark.slow
def test_a_rejected_reload_with_ten_thousand_problems_logs_the_first_ones_and_a_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "many.yaml"
    path.write_text(ONE.format(name="only"))
    holder, _ = _holder(path)
    path.write_text(plain_policies(10_001).replace("tasks:", "task:"))  # 10,001 unknown keys

    with caplog.at_level(logging.ERROR, logger="rerund.daemon"):
        assert asyncio.run(holder.reload("file changed")) is False

    lines = [r.getMessage() for r in caplog.records if "policy reload" in r.getMessage()]
    # issue 28.8: one record per line (a log collector reads lines), never a multi-line ERROR
    assert [line.count("\n") for line in lines] == [0] * 11
    assert lines[0] == (
        "policy reload (file changed) rejected: 10001 problem(s); the last good policies (1) stay in force; "
        f"`rerund check {path}` lists them all"
    )
    assert lines[1] == (
        f"policy reload (file changed) problem 1 of 10001: {path}:5:7: policies[0].match.task: unknown key 'task'"
        "; did you mean 'tasks'? allowed keys: projects, domains, tasks, action_tasks, labels, phases, error"
    )
    assert lines[-1].startswith("policy reload (file changed) problem 10 of 10001: ")
    assert holder.current.names() == ["only"]
