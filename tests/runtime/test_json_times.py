"""Every time the daemon's JSON endpoints serve is UTC ISO-8601 with a ``Z`` (issue 28.8):
``/readyz``'s last_sync and ``/decisions``' decisions and pending due times were served as
``+00:00`` and as Python's space-separated ``str(datetime)``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from daemon_support import DaemonProcess, http_get, wait_until
from rerund.runtime.http import json_response
from rerund.sandbox.testing import start_sandbox

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
WORKLOAD = {
    "tasks": {
        "net.flaky": {
            "duration": "0.1s",
            "behaviour": ["fail"],
            "error": {"kind": "SYSTEM", "code": "ConnectionResetError", "message": "reset"},
        }
    }
}
POLICIES = """\
apiVersion: rerund/v1
policies:
  - name: later
    match: {error: {kinds: [SYSTEM]}}
    retry: {max_attempts: 2, backoff: {initial: 1h, max: 1h, jitter: 0}}
"""


def times_in(data: object) -> list[str]:
    """Every string in ``data`` that looks like a time (starts with a date)."""
    if isinstance(data, dict):
        return [t for v in data.values() for t in times_in(v)]
    if isinstance(data, list):
        return [t for v in data for t in times_in(v)]
    return [data] if isinstance(data, str) and re.match(r"^\d{4}-\d\d-\d\d[T ]\d", data) else []


def test_a_json_answer_writes_an_aware_time_with_a_z() -> None:
    body = json.loads(json_response({"due": datetime(2026, 11, 30, 8, 0, 1, 500, tzinfo=UTC)}).body)

    assert body == {"due": "2026-11-30T08:00:01.000500Z"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    work = tmp_path_factory.mktemp("json-times")
    policies = work / "policies.yaml"
    policies.write_text(POLICIES)
    with start_sandbox(WORKLOAD, time_scale=0.2) as sb:
        sb.launch("net.flaky")
        sb.wait_idle()
        d = DaemonProcess(work, sb, policies).start()
        try:
            d.wait_ready()
            yield d
        finally:
            d.terminate()


@pytest.mark.e2e
def test_readyz_and_decisions_serve_every_time_with_a_z(daemon: DaemonProcess) -> None:
    def decided() -> bool:
        body = json.loads(http_get(f"{daemon.url}/decisions", timeout=10)[1])
        return bool(body["decisions"]) and any(v is not None for v in body["pending"].values())

    wait_until("a decision with a due time", decided, 60, daemon.logs)
    served = {
        path: json.loads(http_get(f"{daemon.url}{path}", timeout=10)[1]) for path in ("/readyz", "/decisions")
    }

    found = {path: times_in(body) for path, body in served.items()}
    assert found["/readyz"] and found["/decisions"]
    assert {path: [t for t in ts if not ISO_Z.match(t)] for path, ts in found.items()} == {
        "/readyz": [],
        "/decisions": [],
    }
