"""End to end: the real ``rerund run`` daemon (a subprocess) against the sandbox control plane,
over real HTTP with the real flyte SDK — the "Must show" list of the daemon issue.

Tests that issue reruns end by reading the control plane's own state
(``SandboxHandle.runs()``) and checking it with the reliability oracle
(``tests/rerun_oracle.py``): for every lineage the reruns on the control plane are exactly those
the policies owe. Tests wait on conditions with generous deadlines; the one timing asserted is
the contract itself (SIGTERM exits within 10 s).

The storms and the kill/replica/fault scenarios here are the small versions; the reliability
suite (``tests/reliability/``) runs them larger, and at full size under ``make chaos``.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon_support import DaemonProcess, daemons, total, wait_until
from daemon_support import settle as settle_all
from rerun_oracle import reruns
from rerund.policy import load_policies
from rerund.sandbox.testing import SandboxHandle, start_sandbox
from storms import STORM_WORKLOAD, launch_storm, owed_reruns, storm_policies
from storms import write_policies as write_storm_policies

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]  # generous: the machine may be loaded

TIME_SCALE = 0.2

MIXED_WORKLOAD: dict[str, Any] = {
    "tasks": {
        # transient network error on the root action: recovers after two reruns
        "train.fit": {
            "duration": "0.5s",
            "behaviour": ["fail", "fail", "succeed"],
            "error": {
                "kind": "SYSTEM",
                "code": "ConnectionResetError",
                "message": "ConnectionResetError: [Errno 104] Connection reset by peer",
            },
            "inputs": {"lr": 0.1},
        },
        # a pipeline whose second child fails once: rerun only that action
        "etl.pipeline": {"children": ["etl.extract", "etl.load"]},
        "etl.extract": {"duration": "0.25s", "outputs": {"rows": 1000}},
        "etl.load": {
            "duration": "0.25s",
            "behaviour": ["fail", "succeed"],
            "error": {"kind": "SYSTEM", "code": "HTTPError", "message": "HTTPError: 503 Service Unavailable"},
        },
        # a bad input: never rerun
        "report.render": {
            "duration": "0.25s",
            "behaviour": ["fail"],
            "error": {"kind": "USER", "code": "ValueError", "message": "ValueError: mixed types"},
        },
        # always times out: exhausts max_attempts=3
        "ingest.download": {
            "duration": "0.25s",
            "behaviour": ["fail"],
            "error": {"kind": "SYSTEM", "code": "TimeoutError", "message": "TimeoutError: timed out"},
        },
        # a batch whose publish step fails once: recover (reuse the succeeded prepare step)
        "batch.daily": {"children": ["batch.prepare", "batch.publish"]},
        "batch.prepare": {"duration": "0.25s", "outputs": {"rows": 5}},
        "batch.publish": {
            "duration": "0.25s",
            "behaviour": ["fail", "succeed"],
            "error": {"kind": "SYSTEM", "code": "PublishConflict", "message": "PublishConflict: busy"},
        },
    }
}

MIXED_POLICIES: dict[str, Any] = {
    "apiVersion": "rerund/v1",
    "defaults": {"max_attempts": 3, "backoff": {"initial": "100ms", "factor": 2, "max": "1s", "jitter": 0}},
    "policies": [
        {
            "name": "never-retry-bad-input",
            "match": {"error": {"kinds": ["USER"], "patterns": ["ValueError|TypeError"]}},
            "retry": False,
        },
        {
            "name": "batch-recover",
            "match": {"tasks": ["batch.*"], "error": {"patterns": ["PublishConflict"]}},  # oss: no code
            "retry": {"scope": "recover", "labels": {"retried-by": "rerund"}},
        },
        {
            "name": "train-lower-lr",
            "match": {"tasks": ["train.fit"], "error": {"kinds": ["SYSTEM"]}},
            "retry": {
                "scope": "failed_action",
                "env": {"FLYTE_RETRY": "true"},
                "labels": {"retried-by": "rerund"},
                "inputs": {"lr": 0.05},
                "escalate": {2: {"env": {"MEMORY_HINT": "high"}, "inputs": {"lr": 0.01}}},
            },
        },
        {
            "name": "transient-network",
            "match": {
                "error": {
                    "kinds": ["SYSTEM"],
                    "patterns": ["(?i)connection (reset|refused)", "\\b50[234]\\b", "(?i)timed? ?out"],
                }
            },
            "retry": {"scope": "failed_action", "labels": {"retried-by": "rerund"}},
        },
    ],
}

MIXED_LAUNCHES: tuple[dict[str, Any], ...] = (
    {"task": "train.fit", "count": 3, "labels": {"team": "ml"}, "inputs": {"lr": 0.1}},
    {"task": "etl.pipeline", "count": 2},
    {"task": "report.render", "count": 1},
    {"task": "ingest.download", "count": 1},
    {"task": "batch.daily", "count": 1},
)

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def write_policies(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(params=["union", "oss"])
def mixed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SandboxHandle, Path]]:
    """The mixed workload on both sandbox profiles (``oss``: open-source Flyte 2)."""
    with start_sandbox(workload=MIXED_WORKLOAD, time_scale=TIME_SCALE, profile=request.param) as sb:
        yield sb, write_policies(tmp_path / "policies.yaml", MIXED_POLICIES)


def test_a_mixed_workload_ends_with_exactly_the_owed_reruns(
    mixed: tuple[SandboxHandle, Path], tmp_path: Path
) -> None:
    sb, policy_file = mixed
    policies = load_policies([policy_file])
    d = DaemonProcess(tmp_path / "d", sb, policy_file)
    with daemons(d):
        d.wait_ready()
        for launch in MIXED_LAUNCHES:
            sb.launch(**launch)
        result = settle_all(sb, [d], policies)
        runs = sb.runs()
        assert result.exact(), result.problems()

        by_task = Counter(r["task"] for r in reruns(runs))
        # fail, fail, succeed: two reruns each; etl.load once per pipeline (only that action);
        # the always-timing-out download exhausts max_attempts=3; the bad input never reruns
        assert by_task == {"train.fit": 6, "etl.load": 2, "ingest.download": 3, "batch.daily": 1}
        for r in reruns(runs):
            assert DNS_1035.match(r["name"]) and len(r["name"]) <= 30, r["name"]
            assert 1 <= int(r["labels"]["rerund-attempt"]) <= 3, r
            assert r["labels"]["retried-by"] == "rerund"
        assert len({(r["labels"]["rerund-root"], r["labels"]["rerund-attempt"]) for r in reruns(runs)}) == 12

        originals = {r["name"]: r for r in runs if "rerund-root" not in r["labels"]}
        for r in reruns(runs):
            source = r["relation"]["run"]
            root = originals[r["labels"]["rerund-root"]]
            if r["task"] == "train.fit":  # the root action failed: failed_action falls back to run
                attempt = int(r["labels"]["rerund-attempt"])
                assert (r["relation"]["type"], r["action_name"]) == ("RERUN", "a0")
                assert r["envs"]["FLYTE_RETRY"] == "true"
                assert r["inputs"] == {"lr": 0.05 if attempt == 1 else 0.01}
                assert ("MEMORY_HINT" in r["envs"]) is (attempt == 2)
                assert r["labels"]["team"] == "ml"  # the source run's labels are kept
            elif r["task"] == "etl.load":  # only the failed child action re-executed
                assert (r["relation"]["type"], r["action_name"]) == ("RERUN", "a2")
                assert [a["name"] for a in r["actions"]] == ["a0"]
            elif r["task"] == "batch.daily":  # recover: the succeeded step is reused
                assert r["relation"]["type"] == "RECOVER"
                assert {a["name"]: a["phase"] for a in r["actions"]} == {
                    "a0": "SUCCEEDED",
                    # open-source Flyte stores RECOVER but runs every action again
                    "a1": "RECOVERED" if sb.profile.recover_acts else "SUCCEEDED",
                    "a2": "SUCCEEDED",
                }
            assert source in {x["name"] for x in runs}
            assert root["phase"] in ("FAILED", "TIMED_OUT")

        # each lineage's final state
        finals = {root: x.final for root, x in result.lineages.items()}
        by_final = Counter((originals[root]["task"], final) for root, final in finals.items())
        assert by_final == {
            ("train.fit", "succeeded"): 3,
            ("etl.pipeline", "succeeded"): 2,
            ("report.render", "ignore"): 1,
            ("ingest.download", "give_up"): 1,
            ("batch.daily", "succeeded"): 1,
        }

        # metrics equal what the control plane shows
        def metrics_agree() -> bool:
            m = d.metrics()
            return (
                total(m, "rerund_reruns_issued_total") == len(reruns(runs))
                and total(m, "rerund_lineages_recovered_total") == 6
                and total(m, "rerund_lineages_exhausted_total") == 1
                and total(m, "rerund_rerun_outcomes_total") == len(reruns(runs))
                and total(m, "rerund_failures_observed_total")
                == sum(1 for r in runs if r["phase"] != "SUCCEEDED")
            )

        wait_until(
            "the metrics to equal the control plane", metrics_agree, 60, lambda: d.metrics_text() + d.logs()
        )
        m = d.metrics()
        assert total(m, "rerund_reruns_issued_total", scope="recover") == 1
        assert total(m, "rerund_reruns_issued_total", scope="failed_action") == 2
        assert total(m, "rerund_reruns_issued_total", scope="run") == 9
        assert total(m, "rerund_decisions_total", decision="ignore") == 1
        assert total(m, "rerund_decisions_total", decision="give_up") == 1
        assert total(m, "rerund_rerun_outcomes_total", outcome="succeeded") == 6
        assert d.healthz()[0] == 200 and d.readyz()[0] == 200


# -- crashes, replicas, faults ---------------------------------------------------------------


@pytest.fixture
def storm_policy_file(tmp_path: Path) -> Path:
    return write_storm_policies(tmp_path / "storm-policies.yaml", storm_policies())


def test_a_daemon_sigkilled_mid_storm_and_restarted_neither_duplicates_nor_misses(
    tmp_path: Path, storm_policy_file: Path
) -> None:
    policies = load_policies([storm_policy_file])
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0) as sb:
        d = DaemonProcess(tmp_path / "d", sb, storm_policy_file)
        with daemons(d):
            d.wait_ready()
            launch_storm(sb, 30)
            # SIGKILL while the first wave is being worked on ...
            wait_until("the storm to be under way", lambda: len(reruns(sb.runs())) >= 5, 120, d.logs, 0.05)
            d.kill()
            # ... and the second wave fails while the daemon is down
            launch_storm(sb, 30)
            d.start()
            result = settle_all(sb, [d], policies)
            assert result.failures == 60
            assert result.owed == 2 * owed_reruns(30)
            assert result.exact(), result.problems()
            assert d.healthz()[0] == 200 and d.readyz()[0] == 200


def test_two_daemons_against_one_sandbox_issue_no_duplicate(tmp_path: Path, storm_policy_file: Path) -> None:
    policies = load_policies([storm_policy_file])
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0) as sb:
        a = DaemonProcess(tmp_path / "a", sb, storm_policy_file, name="a")
        b = DaemonProcess(tmp_path / "b", sb, storm_policy_file, name="b")
        with daemons(a, b):
            a.wait_ready()
            b.wait_ready()
            launch_storm(sb, 60, waves=2)
            result = settle_all(sb, [a, b], policies)
            assert result.exact(), result.problems()
            issued = [total(p.metrics(), "rerund_reruns_issued_total") for p in (a, b)]
            assert sum(issued) == result.issued == owed_reruns(60), issued
            # both saw every failure; the one that lost a race was told ALREADY_EXISTS
            assert all(p.healthz()[0] == 200 and p.readyz()[0] == 200 for p in (a, b))


def test_sandbox_faults_unavailable_latency_and_dropped_streams_miss_nothing(
    tmp_path: Path, storm_policy_file: Path
) -> None:
    policies = load_policies([storm_policy_file])
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0) as sb:
        d = DaemonProcess(tmp_path / "d", sb, storm_policy_file)
        with daemons(d):
            d.wait_ready()
            sb.set_faults(unavailable=0.2, latency_s=0.05, drop_streams_after=10)
            launch_storm(sb, 40)
            result = settle_all(sb, [d], policies)
            assert result.owed == owed_reruns(40)
            assert result.exact(), result.problems()
            m = d.metrics()
            assert total(m, "rerund_control_plane_errors_total", code="unavailable") > 0
            assert "watch of demo/development dropped" in d.logs(10**7)
            sb.set_faults(unavailable=0.0, latency_s=0.0, drop_streams_after=0)
            d.wait_ready()


# Under `make chaos` (~30 s in real time): test_reconcile.py::
# test_a_create_that_keeps_failing_is_retried_until_it_succeeds and test_issuer.py::
# test_transient_errors_are_counted_and_retried_with_capped_doubling_delays cover it on fake time.
@pytest.mark.slow
def test_a_rerun_whose_creation_keeps_failing_is_retried_until_it_is_created(
    tmp_path: Path, storm_policy_file: Path
) -> None:
    doc = storm_policies()
    doc["defaults"]["backoff"] = {"initial": "5s", "factor": 1, "max": "5s", "jitter": 0}
    policy_file = write_storm_policies(tmp_path / "slow-backoff.yaml", doc)
    policies = load_policies([policy_file])
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0) as sb:
        d = DaemonProcess(tmp_path / "d", sb, policy_file)
        with daemons(d):
            d.wait_ready()
            [name] = sb.launch(task="storm.flaky")
            wait_until(
                "the rerun to be decided (due in 5s)",
                lambda: any(
                    x["run"] == name and x["decision"] == "rerun" for x in d.decisions()["decisions"]
                ),
                60,
                d.logs,
                interval=0.05,
            )
            # the control plane is down when the rerun falls due, for longer than the SDK retries
            sb.set_faults(unavailable=1.0)
            wait_until(
                "CreateRun to fail several times",
                lambda: total(d.metrics(), "rerund_control_plane_errors_total", rpc="CreateRun") >= 3,
                120,
                d.logs,
            )
            assert reruns(sb.runs()) == []
            assert f"{sb.project}/{sb.domain}/{name}" in d.pending()  # owed, not abandoned
            sb.set_faults(unavailable=0.0)
            result = settle_all(sb, [d], policies)
            assert result.exact() and result.issued == 1, result.problems()
            assert "retrying in" in d.logs(10**7)
            assert total(d.metrics(), "rerund_reruns_issued_total") == 1


# -- policies, secrets, signals, dry run -------------------------------------------------------


BAD_POLICY = "apiVersion: rerund/v1\npolicies:\n  - name: BAD NAME\n    retry: {max_attempts: -1}\n"


def test_an_invalid_policy_reload_keeps_the_old_policies(tmp_path: Path, storm_policy_file: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    policy_file = live / "rerund.yaml"
    policy_file.write_text(storm_policy_file.read_text())
    policies = load_policies([policy_file])
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0) as sb:
        d = DaemonProcess(tmp_path / "d", sb, live)
        with daemons(d):
            d.wait_ready()
            before = d.metrics()
            assert total(before, "rerund_policies_loaded") == 2

            def reloads(result: str) -> float:
                return total(d.metrics(), "rerund_policy_reloads_total", result=result)

            policy_file.write_text(BAD_POLICY)  # a file change
            wait_until("the changed file to be rejected", lambda: reloads("error") >= 1, 60, d.logs)
            assert d.proc is not None
            d.proc.send_signal(signal.SIGHUP)  # and an explicit reload of the same bad file
            wait_until("the SIGHUP reload to be rejected", lambda: reloads("error") >= 2, 60, d.logs)
            assert reloads("ok") == 0
            assert total(d.metrics(), "rerund_policies_loaded") == 2
            log = d.logs(10**7)
            assert "rejected" in log and "last good policies (2) stay in force" in log
            assert "policies[0].name" in log  # the check problems are in the log

            # the old policies are still in force: a storm gets exactly what they owe
            launch_storm(sb, 20)
            result = settle_all(sb, [d], policies)
            assert result.owed == owed_reruns(20)
            assert result.exact(), result.problems()

            # and a valid file is taken
            policy_file.write_text(storm_policy_file.read_text().replace("storm-transient", "storm-next"))
            wait_until("the valid file to be loaded", lambda: reloads("ok") >= 1, 60, d.logs)


API_SECRET = "S3cretRerundKey9f8e7d"


@pytest.mark.parametrize("via", ["FLYTE_API_KEY", "api_key_file"])
def test_the_api_key_never_appears_in_logs_metrics_or_decisions(
    via: str, tmp_path: Path, storm_policy_file: Path
) -> None:
    import base64

    key = base64.b64encode(f"sandbox.example.com:rerund-client:{API_SECRET}:sandbox".encode()).decode()
    env: dict[str, str] = {}
    extra: dict[str, Any] = {"log_level": "DEBUG"}
    if via == "FLYTE_API_KEY":
        env["FLYTE_API_KEY"] = key
    else:
        key_file = tmp_path / "api-key"
        key_file.write_text(key + "\n")
        os.chmod(key_file, 0o600)
        extra["api_key_file"] = str(key_file)
    policies = load_policies([storm_policy_file])
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0) as sb:
        d = DaemonProcess(tmp_path / "d", sb, storm_policy_file, env=env, extra=extra)
        with daemons(d):
            d.wait_ready()
            launch_storm(sb, 10)
            settle_all(sb, [d], policies)
            sb.set_faults(unavailable=1.0)  # errors are logged too
            wait_until(
                "control-plane errors",
                lambda: total(d.metrics(), "rerund_control_plane_errors_total") > 0,
                60,
                d.logs,
            )
            sb.set_faults(unavailable=0.0)
            exposed = {
                "/metrics": d.metrics_text(),
                "/decisions": str(d.decisions()),
                "/readyz": d.readyz()[1],
            }
            assert d.decisions()["settings"]["api_key"] == "set"
        exposed["log"] = d.log.read_text(errors="replace")
        for where, text in exposed.items():
            for secret in (key, API_SECRET):
                assert secret not in text, f"the API key leaked into {where}"


def test_sigterm_stops_the_daemon_within_10_seconds_mid_storm(
    tmp_path: Path, storm_policy_file: Path
) -> None:
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0) as sb:
        d = DaemonProcess(tmp_path / "d", sb, storm_policy_file)
        with daemons(d):
            d.wait_ready()
            sb.set_faults(latency_s=0.5)  # calls are in flight when the signal arrives
            launch_storm(sb, 40)
            wait_until("calls in flight", lambda: d.pending() != {}, 60, d.logs, interval=0.05)
            assert d.proc is not None
            d.proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            d.proc.wait(timeout=30)
            elapsed = time.monotonic() - started
            assert d.proc.returncode == 0, d.logs()
            assert elapsed < 10, f"SIGTERM took {elapsed:.1f}s\n{d.logs()}"
            assert "rerund stopped" in d.logs()


# Under `make chaos` (~15 s per backend): test_reconcile.py::
# test_dry_run_decides_and_records_but_creates_nothing covers it on fake time.
@pytest.mark.slow
def test_dry_run_records_decisions_and_creates_nothing(
    mixed: tuple[SandboxHandle, Path], tmp_path: Path
) -> None:
    import json
    import subprocess

    from daemon_support import rerund_binary

    sb, policy_file = mixed
    d = DaemonProcess(tmp_path / "d", sb, policy_file, args=("--dry-run",))
    with daemons(d):
        d.wait_ready()
        for launch in MIXED_LAUNCHES:
            sb.launch(**launch)
        sb.wait_idle(timeout=60)
        failed = [r["name"] for r in sb.runs() if r["phase"] != "SUCCEEDED"]
        assert len(failed) == 8

        def all_decided() -> bool:
            decided = {x["run"] for x in d.decisions()["decisions"]}
            return set(failed) <= decided and not d.pending()

        wait_until("a decision for every failure", all_decided, 120, d.logs)
        time.sleep(2)  # a couple more passes: still nothing is created
        assert reruns(sb.runs()) == []
        assert sb.request_counts().get("CreateRun", 0) == 0
        kinds = Counter(x["decision"] for x in d.decisions()["decisions"])
        assert kinds == {"rerun": 7, "ignore": 1}
        assert total(d.metrics(), "rerund_reruns_issued_total") == 0
        assert "would create" in d.logs()
    history = subprocess.run(
        [rerund_binary(), "history", "--state", str(d.state), "--format", "json", "--limit", "100"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(history.stdout)
    assert {r["run"] for r in rows} == set(failed)


def _change_retry(doc: dict[str, Any], policy_file: Path) -> None:
    """Change the storm's retry policy (scope recover, 5 attempts) in ``policy_file``."""
    doc["policies"][1]["retry"]["scope"] = "recover"
    doc["policies"][1]["retry"]["max_attempts"] = 5
    write_storm_policies(policy_file, doc)


