"""Relaunch decisions: the task version and resources a relaunch uses, waiting for a fix, the cap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rerund.core.decide import decide, explain
from rerund.core.model import Defer, GiveUp, Rerun, Scope, WaitForVersion
from rerund.core.resources import ResourcesView, parse_quantity

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)

OOM = """
policies:
  - name: oom
    match: {error: {classes: [oom]}}
    retry:
      scope: relaunch
      max_attempts: 5
      backoff: {initial: 10s, factor: 1, max: 10s, jitter: 0}
      resources: {memory: 2x, max: {memory: 16Gi}}
"""

FIX = """
policies:
  - name: wait-for-fix
    match: {error: {codes: [ValueError]}}
    retry:
      scope: relaunch
      task_version: newer
      max_wait: 2h
      max_attempts: 1
      backoff: {initial: 10s, factor: 1, max: 10s, jitter: 0}
"""

OOM_ERROR = {"kind": "USER", "code": "OOMKilled", "message": "container killed: out of memory"}
BUG = {"kind": "USER", "code": "ValueError", "message": "ValueError: bad column"}
FOUR_GI = ResourcesView(requests={"memory": "4Gi", "cpu": "1"}, limits={"memory": "4Gi"})


def test_an_oom_is_relaunched_with_twice_the_memory_on_the_same_version(policies, make_failure):
    failure = make_failure(error=OOM_ERROR, task_version="v1", resources=FOUR_GI)
    d = decide(failure, policies(OOM), T0)
    assert isinstance(d, Rerun)
    assert d.scope == Scope.RELAUNCH
    assert d.name == "abc123-retry-1"
    assert d.relaunch is not None
    assert d.relaunch.version == "v1"
    assert d.relaunch.resources == ResourcesView(
        requests={"memory": "8Gi", "cpu": "1"}, limits={"memory": "8Gi"}
    )
    assert d.reason == (
        "policy 'oom' relaunches run 'abc123' as 'abc123-retry-1': attempt 1 of max_attempts=5, scope "
        "relaunch (task 'train.fit' version 'v1', task_version: same), due at 2026-11-24T10:00:10Z after a "
        "10s backoff; changes: task version: v1 (same), resources memory request 4Gi -> 8Gi, resources "
        "memory limit 4Gi -> 8Gi"
    )
    body = d.to_json()
    assert body["relaunch"] == {
        "task": "train.fit",
        "version": "v1",
        "task_version": "same",
        "resources": {"requests": {"memory": "8Gi", "cpu": "1"}, "limits": {"memory": "8Gi"}},
        "resource_changes": ["memory request 4Gi -> 8Gi", "memory limit 4Gi -> 8Gi"],
    }


def test_a_rerun_decision_has_no_relaunch_key(policies, make_failure):
    d = decide(make_failure(), policies("policies:\n  - name: any\n"), T0)
    assert "relaunch" not in d.to_json()


def test_escalation_is_capped_and_gives_up_at_the_cap(policies, make_failure):
    ps = policies(OOM)
    seen = []
    resources = FOUR_GI
    for attempt in range(5):
        failure = make_failure(
            run=f"r-{attempt}",
            root="r",
            attempt=attempt,
            error=OOM_ERROR,
            task_version="v1",
            resources=resources,
        )
        d = decide(failure, ps, T0)
        if not isinstance(d, Rerun):
            break
        assert d.relaunch is not None and d.relaunch.resources is not None
        resources = d.relaunch.resources
        seen.append(resources.requests["memory"])
    assert seen == ["8Gi", "16Gi"]
    assert isinstance(d, GiveUp)
    assert d.attempt == 3
    assert d.reason == (
        "policy 'oom' gives up on run 'r-2': a relaunch on the same task version 'v1' would get no more "
        "resources (memory request stays 16Gi: it is already at or above its max 16Gi; memory limit stays "
        "16Gi: it is already at or above its max 16Gi): it would fail the same way"
    )


def test_newer_waits_naming_the_task_and_the_failed_version(policies, make_failure):
    failure = make_failure(error=BUG, task_version="v1", latest_version="v1")
    d = decide(failure, policies(FIX), T0 + timedelta(minutes=5))
    assert isinstance(d, WaitForVersion)
    assert isinstance(d, Defer)
    assert d.budget == ""
    assert d.not_before == T0 + timedelta(hours=2)
    assert d.reason == (
        "policy 'wait-for-fix' waits for a fix of task 'train.fit': run 'abc123' failed on version 'v1'; "
        "relaunch 1 runs as 'abc123-retry-1' once a newer version is deployed (the daemon lists the task's "
        "versions at each resync), at the latest until 2026-11-24T12:00:00Z (max_wait=2h), then gives up"
    )
    assert d.to_json()["waiting_for"] == {"task": "train.fit", "failed_version": "v1"}


def test_newer_relaunches_on_the_newer_version_once_listed(policies, make_failure):
    failure = make_failure(error=BUG, task_version="v1", latest_version="v2")
    d = decide(failure, policies(FIX), T0 + timedelta(minutes=5))
    assert isinstance(d, Rerun)
    assert d.relaunch is not None
    assert d.relaunch.version == "v2"
    assert d.relaunch.resources is None  # as deployed with v2
    assert "task version: v1 -> v2" in d.reason


def test_newer_gives_up_when_max_wait_is_over(policies, make_failure):
    failure = make_failure(error=BUG, task_version="v1")
    d = decide(failure, policies(FIX), T0 + timedelta(hours=2))
    assert isinstance(d, GiveUp)
    assert d.reason == (
        "policy 'wait-for-fix' gives up on run 'abc123': no version of task 'train.fit' newer than 'v1' was "
        "deployed within max_wait=2h (until 2026-11-24T12:00:00Z)"
    )


@pytest.mark.parametrize(("latest", "version"), [(None, ""), ("v3", "v3")], ids=["not-listed", "listed"])
def test_latest_uses_the_listed_latest_or_lets_the_relaunch_resolve_it(
    policies, make_failure, latest, version
):
    ps = policies(
        """
        policies:
          - name: latest
            retry: {scope: relaunch, task_version: latest}
        """
    )
    d = decide(make_failure(task_version="v1", latest_version=latest), ps, T0)
    assert isinstance(d, Rerun) and d.relaunch is not None
    assert d.relaunch.version == version


def test_escalation_steps_change_resources_and_version(policies, make_failure):
    ps = policies(
        """
        policies:
          - name: oom
            retry:
              scope: relaunch
              max_attempts: 3
              resources: {memory: 2x}
              escalate:
                2: {resources: {memory: 32Gi, cpu: 2x}, task_version: latest}
        """
    )
    first = decide(make_failure(resources=FOUR_GI, task_version="v1"), ps, T0)
    second = decide(
        make_failure(attempt=1, root="r", resources=FOUR_GI, task_version="v1", latest_version="v2"), ps, T0
    )
    assert isinstance(first, Rerun) and first.relaunch and first.relaunch.resources
    assert isinstance(second, Rerun) and second.relaunch and second.relaunch.resources
    assert first.relaunch.resources.requests == {"memory": "8Gi", "cpu": "1"}
    assert second.relaunch.resources.requests == {"memory": "32Gi", "cpu": "2"}
    assert second.relaunch.version == "v2"


def test_explain_traces_the_version_and_resources(policies, make_failure):
    e = explain(make_failure(error=OOM_ERROR, task_version="v1", resources=FOUR_GI), policies(OOM), T0)
    assert "task_version: same: task 'train.fit' version the failed run's version 'v1'" in e.trace
    assert (
        "resources: memory 2x (max 16Gi) over the failed run's cpu 1, memory 4Gi (limit 4Gi) -> "
        "cpu 1, memory 8Gi (limit 8Gi)"
    ) in e.trace
    assert "resources memory request 4Gi -> 8Gi" in e.changes


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gib=st.integers(min_value=1, max_value=64), attempt=st.integers(min_value=0, max_value=4))
def test_a_relaunch_never_asks_for_less_than_the_source_nor_more_than_the_cap(
    policies, make_failure, gib, attempt
):
    ps = policies(OOM)
    source = ResourcesView(requests={"memory": f"{gib}Gi"}, limits={"memory": f"{gib}Gi"})
    d = decide(
        make_failure(attempt=attempt, root="r", error=OOM_ERROR, task_version="v1", resources=source), ps, T0
    )
    if isinstance(d, Rerun):
        assert d.relaunch is not None and d.relaunch.resources is not None
        new = parse_quantity(d.relaunch.resources.requests["memory"])
        assert parse_quantity(f"{gib}Gi") < new <= parse_quantity("16Gi")
    else:
        assert isinstance(d, GiveUp)
        assert gib >= 16 or attempt >= 5


def test_an_oom_of_a_task_whose_memory_is_not_a_quantity_gives_up_saying_why(policies, make_failure):
    failure = make_failure(
        error=OOM_ERROR,
        task_version="v1",
        resources=ResourcesView(requests={"memory": "4GB"}, limits={"memory": "4GB"}),
    )
    d = decide(failure, policies(OOM), T0)
    assert isinstance(d, GiveUp)
    assert d.reason == (
        "policy 'oom' gives up on run 'abc123': a relaunch on the same task version 'v1' would get no more "
        "resources (memory 2x cannot apply: the source's memory request '4GB' is not a Kubernetes quantity "
        "(e.g. 16Gi); memory is kept as deployed): it would fail the same way"
    )
