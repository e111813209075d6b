"""End to end: an outage on the sandbox fails many runs with one error; the real daemon opens an
incident, holds the reruns, probes with one canary at a time, and releases the held reruns when
a canary succeeds — every lineage recovers with one rerun each plus the canaries. The same
outage with the breaker off exhausts most lineages. Read from the control plane's own runs
(``SandboxHandle.runs()``), the ledger and ``/metrics``.

The long variant with SIGKILLs during the hold and the release is under ``make chaos``.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from daemon_support import DaemonProcess, daemons, settle, total, wait_until
from rerund.adapters.ledger import Ledger
from rerund.policy import load_policies
from rerund.sandbox.testing import start_sandbox
from storms import write_policies

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

TIME_SCALE = 0.1  # sandbox seconds -> real: a 60 s outage lasts 6 s
SLOWDOWN = {
    "kind": "SYSTEM",
    "code": "SlowDown",
    "message": "503 SlowDown: reduce your request rate (id 4F2A9C)",
}


WORKLOAD = {"tasks": {"etl.load": {"duration": "1s"}}}


def policies(breaker: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "rerund/v1",
        "defaults": {
            "max_attempts": 3,
            "backoff": {"initial": "500ms", "factor": 1, "max": "500ms", "jitter": 0},
        },
        "policies": [{"name": "object-store", "match": {"error": {"codes": ["SlowDown"]}}, "retry": {}}],
    }
    if breaker:
        doc["incidents"] = {"open": {"failures": 3, "within": "1m"}, "probe_every": "1s"}
    return doc


def lineages(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Root run name -> its runs (the root first, then its reruns by attempt)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        root = r["labels"].get("rerund-root") or r["name"]
        out.setdefault(root, []).append(r)
    for rs in out.values():
        rs.sort(key=lambda r: int(r["labels"].get("rerund-attempt", "0")))
    return out


def canaries_of(runs: list[dict[str, Any]]) -> int:
    """Reruns that went out as canaries: each raised its lineage's rerund-canaries label."""
    n = 0
    for rs in lineages(runs).values():
        before = 0
        for r in rs:
            count = int(r["labels"].get("rerund-canaries", "0"))
            n += count > before
            before = count
    return n


