"""The rerun invariant against the sandbox, read back with the real flyte SDK and CLI.

A rerun's RunSpec must be the source's, plus the policy's env / labels / annotations /
overrides, plus rerund's lineage labels and the relation — nothing else (``rerund.core.runspec``).
Every test here reads both RunSpecs back through ``flyte.remote.RunDetails.get`` (or the
``flyte`` CLI) and compares them field by field, for every scope.
"""

from __future__ import annotations

import ast
import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapter_support import rpc_delta
from rerund.adapters.flyte.control_plane import FlyteControlPlane
from rerund.adapters.flyte.convert import spec_view
from rerund.cli.sandbox import flyte_cli_config
from rerund.core.model import GpuFault, RunOverrides
from rerund.core.runs import RerunRequest, RunRef
from rerund.core.runspec import SDK_ENV_KEYS, expected_rerun_spec
from rerund.sandbox.testing import SandboxHandle, start_sandbox

pytestmark = pytest.mark.e2e

WORKLOAD = {
    "tasks": {
        "etl.pipeline": {"children": ["etl.extract", "etl.load"]},
        "etl.extract": {"behaviour": ["succeed"]},
        "etl.load": {
            "behaviour": ["fail", "succeed"],
            "error": {"kind": "USER", "code": "ValueError", "message": "ValueError: bad row 17"},
        },
        "train.gpu": {
            "behaviour": ["fail"],
            "error": {
                "kind": "SYSTEM",
                "code": "GpuFallenOffBus",
                "message": "Xid 79: GPU has fallen off the bus",
                "gpu_fault": {
                    "kind": "XID",
                    "code": 79,
                    "name": "GPU_FALLEN_OFF_BUS",
                    "severity": "CRITICAL",
                },
            },
        },
    },
    # No task declares `lr`: the run below gives it, so the interface must cover it.
    "runs": [],
}

# A source run as a user launches it on spot capacity with a JSON log pipeline.
SOURCE = {
    "env": {"LOG_LEVEL": "10", "LOG_FORMAT": "json", "USER_LOG_LEVEL": "10", "APP_MODE": "train"},
    "labels": {"team": "ml"},
    "annotations": {"owner": "ml-platform"},
    "queue": "spot-pool",
    "interruptible": True,
    "cache_lookup_scope": "project-domain",
    "service_account": "trainer",
    "max_action_concurrency": 4,
}
LINEAGE = {"rerund-root": "", "rerund-attempt": "1", "rerund-policy": "spot"}
ON_DEMAND = RunOverrides(
    queue="ondemand-pool",
    interruptible=False,
    service_account="trainer-ondemand",
    overwrite_cache=True,
    annotations={"rerund/reason": "preempted"},
    max_action_concurrency=8,
)
SCOPES = {
    "run": {"action": "a0", "recover": False},
    "failed_action": {"action": "a2", "recover": False},
    "recover": {"action": "a0", "recover": True},
}
# RunSpec fields the invariant speaks of; every other field must be the source's, byte for byte.
VIEW_FIELDS = {
    "labels",
    "annotations",
    "envs",
    "interruptible",
    "overwrite_cache",
    "queue",
    "security_context",
    "cache_config",
    "max_action_concurrency",
}


@pytest.fixture(scope="module")
def sb() -> Iterator[SandboxHandle]:
    with start_sandbox(WORKLOAD, time_scale=0.01) as handle:
        yield handle


@pytest.fixture(scope="module")
def cp(sb: SandboxHandle) -> FlyteControlPlane:
    plane = FlyteControlPlane(endpoint=sb.endpoint, org=sb.org, insecure=True, rpc_timeout=10)
    asyncio.run(plane.connect())
    return plane


def _sdk_run_spec(sb: SandboxHandle, name: str) -> Any:
    """The RunSpec of ``name`` as the real SDK reads it (``flyte.remote.RunDetails.get``)."""
    import flyte.remote
    from flyte._initialize import get_init_config, init_config_context

    with init_config_context(get_init_config().replace(project=sb.project, domain=sb.domain)):
        return flyte.remote.RunDetails.get(name=name).pb2.run_spec


def _envs(spec: Any) -> dict[str, str]:
    return {kv.key: kv.value for kv in spec.envs.values}


def _launch_source(sb: SandboxHandle, spec: dict[str, Any]) -> str:
    [name] = sb.launch("etl.pipeline", spec=spec, inputs={"lr": 0.1})
    sb.wait_idle()
    return name


