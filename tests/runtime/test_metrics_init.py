"""Counters of the policies in force start at 0 (issue 11.10): a series that first appears at 1
hides its first event from increase() and rate()."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from rerund.runtime.metrics import Metrics

SERIES = [
    ("rerund_reruns_issued_total", {"policy": "oom", "scope": scope})
    for scope in ("run", "failed_action", "recover")
] + [
    ("rerund_decisions_total", {"policy": "oom", "decision": kind})
    for kind in ("rerun", "give_up", "ignore", "defer")
]


@pytest.mark.parametrize(("name", "labels"), SERIES, ids=[f"{n}{sorted(lb.values())}" for n, lb in SERIES])
def test_the_series_of_a_policy_in_force_exist_at_zero_before_any_event(name, labels):
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    assert registry.get_sample_value(name, labels) is None

    metrics.init_policies(["oom"])

    assert registry.get_sample_value(name, labels) == 0.0
