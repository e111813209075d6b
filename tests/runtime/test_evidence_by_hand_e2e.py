"""End to end: the evidence ``give_up_below`` weighs comes "from the ledger and the control
plane" (issue 27). The real daemon decides two failures (its policy does not rerun them); a
person reruns each with the real flyte SDK (``flyte.rerun``): one rerun succeeds, the other
fails again. The daemon sees them end on the stream, with the relation naming the run each
reruns, and its ledger counts them for the failed runs' fingerprints: recovered 1 of 1 and 0 of
1 — what ``explain``, ``status`` and a ``give_up_below`` read.

On the Union profile only: open-source Flyte's stream and listings do not carry the relation,
and the daemon does not read every ended run for it (succeeded and failed reruns by hand are
then seen alike: not at all, so the evidence is not tilted)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import flyte
import pytest
import yaml

from daemon_support import DaemonProcess, daemons, wait_until
from rerund.adapters.ledger import Ledger
from rerund.sandbox.testing import flyte_init, start_sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ERROR = {"kind": "USER", "code": "KeyError", "message": "KeyError: 'customer_id'"}
WORKLOAD = {
    "tasks": {
        "report.render": {"duration": "0.5s", "behaviour": ["fail", "succeed"], "error": ERROR},
        "report.broken": {"duration": "0.5s", "behaviour": ["fail"], "error": ERROR},
    }
}
POLICIES = {
    "apiVersion": "rerund/v1",
    "policies": [{"name": "reports", "match": {"tasks": ["report.*"]}, "retry": False}],
}


def test_reruns_by_hand_seen_on_the_stream_are_evidence_for_the_fingerprint(tmp_path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump(POLICIES))
    with start_sandbox(WORKLOAD, time_scale=0.1) as sb, daemons(DaemonProcess(tmp_path, sb, policy)) as (d,):
        d.wait_ready()
        [render] = sb.launch("report.render")
        [broken] = sb.launch("report.broken")
        sb.wait_idle()
        ledger = Ledger(d.state)
        try:

            def fingerprints() -> dict[str, str]:
                return {r["run"]: r.get("fingerprint", "") for r in ledger.history(limit=100)}

            wait_until("both failures decided", lambda: {render, broken} <= set(fingerprints()))
            fp = fingerprints()
            flyte_init(sb)
            for source in (render, broken):
                flyte.with_runcontext(name=f"{source[:18]}-by-hand").rerun(source).wait(quiet=True)
            assert sb.run(f"{render[:18]}-by-hand")["phase"] == "SUCCEEDED"
            assert sb.run(f"{broken[:18]}-by-hand")["phase"] == "FAILED"

            week = datetime.now(UTC) - timedelta(days=7)

            def evidence() -> dict[str, tuple[int, int]]:
                return ledger.fingerprint_recoveries(since=week)

            wait_until("the reruns by hand counted", lambda: len(evidence()) == 2, timeout=60)
            assert evidence() == {fp[render]: (1, 1), fp[broken]: (1, 0)}
            assert fp[render] != fp[broken]
        finally:
            ledger.close()
