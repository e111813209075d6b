"""``rerund explain RUN`` under a wildcard scope (``*/*``, the scope the README recommends for
Union): the run is named as the daemon's logs print it (``project/domain/run``), with
``--project``/``--domain``, or by its bare name, which is looked up across the configured scopes;
an ambiguous name lists the candidates (issue 28.2)."""

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


def test_a_bare_run_name_is_looked_up_across_a_wildcard_scope(failed, capsys) -> None:
    _, config, name = failed

    assert main(["explain", name, "--config", str(config), "-o", "json"]) == 0

    body = json.loads(capsys.readouterr().out)
    assert body["decision"] == "rerun" and body["failure"]["root"] == name


def test_a_bare_run_name_is_looked_up_across_several_concrete_scopes(failed, tmp_path: Path, capsys) -> None:
    sb, config, _ = failed
    [name] = sb.launch("net.flaky", project="ml", domain="production")
    sb.wait_idle()
    config.write_text(config.read_text().replace("'*/*'", f"{sb.project}/{sb.domain}\n- ml/production"))

    assert main(["explain", name, "--config", str(config), "-o", "json"]) == 0

    assert json.loads(capsys.readouterr().out)["decision"] == "rerun"


def test_a_bare_run_name_in_two_scopes_lists_both_candidates(failed, capsys) -> None:
    sb, config, name = failed
    sb.launch("net.flaky", project="ml", domain="production", name=name)
    sb.wait_idle()

    assert main(["explain", name, "--config", str(config)]) == 2

    err = capsys.readouterr().err
    assert (
        f"run name {name!r} is in 2 scopes: {sb.project}/{sb.domain}/{name}, ml/production/{name}; "
        f"name one as PROJECT/DOMAIN/RUN, e.g. rerund explain {sb.project}/{sb.domain}/{name}"
    ) in err


def test_a_bare_run_name_found_nowhere_says_where_it_looked(failed, capsys) -> None:
    _, config, _ = failed

    assert main(["explain", "rnosuchrun", "--config", str(config)]) == 2

    err = capsys.readouterr().err
    assert "no run named 'rnosuchrun' in the scopes */* (under a wildcard scope: among the runs that " in err
    assert "check the name, or write it as PROJECT/DOMAIN/rnosuchrun" in err


def test_a_project_outside_the_scopes_says_which_scopes_are_watched(failed, capsys) -> None:
    sb, config, name = failed
    config.write_text(config.read_text().replace("'*/*'", f"{sb.project}/{sb.domain}"))

    assert main(["explain", name, "--project", "other", "--config", str(config)]) == 2

    err = capsys.readouterr().err
    assert f"which project/domain is run {name!r} in? the settings watch '{sb.project}/{sb.domain}', " in err
    assert "none of them with --project other" in err


@pytest.mark.parametrize("run", ["a/b", "a/b/c/d", "a//c"], ids=["two-parts", "four-parts", "empty-part"])
def test_a_run_with_slashes_that_is_not_project_domain_run_is_refused(failed, capsys, run: str) -> None:
    _, config, _ = failed

    assert main(["explain", run, "--config", str(config)]) == 2

    assert f"run {run!r} is neither a run name nor PROJECT/DOMAIN/RUN" in capsys.readouterr().err


def test_explain_help_documents_both_ways_of_naming_the_run() -> None:
    text = build_parser("explain")._subparsers._group_actions[0].choices["explain"].format_help()  # type: ignore[union-attr]

    assert "PROJECT/DOMAIN/RUN" in text
    assert "--project PROJECT" in text and "--domain DOMAIN" in text
