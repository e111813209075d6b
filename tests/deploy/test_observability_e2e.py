"""End to end: a real Prometheus server scrapes a real rerund daemon that works a failure workload
on the sandbox control plane; then every query of every dashboard panel and every alert
expression is run through Prometheus' HTTP API.

Everything listens on 127.0.0.1 on free ports. The daemon is the real ``rerund run`` in a
subprocess, configured by a settings file; its policies directory is laid out the way the kubelet
mounts a ConfigMap (``..data`` symlink swapped atomically on update), so the test also proves
that a ConfigMap policy change is hot-reloaded without a restart (and that an invalid one is
rejected, which the RerundPolicyReloadFailing alert then reports). The policies also carry a
daily reproduction check of a fixed reference run: its slot passed before the daemon started, so
it fires once on start (a missed firing) and reproduces, which feeds the reproduction panels.

Queries that are valid but have no data here, and why (each asserted empty, and its metrics
asserted absent from the daemon's /metrics, so this list cannot hide a broken query):
- RerundReproductionCheckFailing (also without a threshold): the reproduction check matched,
  so no ``rerund_reproduction_last_result`` is 0;
- RerundMetricsAbsent: the daemon is scraped;
- RerundNotSyncing, RerundRetryStorm, RerundExhaustedLineagesRising and
  RerundControlPlaneErrorRateHigh as whole alerts: the daemon is healthy and below the
  thresholds (their expressions without the threshold comparison are asserted to have data).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import DASHBOARD, REPO, RULES, KubeletConfigMapDir, grafana_expr, metric_names, tool

pytestmark = pytest.mark.e2e

PANELS_EXPECTED_EMPTY: dict[str, str] = {}  # panel -> why it has no data here (none today)
# A daily check of a fixed reference run (launched under this name before the daemon starts).
REPRODUCTION = {
    "name": "daily-metrics",
    "schedule": "0 3 * * *",
    "source": {"run": "daily-ref"},
    "compare": {"outputs": "exact"},
}
# alert -> does its whole expression return data in this healthy-but-failing scenario?
ALERTS_EXPECTED = {
    "RerundNotSyncing": False,
    "RerundMetricsAbsent": False,
    "RerundControlPlaneErrorRateHigh": False,
    "RerundRetryStorm": False,
    "RerundExhaustedLineagesRising": False,
    "RerundReproductionCheckFailing": False,
    "RerundPolicyReloadFailing": True,
    "RerundInternalErrors": False,
    "RerundNoLeader": False,  # the one replica leads
}
# alerts whose expression stays empty even without its threshold (see the module docstring)
ALERT_INNER_EMPTY = {"RerundMetricsAbsent", "RerundReproductionCheckFailing"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait(what: str, check: Callable[[], bool], timeout: float, logs: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            if check():
                return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{logs()}")


def _scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The daemon's /metrics as {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    _, body = _get(url)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def _total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


@dataclass
class Webhook:
    """A local webhook receiver (the daemon notifies exhausted lineages)."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    @contextlib.contextmanager
    def running(self) -> Iterator[Webhook]:
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                bodies.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def query(self, promql: str) -> list[dict[str, Any]]:
        status, body = _get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", f"{promql}\n{body}"
        assert answer["data"]["resultType"] == "vector", promql
        return list(answer["data"]["result"])

    def logs(self) -> str:
        return self.log.read_text()[-4000:]


@contextlib.contextmanager
def prometheus(tmp: Path, target: str) -> Iterator[Prometheus]:
    """A real Prometheus on 127.0.0.1: 1s scrapes of ``target``, rules.yaml evaluated every second."""
    port = _free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [{"job_name": "rerund", "static_configs": [{"targets": [target]}]}],
            }
        )
    )
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        _wait("Prometheus to be ready", lambda: _get(f"{prom.url}/-/ready")[0] == 200, 30, prom.logs)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _workload() -> dict[str, Any]:
    """The demo workload (policies/demo/workload.yaml) without its timed arrivals (the test launches
    runs itself), plus a task whose policy has a budget of one rerun, to see a budget deferral."""
    workload = yaml.safe_load((REPO / "policies" / "demo" / "workload.yaml").read_text())
    workload.pop("arrivals", None)
    workload["runs"] = []
    workload["tasks"]["quota.sync"] = {
        "duration": "0.5s",
        "behaviour": ["fail", "succeed"],
        "error": {
            "kind": "SYSTEM",
            "code": "QuotaExceeded",
            "message": "QuotaExceeded: warehouse slots full",
        },
    }
    return dict(workload)