@pytest.mark.parametrize("read_first", [False, True], ids=["spec-given", "after-read-failure"])
@pytest.mark.parametrize("overrides", [RunOverrides(), ON_DEMAND], ids=["no-overrides", "spot-to-on-demand"])
@pytest.mark.parametrize("scope", list(SCOPES))
def test_a_rerun_spec_is_the_source_spec_changed_only_by_the_policy(
    sb: SandboxHandle, cp: FlyteControlPlane, scope: str, overrides: RunOverrides, read_first: bool
) -> None:
    # after-read-failure: the daemon's order (read, decide, rerun), where the SDK's reads of the
    # source are answered with read_failure's (_ReuseReads); the rerun must be the same.
    source_name = _launch_source(sb, SOURCE)
    source_spec = None
    if read_first:
        facts = asyncio.run(
            cp.read_failure(asyncio.run(cp.get_run(RunRef(sb.project, sb.domain, source_name))))
        )
        assert facts.action == "a2"
        source_spec = facts.spec
    labels = {**LINEAGE, "rerund-root": source_name, "rerun-reason": "spot"}
    env = {"RETRY": "1", "LOG_LEVEL": "20"} if overrides == ON_DEMAND else {}
    force = ("a1",) if scope == "recover" and overrides == ON_DEMAND else ()
    request = RerunRequest(
        source=RunRef(sb.project, sb.domain, source_name),
        name=f"{source_name}-{scope[:4]}",
        env=env,
        labels=labels,
        overrides=overrides.model_copy(update={"force_rerun_actions": force}),
        source_spec=source_spec,
        **SCOPES[scope],  # type: ignore[arg-type]
    )

    before = sb.request_counts()
    ref = asyncio.run(cp.create_rerun(request))
    served = rpc_delta(sb, before)
    source, rerun = _sdk_run_spec(sb, source_name), _sdk_run_spec(sb, ref.name)

    # The source is read once (read_spec when no spec is given): the SDK's rerun path reuses it,
    # and read_failure's when that came first (GetActionDetails of a2 too).
    assert served.get("GetRunDetails", 0) == (0 if read_first else 1)
    assert served.get("GetActionDetails", 0) == (1 if scope == "failed_action" and not read_first else 0)
    assert served["CreateRun"] == 1
    # The invariant as the core states it ...
    assert spec_view(rerun) == expected_rerun_spec(
        spec_view(source), env=env, labels=labels, overrides=request.overrides
    )
    # ... and field by field on the protos, every RunSpec field accounted for.
    for field in type(source).DESCRIPTOR.fields:
        name = field.name
        if name in VIEW_FIELDS or name in ("relation", "recover"):
            continue
        assert getattr(rerun, name) == getattr(source, name), f"RunSpec.{name} changed"
    assert _envs(rerun) == {**_envs(source), **env}
    assert _envs(rerun)["LOG_FORMAT"] == "json" and _envs(rerun)["USER_LOG_LEVEL"] == "10"
    assert "_F_SYS_PATH" not in _envs(rerun)
    assert dict(rerun.labels.values) == {**dict(source.labels.values), **labels}
    assert dict(rerun.annotations.values) == {**dict(source.annotations.values), **overrides.annotations}
    assert rerun.cache_config.cache_lookup_scope == source.cache_config.cache_lookup_scope
    if overrides == ON_DEMAND:
        assert (rerun.queue, rerun.interruptible.value) == ("ondemand-pool", False)
        assert rerun.security_context.run_as.k8s_service_account == "trainer-ondemand"
        assert rerun.overwrite_cache and rerun.cache_config.overwrite_cache
        assert rerun.max_action_concurrency == 8
    else:
        for name in ("queue", "interruptible", "security_context", "cache_config", "overwrite_cache"):
            assert getattr(rerun, name) == getattr(source, name), f"RunSpec.{name} changed"
        assert rerun.max_action_concurrency == source.max_action_concurrency == 4
    from flyteidl2.common import run_pb2 as common_run_pb2

    kind = common_run_pb2.RELATION_TYPE_RECOVER if scope == "recover" else common_run_pb2.RELATION_TYPE_RERUN
    assert rerun.relation.related_to.name == source_name and rerun.relation.relation_type == kind
    assert list(rerun.recover.force_rerun_actions) == list(force)


