"""No command prints a control character it was given (issue 22.11).

Error messages, labels, run names, reasons and reproduction diffs come from the control plane
and user code. Printed raw, ``ESC ]0;…BEL`` retitles the terminal, ``ESC [2J`` clears it, a
CR overwrites the line and a LF starts a forged one. Every command writes them visibly instead
(``\\x1b``, ``\\r``, ``\\n``, ``\\u202e``): one test per command, each feeding them where that
command takes text from outside (the ledger, the control plane, a policy or failure file).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from daemon_support import write_settings
from rerund.adapters.ledger import Ledger
from rerund.cli import error_lines, main
from rerund.core.encode import for_terminal
from rerund.core.records import RerunIssue
from rerund.core.runs import RunRef
from rerund.errors import ConfigError, PermanentControlPlaneError, PolicyError, PolicyProblem
from rerund.runtime.logs import TextFormatter

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
FORGED = "2026-11-24T10:00:00Z rerun   forged line"
HOSTILE = f"\x1b]0;pwned\x07\x1b[2J\rFAKE\n{FORGED}\u202e [/] [bold]x"
# What a terminal obeys: C0 but LF (each printed line ends with one), DEL, C1, separators, bidi.
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def assert_inert(out: str, *, shown: str = "\\x1b]0;pwned") -> None:
    """Nothing a terminal obeys, no line that starts as the forged one, the text still shown."""
    assert UNSAFE.findall(out) == []
    assert not any(line.startswith(FORGED) for line in out.splitlines())
    assert shown in out


def _ledger(path: Path) -> Path:
    ledger = Ledger(path)
    decision = {
        "decision": "give_up",
        "policy": "transient",
        "attempt": 2,
        "reason": f"policy 'transient' gives up on run 'abc123-retry-1': {HOSTILE}",
        "labels": {"team": HOSTILE},
        "source_run": "abc123-retry-1",
        "root": "abc123",
    }
    ledger.record_decision(
        project="ml", domain="production", run="abc123-retry-1", root="abc123", decision=decision, now=T0
    )
    ledger.record_issue(
        RerunIssue(
            RunRef("ml", "production", "abc123"),
            "abc123-retry-1",
            "abc123",
            1,
            "transient",
            "run",
            "invalid",
            HOSTILE,
        ),
        now=T0,
    )
    ledger.record_reproduction(
        {
            "check": "nightly",
            "scheduled_for": "2026-11-24T10:00:00Z",
            "result": "mismatch",
            "reason": f"outputs differ: {HOSTILE}",
            "project": "ml",
            "domain": "production",
            "reference": "ref1",
            "rerun": "ref1-repro",
            "diff": [{"path": "outputs.o0", "message": HOSTILE}],
        },
        now=T0,
    )
    ledger.close()
    return path


@pytest.mark.parametrize(
    "argv",
    [["history"], ["history", "--run", "abc123"], ["repro", "history", "nightly"]],
    ids=["history", "history --run", "repro history"],
)
def test_commands_over_the_ledger_print_its_text_escaped(tmp_path, capsys, argv) -> None:
    state = _ledger(tmp_path / "rerund.db")

    assert main([*argv, "--state", str(state)]) == 0

    assert_inert(capsys.readouterr().out)


def test_json_output_carries_the_text_exactly_and_escaped_as_json(tmp_path, capsys) -> None:
    state = _ledger(tmp_path / "rerund.db")

    assert main(["history", "--state", str(state), "--format", "json"]) == 0
    out = capsys.readouterr().out

    assert UNSAFE.findall(out) == []
    assert HOSTILE in json.loads(out)[0]["reason"]


POLICY = """\
apiVersion: rerund/v1
policies:
  - name: transient
    match:
      error: {patterns: ['(?i)reset']}
    retry:
      max_attempts: 2
      scope: failed_action
      labels: {team: ml}
