"""``rerund explain RUN`` under a wildcard scope (``*/*``, the scope the README recommends for
Union): the run is named as the daemon's logs print it (``project/domain/run``) or with
``--project``/``--domain``; a bare name says what to pass (issue 28.2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon_support import write_settings
from rerund.cli import build_parser, main
from rerund.sandbox.testing import SandboxHandle

pytestmark = pytest.mark.e2e

POLICIES = """\
apiVersion: rerund/v1
policies:
  - name: transient
    match: {error: {kinds: [SYSTEM]}}
    retry: {max_attempts: 3}
"""

WORKLOAD = {
    "tasks": {
        "net.flaky": {
            "duration": "0.1s",
            "behaviour": ["fail"],
            "error": {
                "kind": "SYSTEM",
                "code": "ConnectionResetError",
                "message": "Connection reset by peer",
            },
        }
    }
}


@pytest.fixture
def failed(sandbox_factory, tmp_path: Path) -> tuple[SandboxHandle, Path, str]:
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.5)
    (tmp_path / "policies.yaml").write_text(POLICIES)
    config = write_settings(tmp_path / "rerund.yaml", sb, policies=[str(tmp_path / "policies.yaml")])
    config.write_text(config.read_text().replace(f"{sb.project}/{sb.domain}", "'*/*'"))
    [name] = sb.launch("net.flaky")
    sb.wait_idle()
    return sb, config, name


def test_a_run_named_project_domain_run_is_explained_under_a_wildcard_scope(failed, capsys) -> None:
    sb, config, name = failed

    assert (
        main(["explain", f"{sb.project}/{sb.domain}/{name}", "--config", str(config), "--format", "json"])
        == 0
    )
    body = json.loads(capsys.readouterr().out)

    assert body["decision"] == "rerun" and body["failure"]["root"] == name


def test_project_and_domain_flags_name_the_run_under_a_wildcard_scope(failed, capsys) -> None:
    sb, config, name = failed

    argv = ["explain", name, "--project", sb.project, "--domain", sb.domain, "--config", str(config)]
    assert main([*argv, "--format", "json"]) == 0

    assert json.loads(capsys.readouterr().out)["decision"] == "rerun"


def test_a_bare_run_under_a_wildcard_scope_says_what_to_pass(failed, capsys) -> None:
    _, config, name = failed

    assert main(["explain", name, "--config", str(config)]) == 2

    err = capsys.readouterr().err
    assert f"which project/domain is run {name!r} in? the scope '*/*' names none" in err
    assert f"write it as PROJECT/DOMAIN/{name} (as the daemon's logs print it)" in err
    assert "or pass --project and --domain" in err


@pytest.mark.parametrize("run", ["a/b", "a/b/c/d", "a//c"], ids=["two-parts", "four-parts", "empty-part"])
def test_a_run_with_slashes_that_is_not_project_domain_run_is_refused(failed, capsys, run: str) -> None:
    _, config, _ = failed

    assert main(["explain", run, "--config", str(config)]) == 2

    assert f"run {run!r} is neither a run name nor PROJECT/DOMAIN/RUN" in capsys.readouterr().err


def test_explain_help_documents_both_ways_of_naming_the_run() -> None:
    text = build_parser("explain")._subparsers._group_actions[0].choices["explain"].format_help()  # type: ignore[union-attr]

    assert "PROJECT/DOMAIN/RUN" in text
    assert "--project PROJECT" in text and "--domain DOMAIN" in text