def test_the_sdk_alone_would_overwrite_the_log_settings_and_the_cache_scope(
    sb: SandboxHandle, cp: Any
) -> None:
    """Why the adapter passes the source's values through: the plain SDK rerun path does not
    keep them (flyte 2.12.1 ``_build_env_dict`` / ``_apply_overrides``)."""
    import flyte
    from flyte._initialize import get_init_config, init_config_context

    source_name = _launch_source(sb, SOURCE)
    with init_config_context(get_init_config().replace(project=sb.project, domain=sb.domain)):
        flyte.with_runcontext(name=f"{source_name}-sdk").rerun(source_name)
    source, rerun = _sdk_run_spec(sb, source_name), _sdk_run_spec(sb, f"{source_name}-sdk")

    assert _envs(rerun)["LOG_FORMAT"] == "console" != _envs(source)["LOG_FORMAT"]
    assert rerun.cache_config.cache_lookup_scope != source.cache_config.cache_lookup_scope


def test_a_source_without_log_settings_gets_only_the_keys_the_sdk_always_sets(
    sb: SandboxHandle, cp: FlyteControlPlane
) -> None:
    # A run not launched by the flyte SDK (the sandbox's admin launch): no log settings at all.
    [source_name] = sb.launch("etl.pipeline", envs={"APP_MODE": "train"})
    sb.wait_idle()
    request = RerunRequest(source=RunRef(sb.project, sb.domain, source_name), name=f"{source_name}-bare")

    ref = asyncio.run(cp.create_rerun(request))
    source, rerun = _sdk_run_spec(sb, source_name), _sdk_run_spec(sb, ref.name)

    added = set(_envs(rerun)) - set(_envs(source))
    assert added == set(SDK_ENV_KEYS)
    assert _envs(rerun)["APP_MODE"] == "train"


def test_read_failure_carries_the_spec_and_the_gpu_fault(sb: SandboxHandle, cp: FlyteControlPlane) -> None:
    [name] = sb.launch("train.gpu", spec={"queue": "gpu-a", "interruptible": False})
    sb.wait_idle()
    summary = asyncio.run(cp.get_run(RunRef(sb.project, sb.domain, name)))

    facts = asyncio.run(cp.read_failure(summary))

    assert facts.error.code == "GpuFallenOffBus"
    assert facts.error.gpu_fault == GpuFault(
        kind="XID", code=79, name="GPU_FALLEN_OFF_BUS", severity="CRITICAL"
    )
    assert facts.spec is not None
    assert (facts.spec.queue, facts.spec.interruptible) == ("gpu-a", False)


def test_a_run_given_inputs_its_task_does_not_declare_can_be_rerun_with_new_inputs(
    sb: SandboxHandle, cp: FlyteControlPlane
) -> None:
    source_name = _launch_source(sb, {})
    request = RerunRequest(
        source=RunRef(sb.project, sb.domain, source_name), name=f"{source_name}-lr", inputs={"lr": 0.2}
    )

    ref = asyncio.run(cp.create_rerun(request))

    assert sb.wait_for(ref.name)["inputs"] == {"lr": 0.2}


def test_the_flyte_cli_reads_the_rerun_spec_the_policy_changed(
    sb: SandboxHandle, cp: FlyteControlPlane, tmp_path: Path
) -> None:
    source_name = _launch_source(sb, SOURCE)
    ref = asyncio.run(
        cp.create_rerun(
            RerunRequest(
                source=RunRef(sb.project, sb.domain, source_name),
                name=f"{source_name}-cli",
                labels={**LINEAGE, "rerund-root": source_name},
                overrides=RunOverrides(queue="ondemand-pool", interruptible=False),
            )
        )
    )
    config = tmp_path / "flyte.yaml"
    config.write_text(flyte_cli_config(sb.endpoint, org=sb.org, project=sb.project, domain=sb.domain))
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("flyte")),
            "--config",
            str(config),
            "-of",
            "json",
            "get",
            "run",
            ref.name,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "250", "TERM": "dumb"},
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr

    [shown] = ast.literal_eval(proc.stdout.strip())
    spec = shown["runSpec"]
    assert spec["queue"] == "ondemand-pool"
    assert spec.get("interruptible", False) is False
    assert spec["cacheConfig"]["cacheLookupScope"] == "CACHE_LOOKUP_SCOPE_PROJECT_DOMAIN"
    assert spec["securityContext"]["runAs"]["k8sServiceAccount"] == "trainer"
    assert {e["key"]: e["value"] for e in spec["envs"]["values"]}["LOG_FORMAT"] == "json"
    assert spec["relation"]["relatedTo"]["name"] == source_name