"""
# (A policy's own label values can no longer carry control characters: `rerund check` refuses any
# value Kubernetes would refuse. The hostile text comes from the control plane: error messages,
# action names, run labels.)


def test_offline_explain_prints_the_failure_and_policy_text_escaped(tmp_path, capsys) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    failure = {
        "run": "abc123",
        "failed_at": "2026-11-24T10:00:00Z",
        "action": f"a1{HOSTILE}",
        "error": {"kind": "SYSTEM", "code": "ConnectionResetError", "message": f"reset {HOSTILE}"},
    }
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(failure))

    argv = ["explain", "--policies", str(tmp_path / "p.yaml"), "--failure", str(tmp_path / "f.yaml")]
    assert main([*argv, "--now", "2026-11-24T10:05:00Z"]) == 0

    assert_inert(capsys.readouterr().out)


def test_rerund_test_prints_case_names_escaped(tmp_path, capsys) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    case = {
        "policies": "p.yaml",
        "cases": [
            {
                "name": HOSTILE,
                "failure": {"run": "abc123", "error": {"kind": "SYSTEM", "message": "reset"}},
                "expect": {"decision": "ignore"},
            }
        ],
    }
    (tmp_path / "p.test.yaml").write_text(yaml.safe_dump(case))

    assert main(["test", str(tmp_path / "p.test.yaml")]) == 1

    assert_inert(capsys.readouterr().out)


def test_the_error_line_of_a_failed_command_prints_what_it_quotes_escaped(tmp_path, capsys) -> None:
    bad = tmp_path / f"x{HOSTILE}.yaml".replace("/", "_")  # a file name may hold a LF too
    bad.write_text("apiVersion: rerund/v1\npolicies:\n  - name: p\n    retry: {max_attempts: x}\n")
    (tmp_path / "f.yaml").write_text("run: abc123\nerror: {kind: SYSTEM, message: reset}\n")

    assert main(["explain", "--policies", str(bad), "--failure", str(tmp_path / "f.yaml")]) == 2

    err = capsys.readouterr().err
    assert_inert(err)
    assert err.startswith("rerund explain: ")


@pytest.mark.parametrize(
    ("error", "lines"),
    [
        (
            PermanentControlPlaneError(f"GetRun: run 'r' not found: {HOSTILE}"),
            [f"GetRun: run 'r' not found: {for_terminal(HOSTILE)}"],
        ),
        (
            PolicyError([PolicyProblem("p.yaml", 1, 2, "policies[0]", f"bad {HOSTILE}")], "2 problems:"),
            ["2 problems:", f"p.yaml:1:2: policies[0]: bad {for_terminal(HOSTILE)}"],
        ),
        (
            ConfigError("invalid settings:\nflag --org: x\x1b[2J"),
            ["invalid settings:\nflag --org: x\\x1b[2J"],
        ),
    ],
    ids=["control plane message: one line", "problems: one line each", "settings problems: our lines kept"],
)
def test_the_error_line_keeps_only_the_line_breaks_rerund_puts_there(error, lines) -> None:
    assert error_lines(error) == lines


def test_rerund_check_prints_its_problems_escaped(tmp_path, capsys) -> None:
    bad = tmp_path / "bad\x1b]0;pwned\x07.yaml"
    bad.write_text("apiVersion: rerund/v1\npolicies:\n  - name: p\n    retry: {max_attempts: x}\n")

    assert main(["check", str(bad)]) == 1

    assert_inert(capsys.readouterr().out)


def test_the_text_log_format_escapes_messages() -> None:
    record = logging.LogRecord("rerund.decisions", logging.INFO, __file__, 1, "give_up %s", (HOSTILE,), None)

    line = TextFormatter().format(record)

    assert_inert(line)
    assert "\n" not in line


# -- commands that read the control plane (the sandbox) ------------------------------------------

WORKLOAD = {
    "tasks": {
        "net.flaky": {
            "duration": "0.1s",
            "behaviour": ["fail"],
            "error": {"kind": "SYSTEM", "code": f"Reset{HOSTILE}", "message": f"Connection reset {HOSTILE}"},
        },
    }
}


@pytest.fixture
def live(sandbox_factory, tmp_path: Path) -> tuple[str, Path]:
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.5)
    (tmp_path / "policies.yaml").write_text(POLICY)
    config = write_settings(
        tmp_path / "rerund.yaml", sb, policies=["policies.yaml"], state=str(_ledger(tmp_path / "rerund.db"))
    )
    [name] = sb.launch("net.flaky")
    sb.wait_idle()
    return name, config


@pytest.mark.e2e
def test_live_explain_prints_the_error_message_escaped(live, capsys) -> None:
    name, config = live

    assert main(["explain", name, "--config", str(config)]) == 0

    out = capsys.readouterr().out
    assert_inert(out)
    assert "Connection reset \\x1b]0;pwned\\x07" in out


@pytest.mark.e2e
def test_status_prints_reasons_and_reproduction_results_escaped(live, capsys) -> None:
    _, config = live

    assert main(["status", "--config", str(config)]) == 0

    assert_inert(capsys.readouterr().out)


@pytest.mark.e2e
def test_the_sweep_preview_prints_errors_escaped_and_never_as_rich_markup(live, tmp_path, capsys) -> None:
    _, config = live

    argv = ["sweep", "--config", str(config), "--policies", str(tmp_path / "policies.yaml")]
    assert main([*argv, "--since", "1h", "--dry-run"]) == 0

    out = capsys.readouterr().out
    assert UNSAFE.findall(out) == [] and "\x1b" not in out
    assert "\\x1b]0;pwned" in out and "[/] [bold]x" in out


def test_repro_list_prints_what_the_policy_file_says_escaped(tmp_path, capsys) -> None:
    (tmp_path / "r.yaml").write_text(
        "apiVersion: rerund/v1\npolicies: []\nreproductions:\n  - name: det\n"
        '    schedule: "0 3 * * *"\n    source: {task: det.train}\n'
        '    compare: {outputs: tolerance, tolerance: {rel: 0.1}, ignore: ["ts\\e]0;pwned\\a\\r\\n'
        + FORGED
        + '"]}\n'
    )

    assert main(["repro", "list", "--policies", str(tmp_path / "r.yaml")]) == 0

    assert_inert(capsys.readouterr().out)
