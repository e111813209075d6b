# ruff: noqa: E501  (exact user-visible messages are kept on one line to be greppable)
"""``rerund check / explain / test / schema`` through ``rerund.cli.main`` with capsys."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rerund.cli import main
from rerund.core.fingerprints import error_fingerprint, failure_fingerprint
from rerund.core.model import ErrorInfo
from rerund.policy.failures import load_failure

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"

FAILURE = """\
run: ab12cd34ef56gh78ij90
project: demo
domain: development
task: etl.pipeline
action: a2
action_task: etl.load
error: {kind: SYSTEM, code: HTTPError, message: "HTTPError: 503 Service Unavailable from warehouse"}
failed_at: 2026-11-24T10:00:00Z
"""


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text))
    return path


# --- check --------------------------------------------------------------------------------


def test_check_accepts_the_shipped_policies(capsys):
    assert main(["check", str(POLICIES), str(POLICIES / "examples")]) == 0
    out = capsys.readouterr().out
    assert out == (
        "ok: 4 policies in 3 files: never-retry-bad-input, transient-network, cuda-oom, spot-preemption; "
        "2 reproduction checks: daily-metrics, train-fit; "
        "incidents: open after 12 failures within 30s, probe every 10s\n"
    )


def test_check_prints_every_problem_and_exits_1(tmp_path, capsys):
    bad = write(
        tmp_path / "bad.yaml",
        """\
        apiVersion: rerund/v1
        policies:
          - name: a
            match: {error: {patterns: ['(?<!x)y']}}
            retry: {backoff: {initial: soon}}
        """,
    )
    assert main(["check", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"{bad}:4:32: policies[0].match.error.patterns[0]: invalid RE2 pattern '(?<!x)y': invalid perl operator: (?<! (RE2 has no backreferences or lookaround; rewrite the pattern without them)",
        f"{bad}:5:32: policies[0].retry.backoff.initial: invalid duration 'soon': use a number with a unit ms, s, m, h or d, e.g. 30s, 10m, 1h, 1d or 1h30m",
    ]
    assert captured.err == "2 problems found\n"


def test_check_of_a_missing_path_says_so(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.yaml")]) == 1
    assert (
        capsys.readouterr().out
        == f"{tmp_path / 'nope.yaml'}:1:1: no such file or directory; check the path\n"
    )


# --- explain ------------------------------------------------------------------------------


def test_explain_prints_the_decision_and_the_trace(tmp_path, capsys):
    failure = write(tmp_path / "failure.yaml", FAILURE)
    code = main(
        ["explain", "--policies", str(POLICIES), "--failure", str(failure), "--now", "2026-11-24T10:00:00Z"]
    )
    assert code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "decision:   rerun"
    assert lines[1].startswith(
        "reason:     policy 'transient-network' reruns run 'ab12cd34ef56gh78ij90' as 'ab12cd34ef56gh78ij90-retry-1': "
        "attempt 1 of max_attempts=3, scope failed_action (action 'a2'), due at 2026-11-24T10:00:0"
    )
    assert "name:       ab12cd34ef56gh78ij90-retry-1" in lines
    assert "action:     a2" in lines
    assert [line for line in lines if line.startswith("fingerprint:")] == [
        f"fingerprint: {failure_fingerprint(load_failure(failure, now=datetime.now(UTC)))}"
    ]
    assert "trace:" in lines
    assert any("1. policy 'never-retry-bad-input' (" in line and "does not match" in line for line in lines)
    assert any(
        "2. policy 'transient-network' (" in line and "'\\b50[234]\\b' found in the message" in line
        for line in lines
    )


def test_explain_json_is_the_decision_contract_plus_the_trace(tmp_path, capsys):
    failure = write(
        tmp_path / "failure.json",
        json.dumps(
            {
                "run": "r1",
                "failed_at": "2026-11-24T10:00:00Z",
                "error": {"kind": "USER", "message": "ValueError: bad"},
            }
        ),
    )
    code = main(
        [
            "explain",
            "--policies",
            str(POLICIES / "rerund.yaml"),
            "--failure",
            str(failure),
            "--format",
            "json",
            "--now",
            "2026-11-24T10:00:00Z",
        ]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {
        "decision",
        "policy",
        "reason",
        "attempt",
        "scope",
        "source_run",
        "action",
        "name",
        "env",
        "labels",
        "inputs",
        "overrides",
        "not_before",
        "fingerprint",
        "changes",
        "trace",
    }
    assert (doc["decision"], doc["policy"], doc["source_run"]) == ("ignore", "never-retry-bad-input", "r1")
    assert doc["fingerprint"] == error_fingerprint("", ErrorInfo(kind="USER", message="ValueError: bad"))
    assert doc["trace"][-1] == "policy 'never-retry-bad-input' has retry: false: ignore"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"run: x\nfailed_at: 2026-11-24T10:00:00\n",
            r"failure.yaml:2:12: failed_at: failed_at must carry a timezone, e.g. 2026-11-24T10:00:00Z",
        ),
        (
            b"run: x\nfailed_at: 2026-11-24T10:00:00Z\nerror: {kind: USER, mesage: hi}\n",
            r"failure.yaml:3:21: error.mesage: unknown key 'mesage'; did you mean 'message'\? allowed keys: kind, code, message",
        ),
        (
            b"run: x\nfailed_at: 2026-11-24T10:00:00Z\nphase: RUNNING\n",
            r"failure.yaml:3:8: phase: 'RUNNING' is not allowed; use 'FAILED', 'TIMED_OUT' or 'ABORTED'",
        ),
        (
            b'run: x\nfailed_at: 2026-11-24T10:00:00Z\nerror: {message: "\xff"}\n',
            r"failure.yaml:3:19: byte 0xff is not valid UTF-8; save the file as UTF-8",
        ),
        (b"failed_at: 2026-11-24T10:00:00Z\n", r"failure.yaml:1:1: run: missing required key 'run'"),
        (b"run: [unclosed\n", r"failure.yaml:2:1: invalid YAML: while parsing a flow sequence"),
        (b"", r"failure.yaml:1:1: empty failure file; it needs at least run"),
    ],
    ids=["naive-time", "unknown-key", "bad-phase", "not-utf8", "missing-run", "malformed", "empty"],
)
def test_explain_reports_a_bad_failure_document_without_a_traceback(tmp_path, capsys, content, message):
    failure = write(tmp_path / "failure.yaml", content)
    assert main(["explain", "--policies", str(POLICIES), "--failure", str(failure)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rerund explain: ")
    assert "Traceback" not in err
    assert __import__("re").search(message, err), err


def test_explain_decides_a_ten_megabyte_message(tmp_path, capsys):
    message = "x" * (10 << 20) + " ConnectionResetError: Connection reset by peer"
    failure = write(
        tmp_path / "big.json",
        json.dumps(
            {
                "run": "big1",
                "failed_at": "2026-11-24T10:00:00Z",
                "error": {"kind": "SYSTEM", "message": message},
            }
        ),
    )
    assert (
        main(
            [
                "explain",
                "--policies",
                str(POLICIES),
                "--failure",
                str(failure),
                "--format",
                "json",
                "--now",
                "2026-11-24T10:00:00Z",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["decision"] == "rerun"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["explain", "--policies", "policies/"],
            "rerund explain: explain needs --policies PATH and --failure FILE (or a RUN, with --config or "
            "the connection flags, for a live explain)",
        ),
        (
            ["explain", "somerun"],
            "rerund explain: no control plane configured: set endpoint in rerund.yaml, RERUND_ENDPOINT or "
            "--endpoint (e.g. http://127.0.0.1:8090), or an API key in FLYTE_API_KEY",
        ),
        (
            ["explain", "somerun", "--failure", "f.yaml"],
            "rerund explain: explain takes a RUN (live) or --failure FILE (offline), not both: drop "
            "'somerun' or --failure f.yaml",
        ),
        (
            ["explain", "--policies", "p", "--failure", "f", "--now", "yesterday"],
            "rerund explain: --now 'yesterday' is not an ISO-8601 time; write e.g. 2026-11-24T10:00:00Z",
        ),
        (
            ["explain", "--policies", "p", "--failure", "f", "--now", "2026-11-24T10:00:00"],
            "rerund explain: --now '2026-11-24T10:00:00' has no timezone; add Z for UTC, e.g. 2026-11-24T10:00:00Z",
        ),
    ],
    ids=["offline-needs-both", "live-needs-a-control-plane", "run-and-failure", "bad-now", "naive-now"],
)
def test_explain_usage_errors_say_what_to_pass(capsys, monkeypatch, argv, message):
    for name in ("RERUND_ENDPOINT", "FLYTE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == message


def test_explain_with_broken_policies_lists_their_problems(tmp_path, capsys):
    bad = write(
        tmp_path / "p.yaml", "apiVersion: rerund/v1\npolicies: [{name: a, retry: {max_attempts: -1}}]\n"
    )
    failure = write(tmp_path / "failure.yaml", FAILURE)
    assert main(["explain", "--policies", str(bad), "--failure", str(failure)]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"rerund explain: {bad}:2:44: policies[0].retry.max_attempts: must be >= 0, got -1"
    )


# --- test ---------------------------------------------------------------------------------


def test_the_shipped_policy_tests_pass(capsys):
    assert main(["test", str(POLICIES)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert all(line.endswith(" PASSED") for line in out[:-1])
    assert len(out) > 10
    assert out[-1] == f"==== {len(out) - 1} passed, 0 failed ===="


def test_a_failing_policy_test_shows_expected_against_actual_and_exits_1(tmp_path, capsys):
    write(
        tmp_path / "p.yaml",
        "apiVersion: rerund/v1\npolicies: [{name: net, match: {error: {patterns: [reset]}}}]\n",
    )
    cases = write(
        tmp_path / "p.test.yaml",
        """\
        policies: p.yaml
        failure: {failed_at: 2026-11-24T10:00:00Z}
        cases:
          - name: reset is rerun
            failure: {run: r1, error: {message: connection reset}}
            expect: {decision: rerun, policy: net, labels: {rerund-attempt: 1}}
          - name: wrong expectation
            failure: {run: r2, error: {message: disk full}}
            expect: {decision: rerun, policy: net, reason_matches: 'reruns'}
        """,
    )
    assert main(["test", str(cases)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{cases}::reset is rerun PASSED",
        f"{cases}::wrong expectation FAILED",
        "    decision: expected 'rerun', got 'ignore'",
        "    policy: expected 'net', got None",
        "    reason: expected to match 'reruns', got \"no policy matches run 'r2' (1 tried): it is not rerun\"",
        "    actual decision: ignore: no policy matches run 'r2' (1 tried): it is not rerun",
        "==== 1 passed, 1 failed ====",
    ]


def test_a_broken_test_file_is_an_error_not_a_crash(tmp_path, capsys):
    cases = write(tmp_path / "x.test.yaml", "policies: missing.yaml\ncases: []\nextra: 1\n")
    assert main(["test", str(tmp_path)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{cases} ERROR",
        f"    {cases}:2:8: cases: empty list; list at least one value or omit the key to match any value",
        f"    {cases}:3:1: extra: unknown key 'extra'; allowed keys: policies, now, failure, cases",
        "==== 0 passed, 0 failed, 1 error ====",
    ]


def test_a_test_file_whose_policies_do_not_load_reports_them(tmp_path, capsys):
    write(tmp_path / "p.yaml", "apiVersion: rerund/v1\npolicies: [{name: A}]\n")
    cases = write(
        tmp_path / "p.test.yaml",
        "policies: p.yaml\ncases: [{name: c, failure: {run: r, failed_at: 2026-11-24T10:00:00Z}, expect: {decision: ignore}}]\n",
    )
    assert main(["test", str(cases)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [f"{cases} ERROR", f"    {cases}:1:11: policies: the policies do not load:"]
    assert "policies[0].name: invalid policy name 'A'" in out[2]
    assert out[-1] == "==== 0 passed, 0 failed, 1 error ===="


def test_a_case_with_a_bad_failure_or_unknown_expectation_is_an_error(tmp_path, capsys):
    write(tmp_path / "p.yaml", "apiVersion: rerund/v1\npolicies: [{name: a}]\n")
    cases = write(
        tmp_path / "p.test.yaml",
        """\
        policies: [p.yaml]
        cases:
          - name: bad
            failure: {run: r, failed_at: 2026-11-24T10:00:00Z, attempt: -1}
            expect: {decison: rerun}
        """,
    )
    assert main(["test", str(cases)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{cases}::bad ERROR",
        f"    {cases}:4:65: cases[0].failure.attempt: must be >= 0, got -1",
        f"    {cases}:5:14: cases[0].expect.decison: unknown decision field 'decison'; use decision, policy, reason, reason_matches, attempt, scope, source_run, action, name, env, labels, inputs, overrides, changes, not_before, relaunch, waiting_for",
        "==== 0 passed, 0 failed, 1 error ====",
    ]


def test_test_finds_test_files_recursively_and_says_when_there_are_none(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["test", str(tmp_path / "empty")]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"no *.test.yaml files under {tmp_path / 'empty'}",
        "==== 0 passed, 0 failed ====",
    ]


# --- schema -------------------------------------------------------------------------------


def test_schema_prints_the_json_schema_of_policy_files(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["apiVersion"]
    assert set(schema["properties"]) == {
        "apiVersion",
        "defaults",
        "budgets",
        "incidents",
        "policies",
        "reproductions",
    }
    assert schema["additionalProperties"] is False


def test_check_prints_whole_problem_lines_then_the_count_when_both_streams_share_a_pipe(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as in a shell

    names = "".join(f"  - name: Bad{i}\n" for i in range(8))
    policy = write(tmp_path / "p.yaml", "apiVersion: rerund/v1\npolicies:\n" + names)

    out = subprocess.run(
        [sys.executable, "-m", "rerund.cli", "check", str(policy)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
        env=env,
    )

    lines = out.stdout.splitlines()
    assert out.returncode == 1
    assert lines[-1] == "8 problems found"
    assert out.stdout.endswith("\n8 problems found\n")
    assert all(line.startswith(f"{policy}:") for line in lines[:-1]) and len(lines) == 9