def _policies(extra: list[dict[str, Any]] | None = None) -> str:
    """The demo policies (policies/rerund.yaml) with test-speed backoff and a budgeted policy."""
    doc = yaml.safe_load((REPO / "policies" / "rerund.yaml").read_text())
    doc["defaults"]["backoff"] = {"initial": "200ms", "factor": 2, "max": "1s", "jitter": 0}
    budgeted = {
        "name": "warehouse-quota",
        "match": {"tasks": ["quota.sync"]},
        "retry": {"scope": "run", "budget": {"max_reruns": 1, "per": "1h"}},
    }
    doc["policies"] = [budgeted, *doc["policies"], *(extra or [])]
    doc["reproductions"] = [REPRODUCTION]
    return str(yaml.safe_dump(doc, sort_keys=False))


LAUNCHES = (
    {"task": "train.fit", "count": 3, "labels": {"team": "ml"}, "inputs": {"lr": 0.1}},
    {"task": "etl.pipeline", "count": 2},
    {"task": "report.render", "count": 1},
    {"task": "ingest.download", "count": 1},
    {"task": "quota.sync", "count": 2},
)


@dataclass
class Scenario:
    prom: Prometheus
    daemon: subprocess.Popen[bytes]
    daemon_url: str
    daemon_log: Path
    policies: KubeletConfigMapDir
    webhook: Webhook
    reloads_before: dict[str, float]
    daemon_pid_at_start: int

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return _scrape(f"{self.daemon_url}/metrics")

    def logs(self) -> str:
        return (
            "daemon log:\n" + self.daemon_log.read_text()[-6000:] + "\nprometheus log:\n" + self.prom.logs()
        )


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    from rerund.sandbox.testing import start_sandbox

    tmp = tmp_path_factory.mktemp("observability")
    with start_sandbox(workload=_workload(), time_scale=0.2) as sb, Webhook().running() as hook:
        sb.launch("metrics.daily", name=REPRODUCTION["source"]["run"])  # the reference run
        sb.wait_for(REPRODUCTION["source"]["run"])
        policies = KubeletConfigMapDir(tmp / "policies", {"rerund.yaml": _policies()})
        http_port = _free_port()
        config = tmp / "rerund.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "endpoint": sb.endpoint,
                    "org": sb.org,
                    "scopes": [{"project": sb.project, "domain": sb.domain}],
                    "policies": [str(policies.path)],
                    "state": str(tmp / "rerund.db"),
                    "http": f"127.0.0.1:{http_port}",
                    "poll_interval": "1s",
                    "lookback": "1h",
                    "notify": {"webhook": hook.url, "retries": 1, "timeout": "2s"},
                }
            )
        )
        daemon_log = tmp / "daemon.log"
        with daemon_log.open("wb") as out:
            daemon = subprocess.Popen(
                [tool("rerund"), "run", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp,
            )
        url = f"http://127.0.0.1:{http_port}"
        logs = lambda: daemon_log.read_text()[-6000:]  # noqa: E731
        try:
            _wait("the daemon's /readyz", lambda: _get(f"{url}/readyz")[0] == 200, 60, logs)
            with prometheus(tmp, f"127.0.0.1:{http_port}") as prom:
                _wait(
                    "Prometheus to scrape the daemon",
                    lambda: [r["value"][1] for r in prom.query('up{job="rerund"}')] == ["1"],
                    30,
                    prom.logs,
                )
                s = Scenario(prom, daemon, url, daemon_log, policies, hook, {}, daemon.pid)
                _work_the_workload(sb, s)
                yield s
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def _work_the_workload(sb: Any, s: Scenario) -> None:
    """Drive every kind of event a dashboard panel or alert shows, then let Prometheus catch up."""
    # Two waves a few scrapes apart, so counters already scraped are seen to increase.
    for wave in (LAUNCHES, LAUNCHES[:2]):
        for launch in wave:
            sb.launch(**launch)
        time.sleep(3)
    sb.wait_idle(timeout=60)

    def settled() -> bool:
        m = s.metrics()
        return (
            _total(m, "rerund_reproduction_runs_total", result="match") >= 1
            and _total(m, "rerund_lineages_recovered_total") >= 5
            and _total(m, "rerund_lineages_exhausted_total") >= 1
            and _total(m, "rerund_budget_deferrals_total") >= 1
            and _total(m, "rerund_notifications_total") >= 1
        )

    _wait("recovered, exhausted, deferred and notified lineages, and a reproduction", settled, 90, s.logs)
    sb.wait_idle(timeout=60)

    # A policy change arrives the way the kubelet delivers a ConfigMap update: twice an invalid
    # file (rejected, last good policies kept), then a valid one with one more policy.
    s.reloads_before = {
        r: _total(s.metrics(), "rerund_policy_reloads_total", result=r) for r in ("ok", "error")
    }
    for n in (1, 2):
        s.policies.update({"rerund.yaml": "apiVersion: rerund/v1\npolicies:\n  - name: BAD NAME\n"})
        _wait(
            f"invalid policy reload {n} to be rejected",
            lambda n=n: (
                _total(s.metrics(), "rerund_policy_reloads_total", result="error")
                >= s.reloads_before["error"] + n
            ),
            30,
            s.logs,
        )
    extra = {"name": "oom-later", "match": {"error": {"codes": ["OOMKilled"]}}, "retry": {"max_attempts": 1}}
    s.policies.update({"rerund.yaml": _policies([extra])})
    _wait(
        "the valid policy reload",
        lambda: _total(s.metrics(), "rerund_policy_reloads_total", result="ok") > s.reloads_before["ok"],
        30,
        s.logs,
    )

    # A control-plane outage: every RPC answers UNAVAILABLE for a few poll intervals.
    sb.set_faults(unavailable=1.0)
    _wait(
        "control-plane errors to be counted",
        lambda: _total(s.metrics(), "rerund_control_plane_errors_total") > 0,
        60,
        s.logs,
    )
    sb.set_faults(unavailable=0.0)
    synced = _total(s.metrics(), "rerund_last_sync_timestamp_seconds")
    _wait(
        "a successful sync after the outage",
        lambda: _total(s.metrics(), "rerund_last_sync_timestamp_seconds") > synced,
        60,
        s.logs,
    )

    # Prometheus has caught up when its view equals the daemon's for the slowest-moving counters.
    def caught_up() -> bool:
        m = s.metrics()
        for name in ("rerund_control_plane_errors_total", "rerund_policy_reloads_total"):
            got = s.prom.query(f"sum({name})")
            if not got or float(got[0]["value"][1]) != _total(m, name):
                return False
        return True

    _wait("Prometheus to scrape the final counters", caught_up, 30, s.logs)
    time.sleep(2.5)  # a couple more scrapes and rule evaluations


def _dashboard_targets() -> list[tuple[str, str, str]]:
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]
    return [(p["title"], t["refId"], t["expr"]) for p in panels for t in p["targets"]]


