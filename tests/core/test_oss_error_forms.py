"""Open-source Flyte 2 serves ErrorInfo message + kind only: the failure classes come from the
executor's message forms, explain says so, and ``rerund check`` warns about matches that need a
code or a gpu_fault under ``backend: oss``."""

from __future__ import annotations

from pathlib import Path

import pytest

from rerund.cli import main
from rerund.core.model import ErrorInfo, Phase
from rerund.core.taxonomy import classify, evidence
from rerund.policy.loader import load_policies_and_warnings
from rerund.sandbox.profiles import executor_error

OOM = "\r\n[primary] terminated with exit code (137). Reason [OOMKilled]. Message: \n."
SIGKILL = "\r\n[primary] terminated with exit code (137). Reason [Error]. Message: \n."


@pytest.mark.parametrize(
    ("code", "kind", "classes"),
    [
        ("OOMKilled", "USER", {"oom", "user"}),
        ("Interrupted", "SYSTEM", {"interrupted", "system"}),
        ("ImagePullBackOff", "USER", {"image", "user"}),
        ("InvalidImageName", "USER", {"image", "user"}),
        ("GpuXidError", "SYSTEM", {"system"}),  # no message form: oss cannot report it
        ("ValueError", "USER", {"user"}),
    ],
)
def test_the_oss_form_of_an_error_keeps_its_class_without_the_code(
    code: str, kind: str, classes: set[str]
) -> None:
    served_kind, message = executor_error(kind, code, "ValueError: bad input")
    assert classify(ErrorInfo(kind=served_kind, message=message)) == classes


def test_the_executor_forms_are_the_ones_pod_helper_writes() -> None:
    assert executor_error("SYSTEM", "OOMKilled", "x") == ("USER", OOM)
    assert executor_error("USER", "Interrupted", "x") == ("SYSTEM", SIGKILL)
    assert executor_error("USER", "ValueError", "ValueError: x") == ("USER", "ValueError: x")


def test_a_sigkill_is_interrupted_only_as_a_system_error_and_never_an_oom_as_well() -> None:
    assert classify(ErrorInfo(kind="SYSTEM", message=SIGKILL)) == {"interrupted", "system"}
    assert classify(ErrorInfo(kind="USER", message=SIGKILL)) == {"user"}
    assert classify(ErrorInfo(kind="SYSTEM", message=OOM)) == {"oom", "system"}
    assert classify(ErrorInfo(kind="USER", message=OOM.replace("137", "247"))) == {"oom", "user"}


def test_a_code_when_present_decides_and_the_message_form_does_not() -> None:
    error = ErrorInfo(kind="USER", code="ValueError", message=OOM)
    assert classify(error) == {"user"}
    assert evidence(ErrorInfo(kind="USER", code="OOMKilled", message="")) == {
        "oom": "the code 'OOMKilled'",
        "user": "the kind USER",
    }


def test_evidence_names_the_message_form_and_explain_shows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evidence(ErrorInfo(kind="USER", message=OOM)) == {
        "oom": "the message (no code): 'Reason [OOMKilled]'",
        "user": "the kind USER",
    }
    assert evidence(ErrorInfo(kind="SYSTEM"), Phase.TIMED_OUT)["timeout"] == "the phase TIMED_OUT"
    policies = tmp_path / "p.yaml"
    policies.write_text(
        "apiVersion: rerund/v1\npolicies:\n  - name: oom\n    match: {error: {classes: [oom]}}\n"
        "    retry: {scope: run}\n"
    )
    failure = tmp_path / "f.yaml"
    failure.write_text(
        "run: r1\ntask: train.big\nphase: FAILED\nerror:\n  kind: USER\n"
        '  message: "\\r\\n[primary] terminated with exit code (137). Reason [OOMKilled]. Message: \\n."\n'
    )
    main(["explain", "--policies", str(policies), "--failure", str(failure)])
    out = capsys.readouterr().out
    assert "error.classes: the failure is oom (from the message (no code): 'Reason [OOMKilled]')" in out


def _policy(tmp_path: Path) -> Path:
    path = tmp_path / "gpu.yaml"
    path.write_text(
        "apiVersion: rerund/v1\npolicies:\n  - name: gpu\n    match:\n      error:\n"
        "        codes: [GpuXidError]\n        gpu_fault: {codes: [79]}\n    retry: {scope: run}\n"
    )
    return path


def test_check_warns_under_backend_oss_about_codes_and_gpu_fault(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _policy(tmp_path)
    _, warnings = load_policies_and_warnings([path], backend="oss")
    assert [(w.line, w.path) for w in warnings] == [
        (6, "policies[0].match.error.codes"),
        (7, "policies[0].match.error.gpu_fault"),
    ]
    assert load_policies_and_warnings([path], backend="union")[1] == ()
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().err == ""
    assert main(["check", "--backend", "oss", "--strict", str(path)]) == 1
    captured = capsys.readouterr()
    assert (
        f"{path}:6:16: policies[0].match.error.codes: warning: open-source Flyte serves no error code"
        in captured.out
    )
    assert captured.err == "2 warnings (an error with --strict)\n"
    monkeypatch.setenv("RERUND_BACKEND", "oss")
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().err == "2 warnings\n"


def test_of_the_library_only_the_gpu_policy_needs_what_oss_does_not_serve() -> None:
    library = Path(__file__).resolve().parents[2] / "policies" / "library"
    _, warnings = load_policies_and_warnings([library], backend="oss")
    assert [(Path(w.file).name, w.path) for w in warnings if "open-source Flyte" in w.message] == [
        ("gpu.yaml", "policies[0].match.error.gpu_fault")
    ]
