"""The flyte-SDK adapter against the sandbox's ``oss`` profile (open-source Flyte 2): it finds
out that label filters are refused, finds reruns and reference runs by reading labels, looks
before creating, reports late error details and runs aborted after they finished, and turns an
INTERNAL that repeats for one request into a permanent error — each with its RPC cost."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from flyteidl2.common import identifier_pb2, list_pb2
from flyteidl2.workflow import run_service_pb2 as rs
from flyteidl2.workflow.run_service_connect import RunServiceClientSync

from adapter_support import NET_FLAKY
from adapter_support import connected as _cp
from adapter_support import rpc_delta as _delta
from rerund.adapters.flyte.control_plane import FlyteControlPlane
from rerund.core.runs import RelaunchRequest, RerunRequest, RunRef
from rerund.errors import (
    AlreadyExistsError,
    ConfigError,
    ControlPlaneError,
    NotFoundError,
    PermanentControlPlaneError,
    TransientControlPlaneError,
)
from rerund.sandbox.profiles import OSS
from rerund.sandbox.testing import SandboxHandle, start_sandbox

pytestmark = pytest.mark.e2e

WORKLOAD = {
    "tasks": {
        "net.flaky": NET_FLAKY,
        "ok": {"behaviour": ["succeed"], "duration": "0.1s"},
        "etl.pipeline": {"children": ["ok", "net.flaky"]},
    }
}
LABELS = {"rerund-root": "r", "rerund-attempt": "1", "rerund-policy": "p"}


@pytest.fixture(scope="module")
def sb() -> Iterator[SandboxHandle]:
    with start_sandbox(WORKLOAD, time_scale=0.5, profile=OSS.with_error_delay(0)) as handle:
        yield handle


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _since() -> datetime:
    return datetime.now(UTC) - timedelta(minutes=5)


def test_auto_finds_oss_and_lists_reruns_by_reading_each_runs_labels_once(sb: SandboxHandle) -> None:
    cp = _cp(sb)
    sb.launch("ok", count=3)
    [rerun] = sb.launch("ok", labels=LABELS)
    [repro] = sb.launch("ok", labels={**LABELS, "rerund-repro": "check"})
    sb.wait_idle()
    runs_in_window = len(sb.runs())
    before = sb.request_counts()

    listed = _run(cp.list_reruns(sb.project, sb.domain, since=_since()))
    first = _delta(sb, before)
    before = sb.request_counts()
    again = _run(cp.list_reruns(sb.project, sb.domain, since=_since(), policy="p"))

    assert cp.backend == "oss"
    assert rerun in {r.ref.name for r in listed}
    assert repro not in {r.ref.name for r in listed}  # a reproduction rerun is not a rerun
    assert all(r.labels["rerund-policy"] == "p" for r in listed)
    assert {r.ref.name for r in again} == {r.ref.name for r in listed}
    # discovery (one refused label listing) + one listing, and one GetRunDetails per run once
    assert first == {"ListRuns": 2, "GetRunDetails": runs_in_window}
    assert _delta(sb, before) == {"ListRuns": 1}


def test_backend_oss_sends_no_label_filter_at_all(sb: SandboxHandle) -> None:
    cp = _cp(sb, backend="oss")
    before = sb.request_counts()

    _run(cp.list_reruns(sb.project, sb.domain, since=datetime.now(UTC) + timedelta(minutes=1)))

    assert cp.backend == "oss"
    assert _delta(sb, before) == {"ListRuns": 1}


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(
        ConfigError, match="backend 'flyte1' is not one of auto, union, oss; set backend: auto"
    ):
        FlyteControlPlane(endpoint="http://127.0.0.1:1", org="o", insecure=True, backend="flyte1")


def test_create_rerun_looks_first_and_reports_an_existing_name_as_already_exists(sb: SandboxHandle) -> None:
    cp = _cp(sb, backend="oss")
    [name] = sb.launch("net.flaky")
    sb.wait_idle()
    request = RerunRequest(source=RunRef(sb.project, sb.domain, name), name=f"{name[:10]}-retry-1")
    before = sb.request_counts()
    _run(cp.create_rerun(request))
    created = _delta(sb, before)

    with pytest.raises(AlreadyExistsError, match=r"already exists \(found before creating it") as info:
        _run(cp.create_rerun(request))

    assert info.value.code == "already_exists"
    # the look before, the source's read (open-source Flyte does not check a rerun's source),
    # the source's RunSpec (no source_spec given; the SDK's own read of the source is answered
    # with it), the check after; the look again right before the CreateRun is a ListRuns
    assert created["GetRunDetails"] == 4
    assert created["ListRuns"] == 2  # the look before (on run_name) and the look again
    assert created["CreateRun"] == 1
    assert len([r for r in sb.runs() if r["name"] == request.name]) == 1


def test_find_latest_run_with_labels_reads_the_candidates_labels(sb: SandboxHandle) -> None:
    cp = _cp(sb, backend="oss")
    [wanted] = sb.launch("ok", labels={"team": "ml"})
    sb.launch("ok", count=2, labels={"team": "other"})
    sb.wait_idle()

    found = _run(cp.find_latest_run(sb.project, sb.domain, task="ok", labels={"team": "ml"}))
    none = _run(cp.find_latest_run(sb.project, sb.domain, task="ok", labels={"team": "nobody"}))

    assert found is not None and found.ref.name == wanted and found.labels["team"] == "ml"
    assert none is None


def test_a_failed_run_without_error_details_yet_is_reported_pending(sandbox_factory: Any) -> None:
    late = sandbox_factory(workload=WORKLOAD, time_scale=0.5, profile=OSS.with_error_delay(3600))
    cp = _cp(late)
    [name] = late.launch("net.flaky")
    late.wait_idle()
    [summary] = _run(cp.list_failed(late.project, late.domain, since=_since()))

    facts = _run(cp.read_failure(summary))

    assert summary.ref.name == name
    assert facts.error_pending
    assert facts.error.code == ""


def test_a_failed_run_with_its_error_details_is_not_pending(sb: SandboxHandle) -> None:
    cp = _cp(sb)
    [name] = sb.launch("etl.pipeline")
    sb.wait_idle()
    [summary] = [r for r in _run(cp.list_failed(sb.project, sb.domain, since=_since())) if r.ref.name == name]

    facts = _run(cp.read_failure(summary))

    assert not facts.error_pending
    assert (facts.action, facts.error.code) == ("a2", "")  # open-source Flyte serves no code
    assert facts.error.message == "connection reset by peer"


def test_a_run_aborted_after_it_succeeded_is_reported_with_its_finished_phase(sb: SandboxHandle) -> None:
    cp = _cp(sb)
    [name] = sb.launch("ok")
    sb.wait_idle()
    with RunServiceClientSync(sb.endpoint) as client:
        client.abort_run(
            rs.AbortRunRequest(
                run_id=identifier_pb2.RunIdentifier(
                    org=sb.org, project=sb.project, domain=sb.domain, name=name
                )
            )
        )
    [summary] = [r for r in _run(cp.list_failed(sb.project, sb.domain, since=_since())) if r.ref.name == name]

    facts = _run(cp.read_failure(summary))

    assert summary.phase == "ABORTED"
    assert facts.finished_phase == "SUCCEEDED"


def test_an_internal_answer_repeating_for_one_request_becomes_permanent(sb: SandboxHandle) -> None:
    cp = _cp(sb)
    single_value_in = list_pb2.Filter(function=list_pb2.Filter.VALUE_IN, field="phase", values=["6"])
    with RunServiceClientSync(sb.endpoint) as client, pytest.raises(ConnectError) as raw:
        client.list_runs(
            rs.ListRunsRequest(
                request=list_pb2.ListRequest(filters=[single_value_in]),
                project_id=identifier_pb2.ProjectIdentifier(
                    organization=sb.org, name=sb.project, domain=sb.domain
                ),
            )
        )
    assert raw.value.code == Code.INTERNAL

    errors = []
    for _ in range(3):
        try:
            _run(cp._latest(sb.project, sb.domain, [single_value_in], limit=1))
        except (TransientControlPlaneError, PermanentControlPlaneError) as exc:
            errors.append(exc)

    assert [type(e).__name__ for e in errors] == [
        "TransientControlPlaneError",
        "TransientControlPlaneError",
        "PermanentControlPlaneError",
    ]
    assert "answered INTERNAL 3 times in a row for the same request" in str(errors[-1])
    assert "treats it as permanent and stops retrying it" in str(errors[-1])
    assert errors[-1].code == "internal_repeated"


def test_find_latest_run_sends_a_phase_filter_the_oss_database_takes(sb: SandboxHandle) -> None:
    cp = _cp(sb, backend="oss")
    [name] = sb.launch("ok")
    sb.wait_idle()

    found = _run(cp.find_latest_run(sb.project, sb.domain, task="ok", phase="SUCCEEDED"))

    assert found is not None and found.ref.name == name


def test_auto_on_union_keeps_label_filters_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with start_sandbox(WORKLOAD, time_scale=0.5) as union:
        cp = _cp(union)
        before = union.request_counts()

        with caplog.at_level("INFO", logger="rerund.flyte"):
            _run(cp.list_reruns(union.project, union.domain, since=_since()))

        assert cp.backend == "union"
        assert _delta(union, before) == {"ListRuns": 1}
    assert (
        "the control plane takes label filters (Union); set backend: union to skip this discovery"
        in caplog.text
    )


class _LookLandsTooEarly(FlyteControlPlane):
    """The race of two replicas, made deterministic: the look before creating misses the run
    another replica creates right after it (that replica's create is the first one below)."""

    async def run_details_answer(self, ref: RunRef, *, confirm_absent: bool = True) -> Any:
        if confirm_absent:  # only the look before creating (which confirms by itself) misses it
            return await super().run_details_answer(ref, confirm_absent=confirm_absent)
        raise NotFoundError(f"run {ref} not found (yet)", rpc="GetRunDetails", code="not_found")

    async def _list_page(self, project: str, domain: str, filters: list[Any], **kw: Any) -> Any:
        if any(f.field == "run_name" for f in filters):  # the confirming listing misses it too
            return rs.ListRunsResponse()
        return await super()._list_page(project, domain, filters, **kw)


class _BothLooksLandTooEarly(_LookLandsTooEarly):
    """The other replica's create lands after the last look too (right before our CreateRun)."""

    def looking_again(self, ref: RunRef) -> AbstractContextManager[None]:
        return nullcontext()


@pytest.mark.parametrize("tuned", [True, False], ids=["tuned", "plain_sdk"])
@pytest.mark.parametrize("kind", ["rerun", "relaunch"])
def test_a_run_another_replica_created_and_finished_after_the_look_is_not_run_again(
    sb: SandboxHandle, kind: str, tuned: bool
) -> None:
    # Two replicas decide one failure at the same moment; the storm (test_reliability_storms,
    # oss 2 replicas) showed the look before creating coming ~0.3 s before the CreateRun (the
    # SDK's SelectCluster, GetActionData, UploadInputs under load), long enough for the other
    # replica's run to be created and to fail: open-source Flyte then ran it again.
    [name] = sb.launch("net.flaky")
    sb.wait_idle()
    src = RunRef(sb.project, sb.domain, name)
    request: RerunRequest | RelaunchRequest
    if kind == "rerun":
        request = RerunRequest(source=src, name=f"{name[:10]}-again-1")
    else:
        request = RelaunchRequest(source=src, name=f"{name[:10]}-again-2", task="net.flaky")
    other = _cp(sb, backend="oss")
    _run(other.create_rerun(request) if isinstance(request, RerunRequest) else other.create_relaunch(request))
    sb.wait_idle()  # the other replica's run has run and finished
    [finished] = [r for r in sb.runs() if r["name"] == request.name]
    late = _LookLandsTooEarly(
        endpoint=sb.endpoint, org=sb.org, insecure=True, rpc_timeout=10, backend="oss", sdk_tuning=tuned
    )
    _run(late.connect())
    assert late.tuned is tuned  # plain: no interceptor, the look again is rerund's own read
    before = sb.stats()["reexecutions"]

    with pytest.raises(AlreadyExistsError, match=r"already exists \(found just before creating it") as info:
        if isinstance(request, RerunRequest):
            _run(late.create_rerun(request))
        else:
            _run(late.create_relaunch(request))

    assert info.value.code == "already_exists"
    assert sb.stats()["reexecutions"] == before  # no CreateRun of that name went out
    [now] = [r for r in sb.runs() if r["name"] == request.name]
    assert (now["phase"], now["updated_at"]) == (finished["phase"], finished["updated_at"])


def test_a_create_answered_with_another_replicas_run_is_already_exists(sb: SandboxHandle) -> None:
    [name] = sb.launch("net.flaky")
    sb.wait_idle()
    request = RerunRequest(source=RunRef(sb.project, sb.domain, name), name=f"{name[:10]}-race-1")
    _run(_cp(sb, backend="oss").create_rerun(request))  # the other replica wins
    late = _BothLooksLandTooEarly(
        endpoint=sb.endpoint, org=sb.org, insecure=True, rpc_timeout=10, backend="oss"
    )
    _run(late.connect())

    with pytest.raises(AlreadyExistsError, match="was created by another process at the same moment") as info:
        _run(late.create_rerun(request))

    assert info.value.code == "already_exists"
    assert len([r for r in sb.runs() if r["name"] == request.name]) == 1


# -- a database error answers NOT_FOUND: absence is confirmed before creating ------------------------

STORM = 40  # creates of names that exist, under db_errors 0.3


def _creates_of_existing_names(sb: SandboxHandle, n: int, backend: str = "oss") -> Counter[str]:
    """``n`` creates (reruns and relaunches, alternating) of names that exist, under
    ``db_errors: 0.3``; what each ended in, by error class."""
    cp = _cp(sb, backend=backend)
    [name] = sb.launch("net.flaky")
    sb.wait_idle()
    src = RunRef(sb.project, sb.domain, name)
    rerun = RerunRequest(source=src, name=f"{name[:10]}-retry-1")
    relaunch = RelaunchRequest(source=src, name=f"{name[:10]}-retry-2", task="net.flaky")
    _run(cp.create_rerun(rerun))
    _run(cp.create_relaunch(relaunch))
    sb.wait_idle()
    sb.set_faults(db_errors=0.3)
    outcomes: Counter[str] = Counter()

    async def storm() -> None:
        for i in range(n):
            try:
                if i % 2:
                    await cp.create_relaunch(relaunch)
                else:
                    await cp.create_rerun(rerun)
            except ControlPlaneError as exc:
                outcomes[type(exc).__name__] += 1
            else:
                outcomes["created"] += 1

    try:
        _run(storm())
    finally:
        sb.set_faults(db_errors=0.0)
    return outcomes


def test_under_database_errors_a_name_that_exists_is_never_created_again(sandbox_factory: Any) -> None:
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.5, profile=OSS.with_error_delay(0))

    outcomes = _creates_of_existing_names(sb, STORM)

    assert sb.stats()["reexecutions"] == 0, outcomes
    assert outcomes["created"] == 0 and outcomes["AlreadyExistsError"] > 0, outcomes
    assert set(outcomes) <= {"AlreadyExistsError", "TransientControlPlaneError"}, outcomes
    assert sb.stats()["requests"].get("GetRunDetailsDbError", 0) > 0  # the fault did bite


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("profile", ["union", "oss"])
def test_a_storm_of_1000_creates_under_database_errors_runs_nothing_again(
    profile: str, sandbox_factory: Any
) -> None:
    chosen = OSS.with_error_delay(0) if profile == "oss" else profile
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.5, profile=chosen)

    outcomes = _creates_of_existing_names(sb, 1000, backend=profile)

    assert sb.stats()["reexecutions"] == 0, outcomes
    assert outcomes["created"] == 0, outcomes