def _legend_labels(panel: str, ref: str) -> set[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    target = next(t for p in panels if p["title"] == panel for t in p["targets"] if t["refId"] == ref)
    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target["legendFormat"]))


def _exported(scenario: Scenario) -> set[str]:
    return {name for name, _ in scenario.metrics()}


@pytest.mark.parametrize(
    ("panel", "ref", "expr"), _dashboard_targets(), ids=[f"{p}/{r}" for p, r, _ in _dashboard_targets()]
)
def test_every_dashboard_query_returns_data_from_the_live_daemon(
    scenario: Scenario, panel: str, ref: str, expr: str
) -> None:
    result = scenario.prom.query(grafana_expr(expr, range_="10m", rate_interval="5m"))
    if panel in PANELS_EXPECTED_EMPTY:
        assert result == [], PANELS_EXPECTED_EMPTY[panel]
        assert not metric_names(grafana_expr(expr)) & _exported(scenario), PANELS_EXPECTED_EMPTY[panel]
        return
    assert result, f"{panel}/{ref} returned no data:\n{expr}\n{scenario.logs()}"
    for series in result:
        float(series["value"][1])  # a number (NaN allowed only where a ratio is 0/0)
        assert _legend_labels(panel, ref) <= set(series["metric"]), (panel, series["metric"])


