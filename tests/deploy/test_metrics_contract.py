"""The metric names deploy/ relies on are the ones the daemon registers, with the same types and
labels; and the PromQL name extraction the other deploy tests rely on is itself right."""

from __future__ import annotations

import pytest
from deploy_support import CONTRACT, Metric, metric_names
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase


def _daemon_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    from rerund.runtime.metrics import Metrics

    metrics = Metrics(registry=CollectorRegistry())
    out = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            family = value.describe()[0]
            name = family.name + "_total" if family.type == "counter" else family.name
            out[name] = (family.type, frozenset(value._labelnames))
    return out


DAEMON_CONTRACT = list(CONTRACT)  # the reproduction metrics (issue 5) included


@pytest.mark.parametrize("metric", DAEMON_CONTRACT, ids=[m.name for m in DAEMON_CONTRACT])
def test_the_daemon_registers_the_metric_with_its_type_and_labels(metric: Metric) -> None:
    registered = _daemon_metrics()
    assert metric.name in registered, f"the daemon does not register {metric.name}"
    assert registered[metric.name] == (metric.kind, metric.labels)


def test_the_daemon_registers_no_metric_the_contract_does_not_know() -> None:
    known = {m.name for m in CONTRACT}
    assert set(_daemon_metrics()) <= known


def test_the_daemons_declared_names_are_the_contract() -> None:
    from rerund.runtime.metrics import METRIC_NAMES

    assert set(METRIC_NAMES) == {m.name for m in DAEMON_CONTRACT}


EXPRESSIONS = {
    "plain selector": ("rerund_policies_loaded", {"rerund_policies_loaded"}),
    "function and range": ("rate(rerund_decisions_total[5m])", {"rerund_decisions_total"}),
    "aggregation with by before": (
        'sum by (policy) (increase(rerund_reruns_issued_total{x="y"}[10m])) > 50',
        {"rerund_reruns_issued_total"},
    ),
    "aggregation with by after": (
        "sum(rate(a_total[1m])) by (le) / on (le) group_left () max(b)",
        {"a_total", "b"},
    ),
    "label values that look like names": ('x{policy="sum", code=~"rate|up"}', {"x"}),
    "numbers and time": ("time() - last_sync_seconds > 3e2", {"last_sync_seconds"}),
    "grafana variable in range": ("rate(y_bucket[$__rate_interval])", {"y_bucket"}),
    "set operators": ("a == 0 and on (check, instance) b unless c", {"a", "b", "c"}),
}


@pytest.mark.parametrize(("expr", "names"), EXPRESSIONS.values(), ids=list(EXPRESSIONS))
def test_metric_names_finds_exactly_the_selected_metrics(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
