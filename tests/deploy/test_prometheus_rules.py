"""The alert rules pass the real promtool, are unit-tested for every alert, and have one source."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deploy_support import (
    BASE,
    REPO,
    RULES,
    RULES_TEST,
    SERIES_NAMES,
    metric_names,
    run,
    tool,
)

REQUIRED_ALERTS = {
    "RerundNotSyncing": "rerund_last_sync_timestamp_seconds",
    "RerundControlPlaneErrorRateHigh": "rerund_control_plane_errors_total",
    "RerundRetryStorm": "rerund_reruns_issued_total",
    "RerundExhaustedLineagesRising": "rerund_lineages_exhausted_total",
    "RerundReproductionCheckFailing": "rerund_reproduction_last_result",
    "RerundPolicyReloadFailing": "rerund_policy_reloads_total",
    "RerundInternalErrors": "rerund_internal_errors_total",
    "RerundBudgetDeferring": "rerund_budget_deferrals_total",  # issue 28.8
}


def _alerts() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_the_rules_file() -> None:
    out = run(tool("promtool"), "check", "rules", str(RULES))
    assert f"SUCCESS: {len(_alerts())} rules found" in out.stdout


def test_promtool_unit_tests_of_every_alert_pass() -> None:
    out = run(tool("promtool"), "test", "rules", str(RULES_TEST))
    assert "SUCCESS" in out.stdout


def test_promtool_unit_tests_fail_when_an_alert_threshold_changes(tmp_path: Path) -> None:
    """The unit tests can fail: a retry-storm threshold of 500 no longer fires where they expect it."""
    shutil.copy(RULES_TEST, tmp_path / "rules.test.yaml")
    text = RULES.read_text()
    assert "increase(rerund_reruns_issued_total[10m])) > 50" in text
    (tmp_path / "rules.yaml").write_text(text.replace("[10m])) > 50", "[10m])) > 500"))
    out = run(tool("promtool"), "test", "rules", str(tmp_path / "rules.test.yaml"), check=False)
    assert out.returncode == 1
    assert "RerundRetryStorm" in out.stdout + out.stderr


def test_promtool_check_rejects_an_invalid_expression(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups:\n- name: x\n  rules:\n  - alert: X\n    expr: rate(rerund_decisions_total)\n")
    out = run(tool("promtool"), "check", "rules", str(bad), check=False)
    assert out.returncode == 1
    assert "expected type range vector" in out.stdout + out.stderr


@pytest.mark.parametrize(("alert", "metric"), sorted(REQUIRED_ALERTS.items()), ids=sorted(REQUIRED_ALERTS))
def test_the_issue_asks_for_this_alert_and_it_watches_its_metric(alert: str, metric: str) -> None:
    by_name = {rule["alert"]: rule for rule in _alerts()}
    assert alert in by_name
    assert metric in metric_names(by_name[alert]["expr"])


@pytest.mark.parametrize("alert", [r["alert"] for r in _alerts()], ids=[r["alert"] for r in _alerts()])
def test_every_alert_is_unit_tested_both_firing_and_not_firing(alert: str) -> None:
    cases = [
        case
        for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == alert
    ]
    assert any(case["exp_alerts"] for case in cases), f"{alert}: no test case where it fires"
    assert any(not case["exp_alerts"] for case in cases), f"{alert}: no test case where it stays quiet"


def test_the_rules_file_speaks_to_operators_not_of_issue_numbers() -> None:
    assert re.findall(r"(?i)\bissues? \d+", RULES.read_text()) == []


@pytest.mark.parametrize("alert", [r["alert"] for r in _alerts()], ids=[r["alert"] for r in _alerts()])
def test_every_alert_has_a_severity_and_says_what_to_do(alert: str) -> None:
    rule = next(r for r in _alerts() if r["alert"] == alert)
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert rule["annotations"]["summary"]
    assert len(rule["annotations"]["description"].split()) >= 15


@pytest.mark.parametrize("alert", [r["alert"] for r in _alerts()], ids=[r["alert"] for r in _alerts()])
def test_alerts_use_only_metrics_rerund_exports(alert: str) -> None:
    rule = next(r for r in _alerts() if r["alert"] == alert)
    names = metric_names(rule["expr"])
    assert names, f"{alert} selects no metric"
    assert names <= SERIES_NAMES, f"{alert} uses metrics rerund does not export: {names - SERIES_NAMES}"


def test_the_prometheusrule_is_generated_from_the_rules_file() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "sync.py"), "--check"], capture_output=True, text=True
    )
    stale = [line for line in proc.stderr.splitlines() if "prometheusrule" in line]
    assert not stale, "\n".join(stale)


def test_the_prometheusrule_groups_are_exactly_the_rules_files_groups() -> None:
    rule = yaml.safe_load((BASE / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_sync_check_names_the_stale_file_and_the_command(tmp_path: Path) -> None:
    """deploy/sync.py --check fails with a message that says what to run, on a copy of deploy/."""
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "deploy", copy / "deploy")
    shutil.copytree(REPO / "policies" / "library", copy / "policies" / "library")
    rules = copy / "deploy" / "prometheus" / "rules.yaml"
    rules.write_text(rules.read_text().replace("> 50", "> 60"))
    proc = subprocess.run(
        [sys.executable, str(copy / "deploy" / "sync.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "deploy/kubernetes/base/prometheusrule.yaml is out of date with deploy/prometheus/rules.yaml: "
        "run `python deploy/sync.py` and commit the result"
    )
    fixed = subprocess.run([sys.executable, str(copy / "deploy" / "sync.py")], capture_output=True, text=True)
    assert fixed.stdout.strip() == "wrote deploy/kubernetes/base/prometheusrule.yaml"
    again = subprocess.run(
        [sys.executable, str(copy / "deploy" / "sync.py"), "--check"], capture_output=True, text=True
    )
    assert again.returncode == 0
