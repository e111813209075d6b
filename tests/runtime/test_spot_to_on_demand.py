"""End to end: spot -> on-demand. The real ``rerund run`` daemon with the library's
spot-preemption policy (policies/library/preemption.yaml, backoff shortened) against the sandbox
running the demo's spot task (policies/demo/workload.yaml): preempted while interruptible, it is
recovered on spot once (preempted again), then rerun on the on-demand queue with interruptible
false, where it succeeds. The reruns' RunSpecs are read back with the real flyte SDK, and the
daemon's decision lines say what each rerun changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon_support import DaemonProcess, daemons, wait_until
from rerund.sandbox.testing import flyte_init, start_sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]


def _workload() -> dict[str, Any]:
    demo = yaml.safe_load((REPO / "policies" / "demo" / "workload.yaml").read_text())
    [spot_run] = [r for r in demo["runs"] if r["task"] == "train.spot"]
    return {"tasks": {"train.spot": demo["tasks"]["train.spot"]}, "runs": [spot_run]}


def _policies(tmp_path: Path) -> Path:
    doc = yaml.safe_load((REPO / "policies" / "library" / "preemption.yaml").read_text())
    doc["policies"][0]["retry"]["backoff"] = {"initial": "200ms", "factor": 2, "max": "1s", "jitter": 0}
    path = tmp_path / "preemption.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_a_preempted_spot_run_is_recovered_on_spot_then_moved_to_on_demand(tmp_path: Path) -> None:
    import flyte.remote
    from flyteidl2.common import run_pb2 as common_run_pb2

    with start_sandbox(_workload(), time_scale=0.05) as sb:
        d = DaemonProcess(tmp_path / "d", sb, _policies(tmp_path))
        with daemons(d):
            d.wait_ready()

            def on_demand_succeeded() -> bool:
                return any(
                    r["labels"].get("rerund-attempt") == "2" and r["phase"] == "SUCCEEDED" for r in sb.runs()
                )

            wait_until("the on-demand rerun to succeed", on_demand_succeeded, 120, d.logs)
            logs = d.logs(10**7)

        runs = {r["name"]: r for r in sb.runs()}
        [source] = [n for n, r in runs.items() if "rerund-root" not in r["labels"]]
        first, second = f"{source}-retry-1", f"{source}-retry-2"
        assert set(runs) == {source, first, second}
        assert [runs[n]["phase"] for n in (source, first, second)] == ["FAILED", "FAILED", "SUCCEEDED"]
        assert runs[first]["error"]["code"] == "Interrupted"  # still on spot: preempted again

        flyte_init(sb)
        spec = {n: flyte.remote.RunDetails.get(name=n).pb2.run_spec for n in (source, first, second)}
        for name in (first, second):
            s = spec[name]
            assert s.relation.relation_type == common_run_pb2.RELATION_TYPE_RECOVER
            # the source's values are kept: log pipeline, labels, cache scope
            assert {kv.key: kv.value for kv in s.envs.values} == {
                kv.key: kv.value for kv in spec[source].envs.values
            }
            assert s.cache_config.cache_lookup_scope == spec[source].cache_config.cache_lookup_scope
            assert s.labels.values["team"] == "ml"
        assert (spec[first].queue, spec[first].interruptible.value) == ("spot-pool", True)
        assert (spec[second].queue, spec[second].interruptible.value) == ("ondemand-pool", False)
        assert dict(spec[second].annotations.values) == {"rerund/capacity": "on-demand"}
        assert spec[second].relation.related_to.name == first

        decisions = [line for line in logs.splitlines() if " rerun   " in line]
        assert any(
            f"reruns run {source!r} as {first!r}" in line
            and line.endswith("changes: none besides the lineage labels")
            for line in decisions
        ), decisions
        moved = (
            "changes: annotations rerund/capacity: added 'on-demand', "
            "queue: 'spot-pool' -> 'ondemand-pool', interruptible: true -> false"
        )
        assert any(f"reruns run {first!r} as {second!r}" in line and moved in line for line in decisions), (
            decisions
        )
