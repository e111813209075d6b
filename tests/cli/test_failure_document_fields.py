"""The failure document carries what a relaunch policy decides on — ``resources``,
``task_version``, ``latest_version`` — and the docs' table lists every key it accepts
(issue 28.7)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rerund.cli import main
from rerund.policy.failures import FAILURE_KEYS

REPO = Path(__file__).resolve().parents[2]

POLICIES = """\
apiVersion: rerund/v1
policies:
  - name: oom-more-memory
    match: {error: {classes: [oom]}}
    retry: {scope: relaunch, max_attempts: 4, resources: {memory: 2x}, task_version: same}
  - name: wait-for-fix
    match: {error: {kinds: [USER]}}
    retry: {scope: relaunch, task_version: newer, max_wait: 1d, max_attempts: 1}
"""


def _table_keys() -> set[str]:
    section = (REPO / "docs" / "policies" / "failure-documents.md").read_text()
    return {
        key
        for row in section.splitlines()
        if row.startswith("| `")
        for key in re.findall(r"`(\w+)`", row.split("|")[1])
    }


@pytest.mark.parametrize("key", FAILURE_KEYS)
def test_the_docs_table_lists_every_key_of_a_failure_document(key: str) -> None:
    assert key in _table_keys()


def _explain(tmp_path: Path, capsys, failure: str) -> dict:
    (tmp_path / "p.yaml").write_text(POLICIES)
    (tmp_path / "f.yaml").write_text(failure)
    argv = ["explain", "--policies", str(tmp_path / "p.yaml"), "--failure", str(tmp_path / "f.yaml")]
    assert main([*argv, "--now", "2026-11-24T10:00:00Z", "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_an_oom_failure_with_its_resources_and_version_is_relaunched_with_twice_the_memory(
    tmp_path, capsys
) -> None:
    body = _explain(
        tmp_path,
        capsys,
        """\
run: r1
task: train.big
task_version: v1
latest_version: v2
resources: {requests: {memory: 4Gi, cpu: "1"}, limits: {memory: 4Gi}}
error: {kind: USER, code: OOMKilled, message: "container killed: out of memory"}
""",
    )

    assert body["decision"] == "rerun", body
    changes = "\n".join(body["changes"])
    assert "memory request 4Gi -> 8Gi" in changes and "memory limit 4Gi -> 8Gi" in changes
    assert "task version: v1 (same)" in changes


def test_a_failure_waiting_for_a_fix_is_relaunched_on_the_latest_version_it_names(tmp_path, capsys) -> None:
    body = _explain(
        tmp_path,
        capsys,
        """\
run: r2
task: report.monthly
task_version: v1
latest_version: v2
failed_at: 2026-11-24T09:00:00Z
error: {kind: USER, code: ValueError, message: bad input}
""",
    )

    assert body["decision"] == "rerun", body
    assert "task version: v1 -> v2" in "\n".join(body["changes"])
