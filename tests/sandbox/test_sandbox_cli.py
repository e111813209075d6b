"""``rerund sandbox`` as users run it: prints the endpoint, the flyte.init call and a flyte CLI
config it writes; serves until SIGINT/SIGTERM and then exits cleanly; refuses bad input."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from flyteidl2.common import identifier_pb2, list_pb2
from flyteidl2.workflow import run_service_pb2 as rs
from flyteidl2.workflow.run_service_connect import RunServiceClientSync

from rerund.cli import main

pytestmark = pytest.mark.e2e

RERUND = [sys.executable, "-m", "rerund.cli"]
REPO = Path(__file__).resolve().parents[2]


class Served:
    def __init__(self, proc: subprocess.Popen[str], banner: str) -> None:
        self.proc = proc
        self.banner = banner
        self.endpoint = re.search(r"serving Flyte at (http://\S+)", banner).group(1)


@pytest.fixture
def serve(tmp_path):
    procs = []

    def start(*args: str) -> Served:
        proc = subprocess.Popen(
            [*RERUND, "sandbox", "--port", "0", "--flyte-config", str(tmp_path / "flyte.yaml"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        procs.append(proc)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Stop with"):
                break
        else:
            raise AssertionError(f"sandbox exited early: {proc.wait()} {proc.stderr.read()}")
        return Served(proc, "".join(lines))

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_prints_endpoint_sdk_snippet_and_writes_a_flyte_cli_config(serve, tmp_path):
    served = serve("--workload", "policies/demo/workload.yaml", "--time-scale", "0.01")

    config = (tmp_path / "flyte.yaml").read_text()
    assert f"endpoint: {served.endpoint}" in config
    assert "insecure: true" in config
    assert "org: sandbox" in config and "project: demo" in config and "domain: development" in config
    assert (
        f'flyte.init(endpoint="{served.endpoint}", insecure=True, org="sandbox", '
        'project="demo", domain="development")' in served.banner
    )
    assert f"flyte --config {tmp_path / 'flyte.yaml'} get run" in served.banner
    assert (
        "workload: policies/demo/workload.yaml: 11 tasks, 24 runs, 1 arrival schedules, 1 scheduled deploys"
        in served.banner
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_shuts_down_cleanly_on_a_signal(serve, sig):
    served = serve()

    served.proc.send_signal(sig)
    code = served.proc.wait(timeout=30)

    assert code == 0
    assert "rerund sandbox: stopped cleanly; 0 runs discarded (:memory:)" in served.proc.stderr.read()


def test_runs_in_a_database_survive_a_restart_of_the_process(serve, tmp_path):
    db = tmp_path / "sandbox.db"
    first = serve("--db", str(db), "--workload", "policies/demo/workload.yaml", "--time-scale", "0.001")
    names = sorted(r["name"] for r in httpx.get(f"{first.endpoint}/_sandbox/runs").json())
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=30) == 0
    assert f"runs kept in {db}" in first.proc.stderr.read()

    second = serve("--db", str(db))

    again = sorted(r["name"] for r in httpx.get(f"{second.endpoint}/_sandbox/runs").json())
    assert set(names) <= set(again)
    assert f"database: {db} (durable)" in second.banner


def test_fault_flags_apply_from_the_start(serve):
    served = serve("--fault-unavailable", "1", "--fault-latency", "5ms", "--fault-drop-streams-after", "7")

    assert "faults:   unavailable=1.0 latency=5ms drop_streams_after=7" in served.banner
    pid = identifier_pb2.ProjectIdentifier(organization="sandbox", name="demo", domain="development")
    with RunServiceClientSync(served.endpoint) as client, pytest.raises(ConnectError) as info:
        client.list_runs(rs.ListRunsRequest(request=list_pb2.ListRequest(), project_id=pid))
    assert info.value.code == Code.UNAVAILABLE
    assert httpx.get(f"{served.endpoint}/_sandbox/stats").json()["faults"] == {
        "unavailable": 1.0,
        "latency": "5ms",
        "drop_streams_after": 7,
    }


def test_fault_db_errors_is_served(serve):
    served = serve("--profile", "oss", "--fault-db-errors", "0.3")

    assert "db_errors=0.3" in served.banner
    assert httpx.get(f"{served.endpoint}/_sandbox/stats").json()["faults"]["db_errors"] == 0.3


def test_profile_oss_is_announced_and_served(serve):
    served = serve("--profile", "oss", "--error-delay", "250ms")

    assert (
        "profile:  oss (open-source Flyte 2: no label filters, pages <= 200, "
        "error details 250ms after FAILED)" in served.banner
    )
    assert httpx.get(f"{served.endpoint}/_sandbox/stats").json()["profile"] == "oss"
    pid = identifier_pb2.ProjectIdentifier(organization="sandbox", name="demo", domain="development")
    label = list_pb2.Filter(function=list_pb2.Filter.EXISTS, field="labels.team")
    with RunServiceClientSync(served.endpoint) as client, pytest.raises(ConnectError) as info:
        client.list_runs(rs.ListRunsRequest(request=list_pb2.ListRequest(filters=[label]), project_id=pid))
    assert info.value.code == Code.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fault-unavailable", "1.5"], "--fault-unavailable must be a share between 0 and 1, got 1.5"),
        (["--fault-latency", "soon"], "--fault-latency: duration 'soon' is not a duration"),
        (
            ["--fault-drop-streams-after", "-1"],
            r"--fault-drop-streams-after must be >= 0 \(0 = never\), got -1",
        ),
        (["--fault-db-errors", "1.5"], "--fault-db-errors must be a share between 0 and 1, got 1.5"),
        (["--time-scale", "0"], "--time-scale must be positive, got 0.0"),
        (["--org", ""], "sandbox org is empty; pass --org NAME"),
        (
            ["--error-delay", "2s"],
            r"--error-delay applies to --profile oss only \(got --profile union\); "
            "drop it or add --profile oss",
        ),
        (["--profile", "oss", "--error-delay", "later"], "--error-delay: duration 'later' is not a duration"),
    ],
    ids=[
        "share",
        "latency",
        "drop",
        "db-errors",
        "time-scale",
        "org",
        "error-delay-union",
        "error-delay-bad",
    ],
)
def test_bad_flags_are_refused_with_what_to_do(capsys, args, message):
    code = main(["sandbox", "--port", "0", *args])

    assert code == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_bad_workload_is_refused_at_start_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  t:\n    behaviour: [explode]\n")

    code = main(["sandbox", "--port", "0", "--workload", str(bad)])

    err = capsys.readouterr().err
    assert code == 2
    assert f"rerund sandbox: workload {bad} is invalid; the sandbox did not start" in err
    assert f"{bad}:3:17: tasks.t.behaviour[0]: Input should be 'succeed', 'fail', 'timeout' or 'hang'" in err


def test_a_port_in_use_is_refused_with_what_to_do(serve, capsys):
    served = serve()
    port = served.endpoint.rsplit(":", 1)[1]

    code = main(["sandbox", "--port", port])

    assert code == 2
    assert re.search(
        rf"sandbox cannot listen on 127\.0\.0\.1:{port}: .*pick another --port", capsys.readouterr().err
    )


def test_help_lists_the_admin_endpoint():
    out = subprocess.run(
        [*RERUND, "sandbox", "--help"], capture_output=True, text=True, env={**os.environ}
    ).stdout

    assert "POST /_sandbox/faults" in out
    assert "--fault-drop-streams-after N" in out