class Receiver:
    """A webhook receiver on 127.0.0.1 that keeps every JSON body it was sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_outage(tmp_path: Path, *, breaker: bool, failures: int, outage: str) -> dict[str, Any]:
    """Launch ``failures`` runs into an outage with the daemon running; wait until every
    lineage has ended; return what the control plane, the ledger and the metrics say."""
    name = "on" if breaker else "off"
    doc = policies(breaker)
    with start_sandbox(WORKLOAD, time_scale=TIME_SCALE) as sb:
        path = write_policies(tmp_path / f"policies-{name}.yaml", doc)
        receiver = Receiver()
        proc = DaemonProcess(
            tmp_path / name, sb, path, poll_interval="500ms", extra={"notify": {"webhook": receiver.url}}
        )
        with daemons(proc):
            sb.outage(["etl.*"], outage, error=SLOWDOWN)  # from now, whenever the daemon started
            sb.launch("etl.load", count=failures)
            audit = settle(sb, [proc], load_policies([path]), timeout=200)
            metrics = proc.metrics()
        runs = sb.runs()
    receiver.close()
    ledger = Ledger(proc.state, create=False)
    try:
        incidents = ledger.incidents(since=datetime.now(UTC) - timedelta(hours=1))
    finally:
        ledger.close()
    by_root = lineages(runs)
    return {
        "audit": audit,
        "runs": runs,
        "recovered": sum(1 for rs in by_root.values() if rs[-1]["phase"] == "SUCCEEDED"),
        "exhausted": sum(1 for rs in by_root.values() if rs[-1]["phase"] != "SUCCEEDED"),
        "reruns": len(runs) - len(by_root),
        "canaries": canaries_of(runs),
        "incidents": incidents,
        "metrics": metrics,
        "logs": proc.logs(10**7),
        "events": [b for b in receiver.bodies if str(b.get("event", "")).startswith("incident_")],
    }


def test_an_outage_opens_one_incident_and_every_lineage_recovers_with_one_rerun_plus_canaries(tmp_path):
    n = 12
    results: dict[bool, dict[str, Any]] = {}

    def scenario(breaker: bool) -> None:
        # Breaker off, the outage outlasts every lineage's three attempts (however loaded the
        # machine is); breaker on, it ends after 6 s and the canary finds out.
        results[breaker] = run_outage(
            tmp_path, breaker=breaker, failures=n, outage="60s" if breaker else "1h"
        )

    off = threading.Thread(target=scenario, args=(False,))  # side by side
    off.start()
    scenario(True)
    off.join()
    on, without = results[True], results[False]

    assert on["audit"].exact(), on["audit"].problems()
    assert on["recovered"] == n, on["logs"]
    assert on["reruns"] - on["canaries"] <= 1.05 * n, (on["reruns"], on["canaries"])
    assert len(on["incidents"]) == 1, [i.to_json() for i in on["incidents"]]
    [incident] = on["incidents"]
    assert incident.state == "closed"
    assert incident.canaries == on["canaries"] >= 1
    assert incident.failures >= 3
    assert "503 SlowDown" in incident.example
    assert total(on["metrics"], "rerund_incidents_open") == 0
    assert total(on["metrics"], "rerund_incident_reruns_held") == 0
    assert total(on["metrics"], "rerund_lineages_exhausted_total") == 0
    assert f"incident {incident.fingerprint} opened" in on["logs"]
    assert f"incident {incident.fingerprint} closed" in on["logs"]

    opened, closed = on["events"]  # one webhook when it opened, one when it closed
    assert (opened["event"], closed["event"]) == ("incident_opened", "incident_closed")
    assert opened["key"] == f"incident-open:{incident.key}"
    assert closed["key"] == f"incident-close:{incident.key}"
    assert closed["incident"]["state"] == "closed"

    assert without["audit"].exact(), without["audit"].problems()
    assert without["exhausted"] == n, without["logs"]
    assert without["incidents"] == []


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkills_during_the_hold_and_the_release_leave_no_duplicate_and_no_missed_rerun(tmp_path):
    """The outage scenario at a larger size, the daemon SIGKILLed while the incident holds the
    reruns and again as it releases them: the incident comes back from the ledger, and the
    control plane ends with every lineage recovered, 0 duplicates and 0 missed."""
    n = 40
    doc = policies(breaker=True)
    with start_sandbox(WORKLOAD, time_scale=TIME_SCALE) as sb:
        path = write_policies(tmp_path / "policies.yaml", doc)
        proc = DaemonProcess(tmp_path / "d", sb, path, poll_interval="500ms")
        with daemons(proc):
            outage = sb.outage(["etl.*"], "150s", error=SLOWDOWN)  # 15 s
            sb.launch("etl.load", count=n)
            wait_until("an incident to open", lambda: total(proc.metrics(), "rerund_incidents_open") == 1)
            wait_until("reruns to be held", lambda: total(proc.metrics(), "rerund_incident_reruns_held") > 0)
            proc.kill()  # during the hold
            proc.start()
            wait_until(
                "the incident restored from the ledger",
                lambda: total(proc.metrics(), "rerund_incidents_open") == 1,
                logs=proc.logs,
            )
            ends = datetime.fromisoformat(outage["ends_at"].replace("Z", "+00:00"))
            wait_until("the outage to end", lambda: datetime.now(UTC) > ends, timeout=120)
            wait_until(
                "the incident to close",
                lambda: total(proc.metrics(), "rerund_incidents_open") == 0,
                logs=proc.logs,
                interval=0.05,
            )
            proc.kill()  # during the release
            proc.start()
            audit = settle(sb, [proc], load_policies([path]), timeout=300)
            logs = proc.logs(10**7)
        runs = sb.runs()
    by_root = lineages(runs)
    assert audit.duplicates == 0 and audit.missed == 0, audit.problems()
    assert audit.exact(), audit.problems()
    assert sum(1 for rs in by_root.values() if rs[-1]["phase"] == "SUCCEEDED") == n, logs
    assert len(runs) - len(by_root) - canaries_of(runs) <= 1.05 * n
