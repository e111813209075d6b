"""One contract for the ``ControlPlane`` port, run against every implementation: the in-memory
fake the unit tests use (``tests/runtime/fake_control_plane.py``) and the real adapter
(``rerund.adapters.flyte``, the flyte SDK) over the sandbox, as Union and as
open-source Flyte 2 (``--profile oss``). Like APScheduler's
store tests, each test is written once and parametrized over the implementations, so the fake
cannot drift from the real thing: a behaviour the reconcile tests rely on in the fake is pinned
here against the real SDK too.

Each backend provides the same world: a scope, the time, and ways to make a failed run (a root
action that fails with a SYSTEM connection reset; a pipeline whose child action ``a2``, task
``etl.load``, fails with a USER ValueError) and a succeeded one.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest

from rerund.adapters.flyte.control_plane import FlyteControlPlane
from rerund.core.model import ErrorInfo
from rerund.core.runs import RelaunchRequest, RerunRequest, RunRef
from rerund.errors import AlreadyExistsError, NotFoundError, UnsupportedError
from rerund.ports import ControlPlane, Deployments
from rerund.sandbox.profiles import OSS
from rerund.sandbox.testing import SandboxHandle, start_sandbox
from runtime.fake_control_plane import Clock, FakeControlPlane

FLAKY_ERROR = ErrorInfo(kind="SYSTEM", code="ConnectionResetError", message="connection reset by peer")
LOAD_ERROR = ErrorInfo(kind="USER", code="ValueError", message="ValueError: bad row 17")

WORKLOAD = {
    "tasks": {
        "net.flaky": {
            "duration": "0.1s",
            "behaviour": ["fail", "succeed"],
            "error": FLAKY_ERROR.model_dump(),
        },
        "etl.pipeline": {"children": ["etl.extract", "etl.load"]},
        "etl.extract": {"behaviour": ["succeed"], "duration": "0.1s"},
        "etl.load": {"behaviour": ["fail", "succeed"], "duration": "0.1s", "error": LOAD_ERROR.model_dump()},
        "ok": {"behaviour": ["succeed"], "duration": "0.1s"},
    }
}


class Backend(Protocol):
    cp: ControlPlane
    project: str
    domain: str
    error_codes: bool  # open-source Flyte's ErrorInfo carries no code (a message and a kind)

    def now(self) -> datetime: ...

    def failed(self, task: str, labels: dict[str, str] | None = None) -> str:
        """A run of ``task`` (``net.flaky`` or ``etl.pipeline``) that has failed; its name."""
        ...

    def succeeded(self) -> str: ...

    def ended(self, name: str) -> str:
        """Wait until run ``name`` (a rerun of ``net.flaky``: it succeeds) has ended; its phase."""
        ...


class FakeBackend:
    def __init__(self) -> None:
        self.clock = Clock()
        self.fake = FakeControlPlane(self.clock)
        self.cp: ControlPlane = self.fake  # type: ignore[assignment]  # the fake omits the reproduction calls
        self.project, self.domain = self.fake.project, self.fake.domain
        self.error_codes = True
        self._names = (f"run{i}" for i in itertools.count())

    def now(self) -> datetime:
        return self.clock()

    def failed(self, task: str, labels: dict[str, str] | None = None) -> str:
        name = next(self._names)
        if task == "etl.pipeline":
            self.fake.add_failed(
                name, task=task, action="a2", action_task="etl.load", error=LOAD_ERROR, labels=labels or {}
            )
        else:
            self.fake.add_failed(name, task=task, action="a0", error=FLAKY_ERROR, labels=labels or {})
        return name

    def succeeded(self) -> str:
        run = self.fake.add_failed(next(self._names), task="ok", phase="SUCCEEDED")
        return run.ref.name

    def ended(self, name: str) -> str:
        return self.fake.fail(name, "SUCCEEDED").phase  # as the workload's net.flaky: [fail, succeed]


class SandboxBackend:
    def __init__(self, sb: SandboxHandle, *, sdk_tuning: bool = True) -> None:
        self.sb = sb
        self.project, self.domain = sb.project, sb.domain
        self.error_codes = sb.profile.error_codes
        cp = FlyteControlPlane(
            endpoint=sb.endpoint, org=sb.org, insecure=True, rpc_timeout=10, sdk_tuning=sdk_tuning
        )
        asyncio.run(cp.connect())
        assert cp.tuned is sdk_tuning  # this SDK is within the fence's verified versions
        self.cp = cp

    def now(self) -> datetime:
        return datetime.now(UTC)

    def failed(self, task: str, labels: dict[str, str] | None = None) -> str:
        [name] = self.sb.launch(task, labels=labels)
        assert self.sb.wait_for(name)["phase"] == "FAILED"
        return name

    def succeeded(self) -> str:
        [name] = self.sb.launch("ok")
        assert self.sb.wait_for(name)["phase"] == "SUCCEEDED"
        return name

    def ended(self, name: str) -> str:
        return str(self.sb.wait_for(name)["phase"])


@pytest.fixture(scope="module")
def sandbox_handle() -> Iterator[SandboxHandle]:
    with start_sandbox(WORKLOAD, time_scale=0.5) as handle:
        yield handle


@pytest.fixture(scope="module")
def oss_sandbox_handle() -> Iterator[SandboxHandle]:
    """The sandbox as open-source Flyte 2 (error details shown at once: the late ones are
    tested in tests/adapters/test_flyte_control_plane_oss.py)."""
    with start_sandbox(WORKLOAD, time_scale=0.5, profile=OSS.with_error_delay(0)) as handle:
        yield handle


@pytest.fixture(
    params=[
        "fake",
        pytest.param("sandbox", marks=pytest.mark.e2e),
        pytest.param("sandbox-oss", marks=pytest.mark.e2e),
        # The plain flyte SDK path (``sdk_tuning: false``, what rerund falls back to when the SDK
        # is not one its private-module fence was verified against): the same contract.
        pytest.param("sandbox-plain", marks=pytest.mark.e2e),
        pytest.param("sandbox-oss-plain", marks=pytest.mark.e2e),
    ]
)
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "fake":
        return FakeBackend()
    tuned = not request.param.endswith("-plain")
    if request.param.startswith("sandbox-oss"):
        return SandboxBackend(request.getfixturevalue("oss_sandbox_handle"), sdk_tuning=tuned)
    if not tuned:
        return SandboxBackend(request.getfixturevalue("sandbox_handle"), sdk_tuning=False)
    return SandboxBackend(request.getfixturevalue("sandbox_handle"))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def ref(b: Backend, name: str) -> RunRef:
    return RunRef(b.project, b.domain, name)


def test_list_failed_returns_the_failed_runs_updated_since_and_nothing_else(backend: Backend) -> None:
    since = backend.now() - timedelta(minutes=1)
    failed, ok = backend.failed("net.flaky"), backend.succeeded()

    listed = {
        r.ref.name: r for r in run(backend.cp.list_failed(backend.project, backend.domain, since=since))
    }
    later = run(
        backend.cp.list_failed(backend.project, backend.domain, since=backend.now() + timedelta(minutes=5))
    )

    assert failed in listed and ok not in listed
    summary = listed[failed]
    assert (summary.ref, summary.phase, summary.task) == (ref(backend, failed), "FAILED", "net.flaky")
    assert summary.ended_at is not None and summary.terminal
    assert later == []


def test_get_run_returns_the_run_with_its_labels_and_an_unknown_run_is_not_found(backend: Backend) -> None:
    name = backend.failed("net.flaky", labels={"team": "ml"})

    summary = run(backend.cp.get_run(ref(backend, name)))
    with pytest.raises(NotFoundError) as missing:
        run(backend.cp.get_run(ref(backend, "nosuchrun")))

    assert (summary.phase, summary.task, dict(summary.labels)) == ("FAILED", "net.flaky", {"team": "ml"})
    assert (missing.value.rpc, missing.value.code) == ("GetRunDetails", "not_found")


@pytest.mark.parametrize(
    ("task", "action", "action_task", "error"),
    [("net.flaky", "a0", "net.flaky", FLAKY_ERROR), ("etl.pipeline", "a2", "etl.load", LOAD_ERROR)],
    ids=["root-action", "child-action"],
)
def test_read_failure_names_the_failing_action_its_task_and_error(
    backend: Backend, task: str, action: str, action_task: str, error: ErrorInfo
) -> None:
    name = backend.failed(task, labels={"team": "etl"})
    summary = run(backend.cp.get_run(ref(backend, name)))

    facts = run(backend.cp.read_failure(summary))

    assert (facts.summary.ref, facts.summary.task) == (ref(backend, name), task)
    served = error if backend.error_codes else error.model_copy(update={"code": ""})
    assert (facts.action, facts.action_task, facts.error) == (action, action_task, served)
    assert dict(facts.labels) == {"team": "etl"}
    assert summary.ended_at is not None and abs(facts.failed_at - summary.ended_at) < timedelta(seconds=1)


def test_create_rerun_names_and_labels_the_rerun_and_a_second_create_is_already_exists(
    backend: Backend,
) -> None:
    name = backend.failed("net.flaky")
    labels = {"rerund-root": name, "rerund-attempt": "1", "rerund-policy": "p"}
    request = RerunRequest(source=ref(backend, name), name=f"{name}-retry-1", labels=labels)

    target = run(backend.cp.create_rerun(request))
    rerun = run(backend.cp.get_run(target))
    with pytest.raises(AlreadyExistsError) as again:
        run(backend.cp.create_rerun(request))

    assert target == request.target == ref(backend, f"{name}-retry-1")
    assert (dict(rerun.labels), rerun.task) == (labels, "net.flaky")
    assert (again.value.rpc, again.value.code) == ("CreateRun", "already_exists")


def test_a_rerun_carries_its_relation_to_the_run_it_reruns_and_a_fresh_run_none(backend: Backend) -> None:
    """Issue 22.2: the relation is what vouches for a rerun's lineage labels. GetRunDetails
    serves it (the SDK's RunSpec.relation), read_failure too; a run launched afresh has none;
    a listing that does not say leaves it unknown."""
    name = backend.failed("net.flaky")
    since = backend.now() - timedelta(minutes=1)
    labels = {"rerund-root": name, "rerund-attempt": "1", "rerund-policy": "p"}
    target = run(
        backend.cp.create_rerun(
            RerunRequest(source=ref(backend, name), name=f"{name}-retry-1", labels=labels)
        )
    )

    rerun = run(backend.cp.get_run(target))
    fresh = run(backend.cp.get_run(ref(backend, name)))
    facts = run(backend.cp.read_failure(fresh))
    listed = {r.ref: r for r in run(backend.cp.list_reruns(backend.project, backend.domain, since=since))}

    assert (rerun.relation, rerun.relation_known) == (ref(backend, name), True)
    assert (fresh.relation, fresh.relation_known, facts.relation) == (None, True, None)
    assert listed[target].relation == (ref(backend, name) if listed[target].relation_known else None)


def test_list_ended_lists_the_ended_runs_created_since_each_with_its_relation_known(
    backend: Backend,
) -> None:
    """Issue 27: what ``rerund suggest`` learns reruns made by hand from. A rerun without
    rerund's labels (as a person makes one) is listed with the run it reruns; an original run
    with none; both relations known, whatever the listing carries (open-source Flyte's carries
    none: GetRunDetails' RunSpec says)."""
    since = backend.now() - timedelta(minutes=1)
    name, ok = backend.failed("net.flaky"), backend.succeeded()
    target = run(backend.cp.create_rerun(RerunRequest(source=ref(backend, name), name=f"{name}-by-hand")))
    assert backend.ended(target.name) == "SUCCEEDED"

    listed = {r.ref: r for r in run(backend.cp.list_ended(backend.project, backend.domain, since=since))}
    later = run(
        backend.cp.list_ended(backend.project, backend.domain, since=backend.now() + timedelta(minutes=5))
    )

    assert {ref(backend, name), ref(backend, ok), target} <= set(listed)
    assert (listed[target].phase, listed[target].relation) == ("SUCCEEDED", ref(backend, name))
    assert (listed[ref(backend, name)].phase, listed[ref(backend, name)].relation) == ("FAILED", None)
    assert listed[ref(backend, ok)].relation is None
    assert all(r.relation_known and r.terminal for r in listed.values())
    assert later == []


def test_list_reruns_lists_the_runs_labelled_with_a_policy_but_no_reproduction(backend: Backend) -> None:
    since = backend.now() - timedelta(minutes=1)
    name = backend.failed("net.flaky")
    source = ref(backend, name)
    ours = run(
        backend.cp.create_rerun(
            RerunRequest(
                source=source, name=f"{name}-retry-1", labels={"rerund-policy": "p", "rerund-root": name}
            )
        )
    )
    # A reproduction rerun inherits the labels of the run it reruns, a policy label included.
    repro = run(
        backend.cp.create_rerun(
            RerunRequest(source=source, name=f"{name}-rp", labels={"rerund-policy": "p", "rerund-repro": "c"})
        )
    )

    listed = {r.ref for r in run(backend.cp.list_reruns(backend.project, backend.domain, since=since))}
    of_p = {
        r.ref for r in run(backend.cp.list_reruns(backend.project, backend.domain, since=since, policy="p"))
    }
    of_other = {
        r.ref
        for r in run(backend.cp.list_reruns(backend.project, backend.domain, since=since, policy="other"))
    }

    assert ours in listed and ours in of_p and ours not in of_other
    assert repro not in listed and repro not in of_p
    assert source not in listed  # an original run carries no policy label


def test_list_reruns_with_changed_since_lists_only_the_reruns_updated_since(backend: Backend) -> None:
    since = backend.now() - timedelta(minutes=1)
    name = backend.failed("net.flaky")
    ours = run(
        backend.cp.create_rerun(
            RerunRequest(
                source=ref(backend, name),
                name=f"{name}-retry-1",
                labels={"rerund-policy": "p", "rerund-root": name},
            )
        )
    )

    changed = run(backend.cp.list_reruns(backend.project, backend.domain, since=since, changed_since=since))
    later = run(
        backend.cp.list_reruns(
            backend.project, backend.domain, since=since, changed_since=backend.now() + timedelta(minutes=5)
        )
    )

    assert ours in {r.ref for r in changed}
    assert later == []


def test_watch_yields_the_runs_of_the_scope_with_their_phase(backend: Backend) -> None:
    name = backend.failed("net.flaky")

    async def first_sight() -> str:
        async for summary in backend.cp.watch(backend.project, backend.domain):
            if summary.ref.name == name:
                return summary.phase
        return "stream ended without the run"

    assert run(asyncio.wait_for(first_sight(), timeout=30)) == "FAILED"


def test_console_url_points_at_the_run(backend: Backend) -> None:
    name = backend.failed("net.flaky")

    url = backend.cp.console_url(ref(backend, name))

    assert url.startswith("http") and name in url


def test_deployments_are_answered_or_refused_as_unsupported(backend: Backend) -> None:
    """``ports.Deployments``: a control plane answers, or raises ``UnsupportedError`` (the fake
    knows no deployed tasks and no scopes); never anything else."""
    calls = {
        "scope_exists": lambda: backend.cp.scope_exists(backend.project, backend.domain),
        "latest_task_version": lambda: backend.cp.latest_task_version(
            backend.project, backend.domain, "nothing.here"
        ),
    }
    answers: dict[str, Any] = {}
    for name, call in calls.items():
        try:
            answers[name] = run(call())
        except UnsupportedError as exc:
            answers[name] = exc.code

    if isinstance(backend, FakeBackend):
        assert answers == {"scope_exists": "unimplemented", "latest_task_version": "unimplemented"}
        source = RunRef(backend.project, backend.domain, backend.failed("net.flaky"))
        request = RelaunchRequest(source=source, name=f"{source.name}-retry-1", task="net.flaky")
        with pytest.raises(
            UnsupportedError, match=r"^the fake control plane cannot relaunch deployed tasks$"
        ):
            run(backend.cp.create_relaunch(request))
    else:
        assert answers["scope_exists"] in (True, None) and answers["latest_task_version"] is None


# The fake is a ControlPlane for what the reconcile loop calls; the reproduction calls
# (find_latest_run, read_outputs) are pinned against the real adapter in tests/adapters.
FAKE_METHODS: list[Callable[..., Any]] = [
    FakeControlPlane.list_failed,
    FakeControlPlane.list_reruns,
    FakeControlPlane.list_ended,
    FakeControlPlane.get_run,
    FakeControlPlane.watch,
    FakeControlPlane.read_failure,
    FakeControlPlane.create_rerun,
    FakeControlPlane.console_url,
    FakeControlPlane.scope_exists,
    FakeControlPlane.latest_task_version,
    FakeControlPlane.create_relaunch,
]


def test_the_suite_covers_every_method_the_fake_implements() -> None:
    implemented = {m.__name__ for m in FAKE_METHODS}
    port = {*vars(ControlPlane), *vars(Deployments)}
    public = {n for n in vars(FakeControlPlane) if n in port and not n.startswith("_")}
    assert public == implemented
