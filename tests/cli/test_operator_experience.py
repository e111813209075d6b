"""The rough edges a newcomer hits first (issue 17), each as the user sees it: the message on
the terminal, the exit status, and that no traceback is shown."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from daemon_support import free_port
from rerund.cli import main
from rerund.runtime.settings import NotifySettings, Settings

REPO = Path(__file__).resolve().parents[2]
RERUND = [sys.executable, "-m", "rerund.cli"]


def rerund(*args: str, cwd: Path = REPO, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RERUND, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


# -- 1. the HTTP address in use --------------------------------------------------------------


def test_run_next_to_a_process_on_the_http_port_exits_2_with_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = rerund(
            "run",
            "--endpoint",
            f"http://127.0.0.1:{free_port()}",
            "--org",
            "sandbox",
            "--scope",
            "demo/development",
            "--policies",
            str(REPO / "policies"),
            "--state",
            str(tmp_path / "rerund.db"),
            "--http",
            f"127.0.0.1:{port}",
        )
    assert done.returncode == 2, done.stderr
    assert f"rerund run: the HTTP address 127.0.0.1:{port} is already in use" in done.stderr
    assert "pass --http HOST:PORT (port 0 picks a free one) or --http off" in done.stderr
    assert "Traceback" not in done.stderr


# -- 3. run --help lists every setting ---------------------------------------------------------


def test_run_help_lists_every_setting_and_the_example_file(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    table = out[out.index("settings (file < RERUND_* environment < flags") :]
    for key in Settings.model_fields:
        if key not in ("api_key", "notify"):
            assert f"\n  {key} " in table, key
    for key in NotifySettings.model_fields:
        assert f"\n  notify.{key} " in table, key
    assert "rerund.example.yaml shows every one" in table
    assert (
        "--max-concurrent-reruns N\n"
        "                        reruns being created at once, at most (default 64)" in out
    )


# -- 4. a closed pipe never shows a traceback --------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("schema",),
        ("repro", "list", "--policies", "policies/reproductions.yaml", "--format", "json"),
        ("check", "policies/", "--format", "junit"),
        ("history", "--state", "{ledger}"),
    ],
    ids=["schema", "repro-list-json", "check-junit", "history"],
)
def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path, args: tuple[str, ...]) -> None:
    ledger = tmp_path / "rerund.db"
    if "{ledger}" in args:
        from rerund.adapters.ledger import Ledger
        from runtime.test_daemon_http_history import _ledger_with_decisions

        ledger = _ledger_with_decisions(tmp_path)
        assert Ledger(ledger).history()
    argv = [a.replace("{ledger}", str(ledger)) for a in args]
    proc = subprocess.Popen([*RERUND, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first write, as with `| head -c 0`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err


# -- 8. failure documents ------------------------------------------------------------------------


def test_the_readme_failure_example_explains_without_failed_at(capsys) -> None:
    failure = REPO / "policies" / "failures" / "connection-reset.yaml"
    assert "failed_at:" not in "".join(
        line for line in failure.read_text().splitlines() if not line.startswith("#")
    )
    code = main(
        [
            "explain",
            "--policies",
            str(REPO / "policies"),
            "--failure",
            str(failure),
            "--now",
            "2026-11-24T10:00:00Z",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("decision:   rerun\nreason:     policy 'transient-network' reruns run 'trainfit1'")
    assert "due at 2026-11-24T10:00:" in out  # counted from --now, the default failed_at
    tools = (REPO / "docs" / "policies" / "library.md").read_text()  # the docs' policy tools
    assert "--failure policies/failures/connection-reset.yaml" in tools
    assert "f.yaml" not in tools


def test_a_policy_test_file_given_as_a_failure_is_one_clear_error(capsys) -> None:
    assert (
        main(
            ["explain", "--policies", "policies/", "--failure", str(REPO / "policies/tests/rerund.test.yaml")]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "this is a policy test file (it has cases:), not a failure document" in err
    assert err.count("\n") == 1


# -- 10. unreachable control plane, mistyped flags, missing policies -------------------------------


def test_a_mistyped_flag_gets_the_commands_usage_and_a_suggestion(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--polices", "policies/"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: rerund run ")
    assert "rerund run: error: unrecognized arguments: --polices policies/; did you mean --policies?" in err

    with pytest.raises(SystemExit):
        main(["repro", "history", "x", "--limt", "3"])
    err = capsys.readouterr().err
    assert err.startswith("usage: rerund repro history ") and "did you mean --limit?" in err


def test_run_without_policies_says_it_looked_in_dot_policies(tmp_path: Path) -> None:
    done = rerund("run", "--endpoint", "http://127.0.0.1:1", "--org", "o", "--scope", "a/b", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(
        "rerund run: no policies: neither --policies nor 'policies:' in the settings was given, so rerund "
        "looked in ./policies, which does not exist"
    )
    assert done.stderr.rstrip().endswith("pass --policies PATH")


def test_the_daemon_says_plainly_it_cannot_reach_the_control_plane_in_json_logs(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "daemon.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                *RERUND,
                "run",
                "--endpoint",
                f"http://127.0.0.1:{port}",
                "--org",
                "sandbox",
                "--scope",
                "demo/development",
                "--policies",
                str(REPO / "policies" / "rerund.yaml"),
                "--state",
                str(tmp_path / "rerund.db"),
                "--http",
                "off",
                "--poll-interval",
                "1s",
                "--log-level",
                "DEBUG",
                "--log-format",
                "json",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 90
        while "cannot reach the control plane" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert all(r["time"].endswith("Z") for r in records)
    [down] = [r for r in records if "cannot reach the control plane" in r["message"]]
    assert down["level"] == "ERROR"
    assert down["message"].startswith(
        f"cannot reach the control plane at http://127.0.0.1:{port}: Connection refused"
    )
    assert "rerund keeps trying (a resync every 1s" in down["message"]
    assert any(r["level"] == "DEBUG" and r["message"].startswith("resync pass: ") for r in records)
    assert not [r for r in records if r["level"] == "INFO" and "watch of" in r["message"]][1:]


# -- 11. the small ones ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (["history", "--help"], "at most N decisions (default 50)"),
        (["demo", "--help"], "the sandbox's workload: tasks, their behaviour"),
        (["test", "--help"], "a *.test.yaml file, or a directory searched recursively"),
        (["schema", "--help"], "for completion and validation in editors"),
        (["--help"], "rerund explain --policies policies/ --failure policies/failures/connection-reset.yaml"),
        (["explain", "--help"], "example: policies/failures/connection-reset.yaml"),
    ],
    ids=["history-limit", "demo-workload", "test-path", "schema", "top-level-example", "explain-failure"],
)
def test_help_says_what_each_option_does(capsys, argv: list[str], text: str) -> None:
    with pytest.raises(SystemExit):
        main(argv)
    assert text in " ".join(capsys.readouterr().out.split())
    for path in ("policies/failures/connection-reset.yaml", "rerund.example.yaml"):
        assert (REPO / path).exists()


def test_check_and_test_write_json_and_junit_for_ci(tmp_path: Path, capsys) -> None:
    assert main(["check", str(REPO / "policies"), "--format", "json"]) == 0
    ok = json.loads(capsys.readouterr().out)
    assert ok["ok"] is True and "transient-network" in ok["policies"]

    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: rerund/v1\npolicies:\n  - name: Bad Name\n    retry: {}\n")
    assert main(["check", str(bad), "--format", "json"]) == 1
    [problem] = json.loads(capsys.readouterr().out)["problems"]
    assert (problem["file"], problem["line"], problem["path"]) == (str(bad), 3, "policies[0].name")
    assert main(["check", str(bad), "--format", "junit"]) == 1
    suite = ET.fromstring(capsys.readouterr().out).find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    assert "policies[0].name" in suite.find("testcase/failure").get("message")

    assert main(["test", str(REPO / "policies"), "--format", "junit"]) == 0
    suite = ET.fromstring(capsys.readouterr().out).find("testsuite")
    assert suite.get("failures") == "0" and int(suite.get("tests")) >= 10
    failing = tmp_path / "f.test.yaml"
    failing.write_text(
        f"policies: {REPO / 'policies' / 'rerund.yaml'}\nnow: 2026-11-24T10:00:00Z\ncases:\n"
        "  - name: wrong expectation\n    failure: {run: r1, failed_at: 2026-11-24T10:00:00Z}\n"
        "    expect: {decision: rerun}\n"
    )
    assert main(["test", str(failing), "--format", "json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["failed"] == 1 and result["cases"][0]["result"] == "failed"
    assert main(["test", str(failing), "--format", "junit"]) == 1
    case = ET.fromstring(capsys.readouterr().out).find("testsuite/testcase")
    assert case.get("name") == "wrong expectation" and case.find("failure") is not None


def test_error_kinds_and_phases_are_case_insensitive(tmp_path: Path, capsys) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "apiVersion: rerund/v1\npolicies:\n  - name: x\n"
        "    match: {phases: [failed, timed_out], error: {kinds: [system]}}\n    retry: {max_attempts: 1}\n"
    )
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().out == "ok: 1 policy in 1 file: x\n"


def test_the_sandbox_removes_the_flyte_config_it_wrote(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*RERUND, "sandbox", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    config = None
    for line in proc.stdout:
        if "config written to " in line:
            config = Path(line.split("config written to ", 1)[1].split(";", 1)[0].rstrip("):\n"))
            assert "removed when the sandbox stops" in line
        if line.startswith("Stop with"):
            break
    assert config is not None and config.exists()
    proc.send_signal(2)
    assert proc.wait(timeout=30) == 0
    assert not config.exists()


@pytest.mark.e2e
def test_a_short_demo_shows_a_reproduction_result_and_a_closing_summary(tmp_path: Path) -> None:
    handover = tmp_path / ".rerund"
    done = rerund(
        "demo", "--duration", "25", "--time-scale", "0.2", "--http", "127.0.0.1:0",
        "--handover-dir", str(handover), timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    err = done.stderr
    ledger = handover / "demo.db"
    assert f"  ledger                 {ledger}  (kept after the demo; a new demo starts afresh)" in err
    assert "operator page          http://127.0.0.1:" in err
    summary = err[err.index("rerund demo: summary") :]
    assert "  check          daily-metrics: match" in summary
    assert f"  ledger         {ledger} (rerund history --config {handover / 'demo.yaml'})" in summary
    assert os.linesep in summary


def test_junit_stays_valid_xml_with_control_characters_in_names_and_messages(tmp_path: Path, capsys) -> None:
    """A case name, file name or failure text with a control character (legal in YAML, not in
    XML 1.0) is written visibly escaped (``\\x01``), so CI can still parse the report."""
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "apiVersion: rerund/v1\npolicies:\n  - name: ok\n    match: {error: {kinds: [USER]}}\n"
        "    retry: {max_attempts: 2}\n"
    )
    cases = tmp_path / "t.test.yaml"
    cases.write_text(
        "policies: p.yaml\nnow: 2026-11-24T10:00:00Z\n"
        "failure: {project: ml, domain: production, task: t, failed_at: 2026-11-24T10:00:00Z}\n"
        'cases:\n  - name: "case <&> \\x01 \\x1b[31m"\n'
        '    failure: {run: r1, error: {kind: USER, message: "boom \\x02"}}\n'
        '    expect: {decision: ignore, reason_matches: "\\x03"}\n'
    )
    assert main(["test", str(cases), "--format", "junit"]) == 1
    case = ET.fromstring(capsys.readouterr().out).find("testsuite/testcase")
    assert case is not None and case.get("name") == "case <&> \\x01 \\x1b[31m"
    assert "\\x03" in case.find("failure").text

    odd = tmp_path / "we\x01ird<&.yaml"
    odd.write_text(policy.read_text())
    assert main(["check", str(odd), "--format", "junit"]) == 0
    case = ET.fromstring(capsys.readouterr().out).find("testsuite/testcase")
    assert case is not None and case.get("name").endswith("we\\x01ird<&.yaml")


def test_test_in_ci_formats_says_why_it_fails_when_there_are_no_test_files(tmp_path: Path, capsys) -> None:
    """Exit 1 with an empty report would read as green in CI: the report carries the reason."""
    empty = tmp_path / "empty"
    empty.mkdir()
    why = f"no *.test.yaml files under {empty}; point rerund test at policy tests (NAME.test.yaml)"

    assert main(["test", str(empty), "--format", "json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["errors"] == 1
    assert result["cases"] == [{"file": str(empty), "case": "", "result": "error", "details": [why]}]

    assert main(["test", str(empty), "--format", "junit"]) == 1
    suite = ET.fromstring(capsys.readouterr().out).find("testsuite")
    assert suite is not None and suite.get("tests") == "1" and suite.get("failures") == "1"
    assert suite.find("testcase/failure").get("message") == why
