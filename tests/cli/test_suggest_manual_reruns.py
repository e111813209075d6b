"""``rerund suggest`` learns from reruns made by hand (issue 27): a run whose RunSpec relation
names a failed run reruns it, whoever made it, and whether it succeeded is evidence of recovery
for the failed run's fingerprint. Here the reruns are made with the real flyte SDK
(``flyte.with_runcontext(name=...).rerun(name)``) against the sandbox, as Union and as
open-source Flyte 2 (whose listings leave the relation out: it is read from GetRunDetails'
RunSpec), and there is no ledger: the control plane is the only witness."""

from __future__ import annotations

import json

import flyte
import pytest
import yaml

from rerund.cli import main
from rerund.sandbox.profiles import OSS, UNION
from rerund.sandbox.testing import flyte_init, start_sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

WORKLOAD = {
    "tasks": {
        # Behaviour counts per lineage: the original and the first rerun by hand fail, the
        # rerun of that rerun succeeds.
        "etl.load": {
            "behaviour": ["fail", "fail", "succeed"],
            "error": {"kind": "SYSTEM", "code": "SlowDown", "message": "503 SlowDown (request id 4F2A9C7B)"},
        },
        "report.render": {
            "behaviour": ["fail"],
            "error": {"kind": "USER", "code": "KeyError", "message": "KeyError: 'customer_id'"},
        },
    }
}


def _by_hand(source: str, name: str) -> str:
    """Rerun ``source`` as a person does, with the flyte SDK; the rerun's end phase."""
    run = flyte.with_runcontext(name=name).rerun(source)
    run.wait(quiet=True)
    return str(run.phase)


@pytest.mark.parametrize("profile", [UNION, OSS.with_error_delay(0)], ids=["union", "oss"])
def test_suggest_counts_reruns_made_by_hand_as_recoveries_or_not(profile, tmp_path, capsys) -> None:
    with start_sandbox(WORKLOAD, time_scale=0.01, profile=profile) as sb:
        [load] = sb.launch("etl.load")
        [render] = sb.launch("report.render")
        sb.wait_idle()
        flyte_init(sb)
        _by_hand(load, "load-by-hand-1")  # fails again
        _by_hand("load-by-hand-1", "load-by-hand-2")  # a rerun of the rerun: succeeds
        _by_hand(render, "render-by-hand")  # fails again
        assert [sb.run(n)["phase"] for n in ("load-by-hand-1", "load-by-hand-2", "render-by-hand")] == [
            "FAILED",
            "SUCCEEDED",
            "FAILED",
        ]
        assert sb.run("load-by-hand-2")["relation"] == {"run": "load-by-hand-1", "type": "RERUN"}

        out = tmp_path / "out"
        flags = [
            "--endpoint",
            sb.endpoint,
            "--org",
            sb.org,
            "--scope",
            f"{sb.project}/{sb.domain}",
            "--insecure",
        ]
        state = tmp_path / "none.db"
        argv = ["suggest", "--since", "1h", "--out", str(out), "--state", str(state), "--format", "json"]
        before = sb.request_counts()
        assert main([*argv, *flags]) == 0
        after = sb.request_counts()
        runs = len(sb.runs())
    spent = {rpc: after.get(rpc, 0) - before.get(rpc, 0) for rpc in ("GetRunDetails", "ListRuns")}
    # Bounded: each original failure read (2), plus on open-source Flyte each of the window's
    # runs read once (GetRunDetails) for its labels and relation, whatever lists it.
    assert spent["GetRunDetails"] == (2 if profile.listed_relation else runs + 2), spent
    assert spent["ListRuns"] <= 5, spent

    assert not state.exists()  # no ledger: what follows was learned from the control plane
    found = json.loads(capsys.readouterr().out)
    by_task = {g["task"]: g for g in found["fingerprints"]}
    assert set(by_task) == {"etl.load", "report.render"}  # a failed rerun is no failure of its own
    assert (by_task["etl.load"]["failures"], by_task["etl.load"]["runs"]) == (1, [load])
    assert (by_task["etl.load"]["reruns"], by_task["etl.load"]["recovered"]) == (2, 1)
    assert (by_task["report.render"]["failures"], by_task["report.render"]["runs"]) == (1, [render])
    assert (by_task["report.render"]["reruns"], by_task["report.render"]["recovered"]) == (1, 0)
    assert found["failures"] == 2 and found["policies"] == str(out / "suggested.yaml")

    policies = (out / "suggested.yaml").read_text()
    assert "reruns recovered 1 of 2 (50%)" in policies
    assert "reruns recovered 0 of 1 (0%)" in policies
    assert by_task["etl.load"]["policy"] in {p["name"] for p in yaml.safe_load(policies)["policies"]}
    assert main(["check", str(out / "suggested.yaml")]) == 0
    assert main(["test", str(out / "suggested.test.yaml")]) == 0
