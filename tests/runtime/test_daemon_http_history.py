"""The daemon in-process (HTTP endpoints, readiness, policy reload) and ``rerund history``.

The daemon runs on its own event loop against the in-memory control plane; the HTTP endpoints
are read with httpx over 127.0.0.1 as Prometheus and Kubernetes probes read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from daemon_support import free_port
from rerund.app import App
from rerund.cli import main
from rerund.core.fingerprints import error_fingerprint
from rerund.runtime.daemon import Daemon

from .fake_control_plane import CONNECTION_RESET, T0, Clock, FakeControlPlane, daemon_settings
from .test_reconcile import POLICIES

REPO = Path(__file__).resolve().parents[2]

SECRET = "fk-live-0123456789abcdef"


def _until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


class Running:
    def __init__(
        self, daemon: Daemon, loop: asyncio.AbstractEventLoop, cp: FakeControlPlane, policy_file: Path
    ) -> None:
        self.daemon = daemon
        self.loop = loop
        self.cp = cp
        self.policy_file = policy_file

    @property
    def url(self) -> str:
        assert self.daemon.http is not None
        return self.daemon.http.url

    def replace_policies(self, text: str) -> None:
        """Swap the policy file atomically, as an editor or the kubelet does."""
        tmp = self.policy_file.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.policy_file)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    clock = Clock(T0 + timedelta(minutes=5))
    cp = FakeControlPlane(clock)
    cp.add_failed("abc123", at=T0 + timedelta(minutes=1))
    settings = daemon_settings(tmp_path, POLICIES, environ={"FLYTE_API_KEY": SECRET}, http="127.0.0.1:0")
    ready = threading.Event()
    started: list[tuple[Daemon, asyncio.AbstractEventLoop]] = []

    def on_ready(d: Daemon) -> None:
        started.append((d, asyncio.get_running_loop()))
        ready.set()

    app = App(
        settings,
        control_plane=cp,
        clock=clock,
        install_signals=False,
        reload_check_interval=0.05,
        on_ready=on_ready,
    )
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(app.run())), daemon=True)
    thread.start()
    assert ready.wait(20), "the daemon did not start"
    try:
        yield Running(*started[0], cp, tmp_path / "policies.yaml")
    finally:
        app.request_stop()
        thread.join(15)
    assert not thread.is_alive(), "the daemon did not stop within 15 s"
    assert result == [0]


def test_the_endpoints_serve_health_readiness_metrics_and_decisions_without_secrets(running: Running) -> None:
    _until(lambda: running.get("/readyz").status_code == 200, "/readyz")
    _until(lambda: len(running.cp.reruns()) == 1, "the rerun")

    health = running.get("/healthz")
    metrics = running.get("/metrics")
    decisions = running.get("/decisions")

    assert health.status_code == 200
    assert running.get("/readyz").json()["ready"] is True
    assert 'rerund_decisions_total{decision="rerun",policy="transient"} 1.0' in metrics.text
    # Series of the policies in force exist from the start, at 0, so increase() sees a first event.
    assert 'rerund_reruns_issued_total{policy="bad-input",scope="run"} 0.0' in metrics.text
    assert 'rerund_decisions_total{decision="give_up",policy="transient"} 0.0' in metrics.text
    assert "rerund_last_sync_timestamp_seconds" in metrics.text
    # every long-lived cache says the bytes it holds, the SQLite ledger's fresh runs too
    for cache in ("seen", "ledger_fresh"):
        assert f'rerund_cache_bytes{{cache="{cache}"}}' in metrics.text
    body = decisions.json()
    assert [d["name"] for d in body["decisions"]] == ["abc123-retry-1"]
    [decision] = body["decisions"]
    assert decision["fingerprint"] == error_fingerprint("train.fit", CONNECTION_RESET)  # the failure's
    assert body["settings"]["api_key"] == "set"
    for response in (health, metrics, decisions, running.get("/readyz")):
        assert SECRET not in response.text
    assert running.get("/decisions?limit=x").status_code == 400
    assert running.get("/nope").status_code == 404


def test_an_invalid_policy_file_is_rejected_and_the_last_good_policies_stay(running: Running) -> None:
    _until(lambda: running.get("/readyz").status_code == 200, "/readyz")
    running.replace_policies("apiVersion: rerund/v1\npolicies:\n  - name: Bad Name\n    retry: {}\n")

    _until(
        lambda: 'rerund_policy_reloads_total{result="error"} 1.0' in running.get("/metrics").text,
        "the rejected reload",
    )

    assert "rerund_policies_loaded 2.0" in running.get("/metrics").text
    assert running.daemon.policies is not None
    assert running.daemon.policies.current.names() == ["bad-input", "transient"]

    running.replace_policies(POLICIES.replace("name: bad-input", "name: bad-input-v2"))
    _until(
        lambda: 'rerund_policy_reloads_total{result="ok"} 1.0' in running.get("/metrics").text,
        "the accepted reload",
    )
    assert running.daemon.policies.current.names() == ["bad-input-v2", "transient"]


def test_readiness_fails_when_the_control_plane_cannot_be_listed_and_says_why(running: Running) -> None:
    from rerund.errors import TransientControlPlaneError

    _until(lambda: running.get("/readyz").status_code == 200, "/readyz")
    running.cp.fail_next["list_failed"].extend(
        TransientControlPlaneError("UNAVAILABLE: down", rpc="ListRuns", code="unavailable")
        for _ in range(10_000)
    )
    running.cp.clock.advance(10)  # more than 3 poll intervals (1s) since the last good pass

    _until(lambda: running.get("/readyz").status_code == 503, "/readyz to fail")

    body = running.get("/readyz").json()
    assert body["ready"] is False
    assert body["reason"].startswith("the last successful resync was ")
    assert body["reason"].endswith(" ago (more than 3 poll intervals)")
    assert running.get("/healthz").status_code == 200  # alive, only not ready


def _ledger_with_decisions(tmp_path: Path) -> Path:
    from .test_reconcile import World

    world = World(tmp_path)
    world.cp.add_failed("abc123", at=T0)
    world.cp.add_failed("zzz999", at=T0)
    world.clock.advance(60)
    world.sync()
    world.ledger.close()
    return tmp_path / "rerund.db"


def test_history_lists_decisions_newest_first_with_utc_z_times(tmp_path: Path, capsys) -> None:
    state = _ledger_with_decisions(tmp_path)

    assert main(["history", "--state", str(state)]) == 0
    out = capsys.readouterr().out.strip().splitlines()

    assert len(out) == 2
    assert all(line[:20].endswith("Z") and "+00:00" not in line for line in out)
    assert "rerun    ml/production/zzz999  policy 'transient' reruns run 'zzz999'" in out[0]


def _exhausted_lineage(tmp_path: Path) -> Path:
    from .test_reconcile import World

    world = World(tmp_path)
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(60)
    world.sync()
    for attempt in (1, 2, 3):
        world.cp.fail(f"abc123-retry-{attempt}")
        world.clock.advance(120)
        world.sync()
        world.sync()  # the outcome is recorded on the pass that lists the rerun terminal
    world.ledger.close()
    return tmp_path / "rerund.db"


def test_history_of_a_run_tells_its_lineage_story_to_the_end(tmp_path: Path, capsys) -> None:
    state = _exhausted_lineage(tmp_path)

    assert main(["history", "--state", str(state), "--run", "abc123-retry-2"]) == 0
    out = capsys.readouterr().out.splitlines()

    assert out[0] == "lineage ml/production/abc123: exhausted (attempt 3, policy transient)"
    assert out[1] == (
        "  policy 'transient' gives up on run 'abc123-retry-3': attempt 4 would exceed max_attempts=3"
    )
    events = [line.split()[1] for line in out[2:]]
    assert events == [
        "rerun",
        "created",
        "outcome",
        "rerun",
        "created",
        "outcome",
        "rerun",
        "created",
        "outcome",
        "give_up",
    ]
    assert "rerun 'abc123-retry-1' created (attempt 1, scope run)" in out[3]
    assert "rerun 'abc123-retry-1' ended FAILED" in out[4]
    assert main(["history", "--state", str(state), "--run", "abc123", "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["root"] == "abc123" and body["state"]["state"] == "exhausted"
    assert [s["event"] for s in body["story"]][-1] == "give_up"


@pytest.mark.parametrize(
    ("argv", "code", "stream", "message"),
    [
        (["--limit", "0"], 2, "err", "argument --limit: invalid a whole number >= 1 value: '0'"),
        (["--limit", "-5"], 2, "err", "argument --limit: invalid a whole number >= 1 value: '-5'"),
        (
            ["--policy", "nope"],
            1,
            "out",
            "no decision recorded for policy 'nope'; policies with decisions: transient",
        ),
        (["--run", "nope"], 1, "out", "no decision recorded about run 'nope' or its lineage in "),
    ],
    ids=["limit-zero", "limit-negative", "unknown-policy", "unknown-run"],
)
def test_history_says_when_a_filter_finds_nothing_and_exits_non_zero(
    tmp_path: Path, capsys, argv: list[str], code: int, stream: str, message: str
) -> None:
    state = _ledger_with_decisions(tmp_path)
    with contextlib.suppress(SystemExit):
        assert main(["history", "--state", str(state), *argv]) == code
    captured = capsys.readouterr()
    assert message in getattr(captured, stream)


def test_history_of_a_file_that_is_not_a_ledger_says_so(tmp_path: Path, capsys) -> None:
    not_a_ledger = tmp_path / "README.md"
    not_a_ledger.write_text("# hello\n" * 200)
    assert main(["history", "--state", str(not_a_ledger)]) == 2
    err = capsys.readouterr().err
    assert (
        "is not a rerund ledger (not an SQLite database); pass the --state file a rerund daemon writes" in err
    )
    assert "writable" not in err


def test_history_as_json_is_the_decision_contract(tmp_path: Path, capsys) -> None:
    state = _ledger_with_decisions(tmp_path)

    assert main(["history", "--state", str(state), "--policy", "transient", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)

    assert {r["run"] for r in rows} == {"abc123", "zzz999"}
    assert {r["decision"] for r in rows} == {"rerun"}
    assert {"decision", "policy", "reason", "attempt", "scope", "name", "not_before"} <= set(rows[0])


def test_history_without_a_ledger_says_how_to_find_one(tmp_path: Path, capsys) -> None:
    assert main(["history", "--state", str(tmp_path / "none.db")]) == 2
    err = capsys.readouterr().err
    assert "no ledger at" in err and "pass --state PATH or --config FILE" in err


HOSTILE = {
    "alias bomb": "a0: &a0 [x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))
    + "policies: *a8\n",
    "990 levels deep": "policies: " + "[" * 990 + "]" * 990 + "\n",
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=list(HOSTILE))
def test_a_hostile_policy_file_is_rejected_and_hot_reload_goes_on(running: Running, caplog, text) -> None:
    _until(lambda: running.get("/readyz").status_code == 200, "/readyz")
    running.replace_policies(text)

    _until(
        lambda: 'rerund_policy_reloads_total{result="error"} 1.0' in running.get("/metrics").text,
        "the rejected reload",
    )
    assert running.get("/healthz").status_code == 200
    assert running.daemon.policies is not None
    assert running.daemon.policies.current.names() == ["bad-input", "transient"]
    assert any(
        "policy reload (file changed) rejected: 1 problem(s); the last good policies (2) stay in force"
        in r.getMessage()
        for r in caplog.records
    )

    running.replace_policies(POLICIES.replace("name: bad-input", "name: bad-input-v2"))
    _until(
        lambda: 'rerund_policy_reloads_total{result="ok"} 1.0' in running.get("/metrics").text,
        "the accepted reload after the hostile file",
    )
    assert running.daemon.policies.current.names() == ["bad-input-v2", "transient"]


def test_a_background_task_that_fails_is_restarted_and_readyz_says_so_while_it_is_down(
    running: Running,
) -> None:
    _until(lambda: running.get("/readyz").status_code == 200, "/readyz")
    healthy = threading.Event()

    async def flaky() -> None:
        if not healthy.is_set():
            raise RuntimeError("boom")
        await asyncio.Event().wait()  # runs until the daemon stops

    loop = running.loop
    assert loop is not None
    loop.call_soon_threadsafe(running.daemon.supervisor.start, "flaky", flaky)

    _until(lambda: running.get("/readyz").status_code == 503, "/readyz to report the task down")
    body = running.get("/readyz").json()
    assert body["ready"] is False
    assert body["reason"] == "background task(s) down, restarting with backoff: flaky: RuntimeError: boom"
    assert 'rerund_internal_errors_total{task="flaky"} 0.0' not in running.get("/metrics").text
    assert 'rerund_internal_errors_total{task="flaky"}' in running.get("/metrics").text
    assert 'rerund_internal_errors_total{task="policies"} 0.0' in running.get("/metrics").text
    assert running.get("/healthz").status_code == 200

    healthy.set()
    _until(lambda: running.get("/readyz").status_code == 200, "/readyz once the task runs again")


def _foreign_sqlite(tmp_path: Path) -> tuple[Path, bytes]:
    """An SQLite database of some other program, and its bytes before rerund saw it."""
    other = tmp_path / "app.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT)")
    db.commit()
    db.close()
    return other, other.read_bytes()


def test_reading_commands_refuse_an_sqlite_file_that_is_not_a_ledger_and_leave_it_untouched(
    tmp_path: Path, capsys
) -> None:
    other, before = _foreign_sqlite(tmp_path)
    config = tmp_path / "rerund.yaml"
    config.write_text(
        f"endpoint: http://127.0.0.1:{free_port()}\norg: sandbox\npolicies: [{REPO / 'policies'}]\n"
        "scopes: [{project: p, domain: d}]\n"
    )
    for argv in (
        ["history", "--state", str(other)],
        ["status", "--state", str(other), "--config", str(config)],
        ["repro", "history", "nightly", "--state", str(other)],
        ["repro", "list", "--state", str(other), "--policies", str(REPO / "policies")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert (
            f"'{other}' is an SQLite database but not a rerund ledger (it has tables but no decisions "
            "table); pass "
            "the --state file a rerund daemon writes (default ./rerund.db); nothing was written to it"
        ) in err
    db = sqlite3.connect(other)
    assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["accounts"]
    db.close()
    assert other.read_bytes() == before
    assert not Path(f"{other}-wal").exists()


def test_a_daemon_on_a_file_state_leads_alone_and_readyz_says_so(running: Running) -> None:
    _until(lambda: running.get("/readyz").status_code == 200, "/readyz")
    body = running.get("/readyz").json()
    assert (body["role"], body["shared"], body["term"]) == ("leader", False, 0)
    registry = running.daemon.metrics.registry
    assert registry.get_sample_value("rerund_leader") == 1.0
    assert registry.get_sample_value("rerund_leader_changes_total") == 1.0
    assert "leadership" not in running.get("/status").json()  # one replica: nothing to say