def _assert_no_more_reruns_after(what: str, sb: SandboxHandle, d: DaemonProcess, *, issued: int) -> None:
    """After a few more passes of ``d`` and an idle sandbox, still only ``issued`` reruns."""
    passes = total(d.metrics(), "rerund_last_sync_timestamp_seconds")
    wait_until(
        f"a few passes after the {what}",
        lambda: total(d.metrics(), "rerund_last_sync_timestamp_seconds") > passes + 3,
        60,
        d.logs,
    )
    sb.wait_idle(timeout=60)
    names = sorted(r["name"] for r in reruns(sb.runs()))
    assert len(names) == issued, f"reruns issued twice after the {what}: {names}\n{d.logs()}"


# Under `make chaos` (~17 s, ~11 s): test_reconcile.py::
# test_changed_policies_never_rerun_a_failure_already_rerun_after_a_reload_or_a_restart covers
# both on fake time.
@pytest.mark.slow
def test_a_policy_reload_never_reruns_a_failure_again_under_changed_policies(
    tmp_path: Path, storm_policy_file: Path
) -> None:
    """Reloaded policies decide again what is still owed and leave settled failures settled. A
    failure already rerun must be found rerun even when its rerun is older than the resync window
    and the new policies differ (scope, attempts)."""
    doc = storm_policies()
    live = tmp_path / "live"
    live.mkdir()
    policy_file = write_storm_policies(live / "rerund.yaml", doc)
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0) as sb:
        d = DaemonProcess(tmp_path / "d", sb, live, overlap="1s")
        with daemons(d):
            d.wait_ready()
            launch_storm(sb, 3)  # storm.flaky: one rerun each, then recovered
            settle_all(sb, [d], load_policies([policy_file]))
            assert len(reruns(sb.runs())) == 3
            time.sleep(5)  # several passes: the reruns are now older than watermark - overlap

            _change_retry(doc, policy_file)
            wait_until(
                "the reload",
                lambda: total(d.metrics(), "rerund_policy_reloads_total", result="ok") >= 1,
                60,
                d.logs,
            )
            _assert_no_more_reruns_after("reload", sb, d, issued=3)
            assert not d.pending()


