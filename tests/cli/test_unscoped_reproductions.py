"""A reproduction check whose source names no project/domain cannot run under a wildcard scope
(``--scope '*/*'``, the README's "try all of it locally"): ``rerund check`` warns where the
source is, and ``repro run`` refuses with the daemon's own reason (issue 28.6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rerund.cli import main
from rerund.core.repro import UNSCOPED

POLICIES = """\
apiVersion: rerund/v1
reproductions:
  - name: det
    schedule: "0 3 * * *"
    source: {task: det.train}
"""


def test_check_warns_where_a_reproduction_source_names_no_project_or_domain(tmp_path: Path, capsys) -> None:
    path = tmp_path / "repro.yaml"
    path.write_text(POLICIES)

    assert main(["check", str(path)]) == 0
    assert main(["check", "--strict", str(path)]) == 1

    out = capsys.readouterr().out
    assert f"{path}:5:13: reproductions[0].source: warning: check 'det': {UNSCOPED}" in out
    assert "under a wildcard scope such as */*" in UNSCOPED


def test_the_repositorys_reproductions_name_their_project_and_domain(capsys) -> None:
    repo = Path(__file__).resolve().parents[2]

    assert main(["check", "--strict", str(repo / "policies" / "reproductions.yaml")]) == 0


@pytest.mark.e2e
def test_repro_run_under_a_wildcard_scope_gives_the_daemons_reason(
    sandbox_factory, tmp_path: Path, capsys
) -> None:
    sb = sandbox_factory(workload={"tasks": {"det.train": {"outputs": {"a": 1}}}}, time_scale=0.01)
    (tmp_path / "repro.yaml").write_text(POLICIES)
    argv = ["repro", "run", "det", "--endpoint", sb.endpoint, "--org", sb.org, "--scope", "*/*",
            "--policies", str(tmp_path / "repro.yaml"), "--state", str(tmp_path / "rerund.db")]  # fmt: skip

    assert main(argv) == 2

    assert f"rerund repro: check 'det' cannot run: {UNSCOPED}" in capsys.readouterr().err
