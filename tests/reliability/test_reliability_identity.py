"""Exactly once needs the right identity (issue 22): two chaos scenarios, each ending with the
oracle's 0 duplicates and 0 missed on the control plane's own runs.

(i) Colliding roots and squatted names. Long roots (``nightly-training-run-NNNNNN``) whose rerun
    names are held before the storm: by another lineage's vouched rerun (what a hash collision
    looks like), by a plain run someone named so, by a run forging the lineage labels under the
    name of the second attempt, and, for some, by a squatter on the first salted name too. Each
    lineage must still get every rerun it is owed, once, under its next free salted name.
(ii) Forged labels filling a budget. Before the storm, as many runs as the global budget allows
    reruns per hour are launched carrying ``rerund-root``, ``rerund-attempt`` and
    ``rerund-policy`` but no relation. They must fill nothing: every owed rerun is issued.

Both run short on ``union`` in ``make test`` and at full size on both sandbox profiles under
``make chaos`` (which writes their rows of the results table in ``bench/README.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from results_table import record

from daemon_support import DaemonProcess, daemons, settle, total
from rerund.core.names import rerun_name
from rerund.policy import load_policies
from rerund.sandbox.testing import SandboxHandle, start_sandbox
from storms import STORM_MIX, STORM_WORKLOAD, owed_reruns, storm_policies, write_policies

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

WORKLOAD: dict[str, Any] = {
    "tasks": {**STORM_WORKLOAD["tasks"], "plant.ok": {"duration": "0.1s", "behaviour": ["succeed"]}}
}
POLICY = "storm-transient"


def sizes(*, short: int, full: int) -> list[Any]:
    slow = [pytest.mark.slow, pytest.mark.timeout(900)]
    return [
        pytest.param("union", short, id=f"short-{short}-failures"),
        pytest.param("union", full, id=f"full-{full}-failures", marks=slow),
        pytest.param("oss", full, id=f"oss-full-{full}-failures", marks=slow),
    ]


def _scenario(name: str, profile: str) -> str:
    return name if profile == "union" else f"{name} (oss)"


def _tasks(failures: int) -> list[str]:
    """The storm mix (``storms.STORM_MIX``) as one task per failure, interleaved."""
    out: list[str] = []
    while len(out) < failures:
        for task, n in STORM_MIX:
            out += [task] * n
    return out[:failures]


def _plant_squatters(sb: SandboxHandle, roots: list[str]) -> set[str]:
    """Hold rerun names of ``roots`` before their runs exist; returns the planted runs' names."""
    planted: set[str] = set()

    def plant(name: str, **kw: Any) -> None:
        sb.launch("plant.ok", name=name, **kw)
        planted.add(name)

    for i, root in enumerate(roots):
        first = rerun_name(root=root, attempt=1)
        if i % 4 == 0:  # another lineage's vouched rerun holds the name: a hash collision
            other = f"other-{i:06d}"
            plant(other)
            labels = {"rerund-root": other, "rerund-attempt": "1", "rerund-policy": POLICY}
            plant(first, labels=labels, rerun_of=other)
        elif i % 4 == 1:  # a plain run someone named so
            plant(first)
        elif i % 4 == 2:  # a fresh run forging the lineage labels under the second attempt's name
            labels = {"rerund-root": root, "rerund-attempt": "2", "rerund-policy": POLICY}
            plant(rerun_name(root=root, attempt=2), labels=labels)
        if i % 8 == 1:  # and the first salted name of attempt 1 too
            plant(rerun_name(root=root, attempt=1, salt=1))
    return planted


@pytest.mark.parametrize(("profile", "failures"), sizes(short=40, full=2000))
def test_colliding_roots_and_squatted_names_still_get_every_rerun_once(
    profile: str, failures: int, tmp_path: Path
) -> None:
    policy_file = write_policies(tmp_path / "policies.yaml", storm_policies())
    policies = load_policies([policy_file])
    roots = [f"nightly-training-run-{i:06d}" for i in range(failures)]
    with start_sandbox(workload=WORKLOAD, time_scale=1.0, profile=profile) as sb:
        planted = _plant_squatters(sb, roots)
        sb.wait_idle(timeout=120)
        d = DaemonProcess(tmp_path / "d", sb, policy_file)
        with daemons(d):
            d.wait_ready()
            for root, task in zip(roots, _tasks(failures), strict=True):
                sb.launch(task, name=root)
            result = settle(sb, [d], policies, timeout=600, planted=frozenset(planted))
            conflicts = total(d.metrics(), "rerund_rerun_name_conflicts_total")
            forged = total(d.metrics(), "rerund_forged_lineage_labels_total")
    assert result.owed == owed_reruns(failures)
    assert result.exact(), result.problems()
    assert conflicts >= failures // 2  # every squatted first name, at least once
    assert forged >= failures // 4 // 2  # the forged second-attempt names that were looked at
    if failures >= 2000:
        record(_scenario("colliding roots + squatted names", profile), result.row())


@pytest.mark.parametrize(("profile", "failures"), sizes(short=40, full=2000))
def test_forged_lineage_labels_fill_no_budget(profile: str, failures: int, tmp_path: Path) -> None:
    budget = owed_reruns(failures)  # exactly what the storm owes: one forged run too many defers
    policy_file = write_policies(
        tmp_path / "policies.yaml", storm_policies(budget={"max_reruns": budget, "per": "1h"})
    )
    policies = load_policies([policy_file])
    with start_sandbox(workload=WORKLOAD, time_scale=1.0, profile=profile) as sb:
        planted: set[str] = set()
        for i in range(budget):  # anyone can launch runs carrying rerund's labels
            labels = {"rerund-root": f"victim{i}", "rerund-attempt": "1", "rerund-policy": POLICY}
            planted.update(sb.launch("plant.ok", labels=labels))
        sb.wait_idle(timeout=120)
        d = DaemonProcess(tmp_path / "d", sb, policy_file)
        with daemons(d):
            d.wait_ready()
            for task in _tasks(failures):
                sb.launch(task)
            result = settle(sb, [d], policies, timeout=600, planted=frozenset(planted))
            m = d.metrics()
    assert result.owed == budget
    assert result.exact(), result.problems()
    assert total(m, "rerund_budget_deferrals_total", budget="global") == 0
    assert total(m, "rerund_forged_lineage_labels_total") == budget
    if failures >= 2000:
        record(_scenario("forged labels filling a budget (as many as it allows)", profile), result.row())