def test_every_create_in_the_adapter_looks_first_on_oss() -> None:
    """Every path that creates a run (the loop's reruns and relaunches, sweep, repro) goes
    through the ControlPlane port's ``create_rerun`` / ``create_relaunch``; this holds the
    adapter package to looking before each SDK create, so a new create path cannot forget it
    (the storm test above shows what forgetting costs: the run executes again): the SDK's
    creates are made in ``_create_rerun`` / ``_create_relaunch`` only, those are reached only
    through ``_create``, which on open-source Flyte hands them to ``oss.create_looking_first``,
    which looks (``_look_first``) before it calls them."""
    import ast
    import importlib
    import inspect
    import pkgutil

    import rerund.adapters.flyte as package

    trees = {
        info.name: ast.parse(inspect.getsource(importlib.import_module(f"{package.__name__}.{info.name}")))
        for info in pkgutil.iter_modules(package.__path__)
    }
    functions = {
        (module, f.name): f
        for module, tree in trees.items()
        for f in ast.walk(tree)
        if isinstance(f, ast.AsyncFunctionDef | ast.FunctionDef)
    }

    def calls(fn: ast.AST) -> list[ast.Call]:
        found = [n for n in ast.walk(fn) if isinstance(n, ast.Call)]
        return sorted(found, key=lambda n: (n.lineno, n.col_offset))  # in source order

    def called(c: ast.Call) -> str:
        f = c.func
        return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""

    def creates(c: ast.Call) -> bool:
        f = c.func
        return (
            isinstance(f, ast.Attribute)
            and f.attr == "aio"
            and isinstance(f.value, ast.Attribute)
            and f.value.attr in ("run", "rerun")
            and isinstance(f.value.value, ast.Name)
            and f.value.value.id == "runner"
        )

    def nested(f: ast.AST) -> bool:
        return any(g is not f and f in ast.walk(g) for g in functions.values())

    outermost = {key for key, f in functions.items() if any(creates(c) for c in calls(f)) and not nested(f)}
    assert outermost == {("control_plane", "_create_rerun"), ("control_plane", "_create_relaunch")}

    def referring_to(name: str) -> set[tuple[str, str]]:
        return {
            key
            for key, f in functions.items()
            if key[1] != name and any(isinstance(n, ast.Attribute) and n.attr == name for n in ast.walk(f))
        }

    # Each create is only named by its port method, which hands it to ``_create``.
    assert referring_to("_create_rerun") == {("control_plane", "create_rerun")}
    assert referring_to("_create_relaunch") == {("control_plane", "create_relaunch")}
    for port_method in ("create_rerun", "create_relaunch"):
        assert next(called(c) for c in calls(functions["control_plane", port_method])) == "_create"
    # ``_create`` creates directly only when the control plane takes label filters (Union).
    create = functions["control_plane", "_create"]
    branch = next(n for n in ast.walk(create) if isinstance(n, ast.If))
    assert "_supports_label_filters" in [called(c) for c in calls(branch.test)]
    assert [called(c) for c in calls(create)][-1] == "create_looking_first"
    # ``create_looking_first`` looks before it calls the create.
    order = [called(c) for c in calls(functions["oss", "create_looking_first"])]
    assert order.index("_look_first") < order.index("create"), order
    assert {"run_details_answer", "listed_by_name"} <= {
        called(c) for c in calls(functions["oss", "_look_first"])
    }