def test_the_recovery_rate_is_a_share_of_finished_lineages(scenario: Scenario) -> None:
    expr = next(e for p, _, e in _dashboard_targets() if p == "Recovery rate")
    [series] = scenario.prom.query(grafana_expr(expr, range_="10m"))
    value = float(series["value"][1])
    assert not math.isnan(value) and 0 < value < 1


def _alerts() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_every_alert_rule_is_evaluated_by_prometheus_without_error(scenario: Scenario) -> None:
    _, body = _get(f"{scenario.prom.url}/api/v1/rules")
    rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
    assert sorted(r["name"] for r in rules) == sorted(r["alert"] for r in _alerts())
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))


@pytest.mark.parametrize("alert", list(ALERTS_EXPECTED), ids=list(ALERTS_EXPECTED))
def test_every_alert_expression_is_valid_and_has_the_expected_data(scenario: Scenario, alert: str) -> None:
    expr = next(r["expr"] for r in _alerts() if r["alert"] == alert)
    result = scenario.prom.query(expr)
    assert bool(result) is ALERTS_EXPECTED[alert], (alert, result)
    inner = re.sub(r"\s*(>=|<=|==|!=|>|<)\s*[0-9.e+-]+\s*$", "", expr)
    inner_result = scenario.prom.query(inner)
    if alert in ALERT_INNER_EMPTY:
        assert inner_result == [], alert
    else:
        assert inner_result, f"{alert}: no data for {inner}\n{scenario.logs()}"


def test_the_rejected_policy_reload_fires_its_alert_in_prometheus(scenario: Scenario) -> None:
    firing = scenario.prom.query('ALERTS{alertname="RerundPolicyReloadFailing", alertstate="firing"}')
    assert [a["metric"]["severity"] for a in firing] == ["warning"]


def test_a_configmap_update_is_hot_reloaded_without_a_restart(scenario: Scenario) -> None:
    m = scenario.metrics()
    assert scenario.daemon.poll() is None and scenario.daemon.pid == scenario.daemon_pid_at_start
    assert _total(m, "rerund_policy_reloads_total", result="error") == scenario.reloads_before["error"] + 2
    assert _total(m, "rerund_policy_reloads_total", result="ok") >= scenario.reloads_before["ok"] + 1
    loaded = yaml.safe_load((scenario.policies.path / "rerund.yaml").read_text())["policies"]
    assert _total(m, "rerund_policies_loaded") == len(loaded)


def test_the_images_healthcheck_passes_against_the_live_daemon(scenario: Scenario) -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    command = json.loads(re.search(r"CMD (\[\"python\".*\])", dockerfile).group(1))  # type: ignore[union-attr]
    port = scenario.daemon_url.rsplit(":", 1)[1]
    proc = subprocess.run(
        [sys.executable, "-c", command[2].replace(":9464/", f":{port}/")], capture_output=True
    )
    assert proc.returncode == 0, proc.stderr


def test_the_webhook_received_the_exhausted_lineage(scenario: Scenario) -> None:
    assert any("text" in body for body in scenario.webhook.bodies)


def test_the_missed_reproduction_firing_ran_once_on_start_and_reproduced(scenario: Scenario) -> None:
    m = scenario.metrics()
    check = REPRODUCTION["name"]
    assert _total(m, "rerund_reproduction_runs_total", check=check) == 1
    assert _total(m, "rerund_reproduction_runs_total", check=check, result="match") == 1
    assert _total(m, "rerund_reproduction_last_result", check=check) == 1
    [series] = scenario.prom.query(f'rerund_reproduction_last_result{{check="{check}"}}')
    assert series["value"][1] == "1"