@pytest.mark.slow
def test_a_daemon_restarted_with_changed_policies_does_not_rerun_again(
    tmp_path: Path, storm_policy_file: Path
) -> None:
    doc = storm_policies()
    live = tmp_path / "live"
    live.mkdir()
    policy_file = write_storm_policies(live / "rerund.yaml", doc)
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0) as sb:
        d = DaemonProcess(tmp_path / "d", sb, live)
        with daemons(d):
            d.wait_ready()
            launch_storm(sb, 3)
            wait_until("three reruns", lambda: len(reruns(sb.runs())) == 3, 120, d.logs)
            d.kill()
            _change_retry(doc, policy_file)
            d.start()
            d.wait_ready()
            _assert_no_more_reruns_after("restart", sb, d, issued=3)


@pytest.mark.parametrize(("event_loop", "sig"), [("uvloop", signal.SIGINT), ("asyncio", signal.SIGTERM)])
def test_rerund_run_runs_on_the_sdks_loop_of_the_configured_kind_and_stops_on_a_signal(
    tmp_path: Path, storm_policy_file: Path, event_loop: str, sig: signal.Signals
) -> None:
    # `rerund run` runs the daemon on the SDK's own event loop thread (no hand-off per call), so
    # the signal handlers are installed from the main thread and forwarded to it.
    with start_sandbox(workload=STORM_WORKLOAD, time_scale=1.0) as sb:
        d = DaemonProcess(tmp_path / "d", sb, storm_policy_file, extra={"event_loop": event_loop})
        with daemons(d):
            d.wait_ready()
            launch_storm(sb, 6)
            result = settle_all(sb, [d], load_policies([storm_policy_file]))
            assert result.failures == 6 and result.exact(), result.problems()
            assert f"event loop {event_loop}" in d.logs()
            assert d.proc is not None
            d.proc.send_signal(sig)
            assert d.proc.wait(timeout=30) == 0, d.logs()
            assert "rerund stopped" in d.logs()
