"""``rerund explain RUN --config``: the daemon's decision about a live run on the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from daemon_support import write_settings
from rerund.cli import main
from rerund.sandbox.testing import SandboxHandle

from .test_reconcile import POLICIES

pytestmark = pytest.mark.e2e

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
        },
        "ok": {"behaviour": ["succeed"], "duration": "0.1s"},
    }
}


@pytest.fixture
def setup(sandbox_factory, tmp_path: Path) -> tuple[SandboxHandle, Path]:
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.5)
    (tmp_path / "policies.yaml").write_text(POLICIES)
    return sb, write_settings(tmp_path / "rerund.yaml", sb, policies=["policies.yaml"])


def test_a_live_failed_run_is_explained_with_its_lineage_and_trace(setup, capsys) -> None:
    sb, config = setup
    [name] = sb.launch("net.flaky")
    sb.wait_idle()

    assert main(["explain", name, "--config", str(config)]) == 0
    out = capsys.readouterr().out

    assert f"lineage:    root '{name}', attempt 0 (0 rerun(s) issued before this run)" in out
    assert f"reruns:     no rerun of lineage '{name}' exists yet" in out
    assert "error:      SYSTEM ConnectionResetError: Connection reset by peer" in out
    assert "decision:   rerun" in out
    assert f"name:       {name}-retry-1" in out
    assert "trace:" in out and "transient" in out
    assert sb.runs()[-1]["name"] == name, "explain must not create anything"


def test_a_live_rerun_is_explained_from_its_lineage_labels_as_json(setup, capsys) -> None:
    sb, config = setup
    [name] = sb.launch("net.flaky", name="orig")
    for attempt in (1, 2, 3):  # each rerun's relation names the one before, as the SDK sets it
        labels = {"rerund-root": "orig", "rerund-attempt": str(attempt), "rerund-policy": "transient"}
        [name] = sb.launch("net.flaky", name=f"orig-retry-{attempt}", labels=labels, rerun_of=name)
    sb.wait_idle()

    assert main(["explain", name, "--config", str(config), "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)

    assert body["decision"] == "give_up"
    assert body["failure"]["root"] == "orig" and body["failure"]["attempt"] == 3
    assert "exceed max_attempts=3" in body["reason"]


def test_lineage_labels_without_a_relation_are_explained_as_an_original_run(setup, capsys) -> None:
    """Issue 22.2: anyone can write rerund's labels; without a relation they are ignored."""
    sb, config = setup
    [name] = sb.launch(
        "net.flaky", labels={"rerund-root": "orig", "rerund-attempt": "3", "rerund-policy": "transient"}
    )
    sb.wait_idle()

    assert main(["explain", name, "--config", str(config), "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)

    assert body["decision"] == "rerun"
    assert body["failure"]["root"] == name and body["failure"]["attempt"] == 0


def test_a_run_that_did_not_fail_is_said_so(setup, capsys) -> None:
    sb, config = setup
    [name] = sb.launch("ok")
    sb.wait_idle()

    assert main(["explain", name, "--config", str(config)]) == 1
    assert "is SUCCEEDED, not failed: rerund decides only about FAILED, TIMED_OUT and ABORTED runs" in (
        capsys.readouterr().out
    )


def test_an_unknown_run_is_a_clear_error(setup, capsys) -> None:
    _, config = setup

    assert main(["explain", "nosuchrun", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rerund explain: GetRunDetails failed (not_found)")


def test_an_already_retried_run_says_its_reruns_exist_and_where_the_lineage_stands(setup, capsys) -> None:
    sb, config = setup
    [name] = sb.launch("net.flaky")
    previous = name
    for attempt in (1, 2, 3):
        labels = {"rerund-root": name, "rerund-attempt": str(attempt), "rerund-policy": "transient"}
        sb.launch("net.flaky", name=f"{name}-retry-{attempt}", labels=labels, rerun_of=previous)
        previous = f"{name}-retry-{attempt}"
    sb.wait_idle()

    assert main(["explain", name, "--config", str(config)]) == 0
    out = capsys.readouterr().out

    assert (
        f"reruns:     3 rerun(s) of lineage '{name}' exist: {name}-retry-1 (attempt 1, FAILED), "
        f"{name}-retry-2 (attempt 2, FAILED), {name}-retry-3 (attempt 3, FAILED)"
    ) in out
    assert (
        "note:       this run is attempt 0 of its lineage; the decision below was carried out already: "
        f"attempt 1 exists as '{name}-retry-1'"
    ) in out
    assert (
        f"latest:     rerun '{name}-retry-3' (attempt 3) ended FAILED; the daemon's decision about it: "
        f"give_up: policy 'transient' gives up on run '{name}-retry-3': attempt 4 would exceed max_attempts=3"
    ) in out, out
    assert main(["explain", name, "--config", str(config), "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in body["lineage"]["reruns"]] == [f"{name}-retry-{n}" for n in (1, 2, 3)]
    assert body["lineage"]["latest"]["decision"]["decision"] == "give_up"
    assert body["lineage"]["latest"]["attempt"] == 3


def test_an_unreachable_control_plane_is_one_plain_line_and_no_retry(tmp_path: Path, capsys) -> None:
    from daemon_support import free_port

    (tmp_path / "policies.yaml").write_text(POLICIES)
    port = free_port()
    config = tmp_path / "rerund.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "endpoint": f"http://127.0.0.1:{port}",
                "org": "sandbox",
                "scopes": ["demo/development"],
                "policies": ["policies.yaml"],
                "rpc_timeout": "5s",
            }
        )
    )

    assert main(["explain", "somerun", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rerund explain: cannot reach the control plane at http://127.0.0.1:{port} (")
    assert (
        "check the endpoint setting and that the control plane is up (rerund explain does not retry)" in err
    )
    assert "retrying" not in err


SECRET_POLICIES = POLICIES.replace(
    "env: {FLYTE_RETRY: 'true'}", "env: {FLYTE_RETRY: 'true', API_PASS: hunter2}"
).replace("inputs: {batch_size: 16}", "inputs: {batch_size: 16, api_token: INPUTSECRET42}")


def test_live_and_offline_explain_show_env_and_inputs_alike_and_no_value_that_may_be_secret(
    setup, tmp_path: Path, capsys
) -> None:
    """Issue 22.5 (one path for the live and the offline explain) and 22.3 (no input value in a
    reason): both show env keys without values and secret inputs masked, in text and JSON."""
    sb, config = setup
    (tmp_path / "policies.yaml").write_text(SECRET_POLICIES)
    [name] = sb.launch("net.flaky")
    sb.wait_idle()
    failure = tmp_path / "failure.yaml"
    failure.write_text(
        f"run: {name}\nfailed_at: 2026-11-24T10:00:00Z\naction: a1\n"
        "error: {kind: SYSTEM, code: ConnectionResetError, message: Connection reset by peer}\n"
    )
    offline = ["explain", "--policies", str(tmp_path / "policies.yaml"), "--failure", str(failure)]
    shown: dict[str, dict] = {}
    texts: dict[str, str] = {}
    for where, argv in (("live", ["explain", name, "--config", str(config)]), ("offline", offline)):
        assert main([*argv, "--format", "json"]) == 0
        shown[where] = json.loads(capsys.readouterr().out)
        assert main([*argv, "--format", "text"]) == 0
        texts[where] = capsys.readouterr().out

    for where in ("live", "offline"):
        body, text = shown[where], texts[where]
        assert body["env"] == {"FLYTE_RETRY": "***", "API_PASS": "***"}, where
        assert body["inputs"] == {"batch_size": 16, "api_token": "***"}, where
        assert "inputs api_token: set (value not shown)" in body["reason"], where
        assert "env:        FLYTE_RETRY=***, API_PASS=***" in text, where
        for secret in ("hunter2", "INPUTSECRET42", "FLYTE_RETRY=true"):
            assert secret not in text and secret not in json.dumps(body), (where, secret)
    assert shown["live"]["changes"][-2:] == shown["offline"]["changes"][-2:]
