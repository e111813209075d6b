"""``rerund suggest`` against the sandbox over real HTTP with the real flyte SDK: real failures
of three kinds (one recovers on rerun, one never does, one was never rerun) become a starter
policy file and a case file; ``rerund check`` and ``rerund test`` pass on what it wrote, the
evidence is in the comments and no secret or control character of a message is."""

from __future__ import annotations

import pytest
import yaml

from rerund.cli import main
from rerund.sandbox.testing import start_sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

WORKLOAD = {
    "tasks": {
        "etl.load": {
            "behaviour": ["fail", "succeed"],
            "error": {"kind": "SYSTEM", "code": "SlowDown", "message": "503 SlowDown (request id 4F2A9C7B)"},
        },
        "report.render": {
            "behaviour": ["fail"],
            "error": {
                "kind": "USER",
                "code": "KeyError",
                "message": "KeyError: 'customer_id' (db password=hunter2) \x1b[2J",
            },
        },
        "train.fit": {
            "behaviour": ["fail"],
            "error": {"kind": "SYSTEM", "code": "OOMKilled", "message": "container killed: exit code 137"},
        },
    }
}


def _rerun(sb, task: str, source: str) -> None:
    labels = {"rerund-root": source, "rerund-attempt": "1", "rerund-policy": "manual"}
    [name] = sb.launch(task, labels=labels, rerun_of=source)
    sb.wait_for(name)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with start_sandbox(WORKLOAD, time_scale=0.01) as sb:
        flaky = sb.launch("etl.load", count=4)
        hopeless = sb.launch("report.render", count=4)
        sb.launch("train.fit", count=2)
        sb.wait_idle()
        for name in flaky:
            _rerun(sb, "etl.load", name)
        for name in hopeless:
            _rerun(sb, "report.render", name)
        sb.wait_idle()
        yield sb, tmp_path_factory.mktemp("suggest")


def test_suggest_writes_policies_and_cases_that_check_and_test_pass_on(world, capsys) -> None:
    sb, tmp = world
    out = tmp / "out"
    flags = ["--endpoint", sb.endpoint, "--org", sb.org, "--scope", f"{sb.project}/{sb.domain}", "--insecure"]
    assert main(["suggest", "--since", "1h", "--out", str(out), "--state", str(tmp / "none.db"), *flags]) == 0
    said = capsys.readouterr().out
    assert "10 failure(s) of 3 fingerprint(s) -> 3 policies in" in said

    policies = (out / "suggested.yaml").read_text()
    cases = (out / "suggested.test.yaml").read_text()
    assert main(["check", str(out / "suggested.yaml")]) == 0
    assert main(["test", str(out / "suggested.test.yaml")]) == 0
    tested = capsys.readouterr().out
    assert "3 passed, 0 failed" in tested

    doc = yaml.safe_load(policies)
    by_name = {p["name"]: p for p in doc["policies"]}
    assert by_name["etl-load-slowdown"]["retry"]["max_attempts"] == 3
    assert by_name["report-render-keyerror"]["retry"] is False  # recovered 0 of 4
    assert by_name["train-fit-oomkilled"]["match"] == {
        "tasks": ["train.fit"],
        "error": {"kinds": ["SYSTEM"], "codes": ["OOMKilled"]},
    }
    assert "reruns recovered 4 of 4 (100%)" in policies
    assert "reruns recovered 0 of 4 (0%)" in policies
    assert "never recovered on rerun: not rerun" in policies
    for text in (policies, cases):
        assert "hunter2" not in text and "\x1b" not in text
    assert "password=***" in cases
    assert yaml.safe_load(cases)["cases"][0]["expect"]["decision"] in ("rerun", "ignore")
