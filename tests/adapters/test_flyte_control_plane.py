"""The flyte-SDK adapter against the sandbox over real HTTP: every ``ControlPlane`` method, the
RPCs each one costs, and the translation of SDK errors into rerund's exception tree."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from adapter_support import NET_FLAKY
from adapter_support import connected as _cp
from adapter_support import rpc_delta as _delta
from rerund.adapters.flyte.control_plane import FlyteControlPlane
from rerund.clock import ControlPlaneClock, utcnow
from rerund.core.runs import RerunRequest, RunRef, RunSummary
from rerund.errors import AlreadyExistsError, NotFoundError, PermanentControlPlaneError
from rerund.sandbox.testing import SandboxHandle, start_sandbox

pytestmark = pytest.mark.e2e

WORKLOAD = {
    "tasks": {
        "net.flaky": {**NET_FLAKY, "inputs": {"lr": 0.1}},
        "etl.pipeline": {"children": ["etl.extract", "etl.load"]},
        "etl.extract": {"behaviour": ["succeed"], "duration": "0.1s"},
        "etl.load": {
            "behaviour": ["fail", "succeed"],
            "duration": "0.1s",
            "error": {"kind": "USER", "code": "ValueError", "message": "ValueError: bad row 17"},
        },
        "ok": {"behaviour": ["succeed"], "duration": "0.1s"},
    }
}


@pytest.fixture(scope="module")
def sb() -> Iterator[SandboxHandle]:
    with start_sandbox(WORKLOAD, time_scale=0.5) as handle:
        yield handle


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_list_failed_returns_failed_runs_updated_since_and_nothing_else(sb: SandboxHandle) -> None:
    cp = _cp(sb)
    start = datetime.now(UTC) - timedelta(seconds=1)
    failed = sb.launch("net.flaky", count=2)
    ok = sb.launch("ok")
    sb.wait_idle()

    runs = _run(cp.list_failed(sb.project, sb.domain, since=start))
    later = _run(cp.list_failed(sb.project, sb.domain, since=datetime.now(UTC) + timedelta(minutes=1)))

    assert {r.ref.name for r in runs} >= set(failed)
    assert not {r.ref.name for r in runs} & set(ok)
    assert all(r.phase == "FAILED" and r.task == "net.flaky" and r.ended_at is not None for r in runs)
    assert later == []


def test_every_answer_errors_included_tells_the_control_planes_time_by_its_http_date(
    sb: SandboxHandle,
) -> None:
    """The sandbox stamps its answers with the real clock (HTTP ``Date``); this "host" runs 30
    minutes ahead, then 10 minutes behind. The skew measured is never above the true one
    (``Date`` is truncated to the second): ``now()`` is never after the control plane's time."""
    ahead = [timedelta(minutes=30)]
    clock = ControlPlaneClock(wall=lambda: utcnow() + ahead[0])
    cp = FlyteControlPlane(endpoint=sb.endpoint, org=sb.org, insecure=True, rpc_timeout=10, clock=clock)
    _run(cp.connect())

    _run(cp.list_failed(sb.project, sb.domain, since=utcnow()))
    assert -1805 < clock.skew.total_seconds() <= -1800
    assert clock.now() <= utcnow()

    ahead[0] = timedelta(minutes=-10)
    with pytest.raises(NotFoundError, match="not found"):
        _run(cp.get_run(RunRef(sb.project, sb.domain, "no-such-run")))
    assert 595 < clock.skew.total_seconds() <= 600
    assert clock.now() <= utcnow()


def test_read_failure_names_the_failing_child_its_task_and_error_in_three_rpcs(sb: SandboxHandle) -> None:
    cp = _cp(sb)
    [name] = sb.launch("etl.pipeline", labels={"team": "etl"})
    sb.wait_idle()
    [summary] = [
        r
        for r in _run(cp.list_failed(sb.project, sb.domain, since=datetime.now(UTC) - timedelta(minutes=5)))
        if r.ref.name == name
    ]
    before = sb.request_counts()

    facts = _run(cp.read_failure(summary))

    assert facts.action == "a2"
    assert facts.action_task == "etl.load"
    assert facts.summary.task == "etl.pipeline"
    assert facts.labels == {"team": "etl"}
    assert (facts.error.kind, facts.error.code, facts.error.message) == (
        "USER",
        "ValueError",
        "ValueError: bad row 17",
    )
    assert _delta(sb, before) == {"GetRunDetails": 1, "ListActions": 1, "GetActionDetails": 1}


def test_create_rerun_carries_name_env_labels_inputs_and_relation_then_runs(sb: SandboxHandle) -> None:
    cp = _cp(sb)
    [name] = sb.launch("net.flaky", inputs={"lr": 0.1})
    sb.wait_idle()
    source = RunRef(sb.project, sb.domain, name)

    ref = _run(
        cp.create_rerun(
            RerunRequest(
                source=source,
                name=f"{name}-retry-1",
                env={"FLYTE_RETRY": "true"},
                labels={"rerund-root": name, "rerund-attempt": "1", "rerund-policy": "p"},
                inputs={"lr": 0.05},
            )
        )
    )
    snap = sb.wait_for(ref.name)

    assert ref == RunRef(sb.project, sb.domain, f"{name}-retry-1")
    assert snap["phase"] == "SUCCEEDED"  # the lineage's second execution succeeds
    assert snap["envs"]["FLYTE_RETRY"] == "true"
    assert snap["labels"] == {"rerund-root": name, "rerund-attempt": "1", "rerund-policy": "p"}
    assert snap["inputs"] == {"lr": 0.05}
    assert snap["relation"]["type"] == "RERUN" and snap["relation"]["run"] == name

    listed = _run(cp.list_reruns(sb.project, sb.domain, since=datetime.now(UTC) - timedelta(minutes=5)))
    assert ref in {r.ref for r in listed}
    by_policy = _run(
        cp.list_reruns(sb.project, sb.domain, since=datetime.now(UTC) - timedelta(minutes=5), policy="other")
    )
    assert ref not in {r.ref for r in by_policy}


def test_a_rerun_of_one_action_and_a_recover_rerun_keep_their_provenance(sb: SandboxHandle) -> None:
    cp = _cp(sb)
    [name] = sb.launch("etl.pipeline")
    sb.wait_idle()
    source = RunRef(sb.project, sb.domain, name)

    one = _run(cp.create_rerun(RerunRequest(source=source, name=f"{name}-a", action="a2")))
    rec = _run(cp.create_rerun(RerunRequest(source=source, name=f"{name}-r", recover=True)))
    one_snap, rec_snap = sb.wait_for(one.name), sb.wait_for(rec.name)

    assert one_snap["task"] == "etl.load" and one_snap["relation"]["type"] == "RERUN"
    assert rec_snap["relation"]["type"] == "RECOVER"
    assert {a["name"]: a["phase"] for a in rec_snap["actions"]}["a1"] == "RECOVERED"


def test_a_duplicate_name_is_already_exists_and_a_bad_name_is_permanent(sb: SandboxHandle) -> None:
    cp = _cp(sb)
    [name] = sb.launch("net.flaky")
    sb.wait_idle()
    source = RunRef(sb.project, sb.domain, name)
    _run(cp.create_rerun(RerunRequest(source=source, name=f"{name}-dup")))

    with pytest.raises(AlreadyExistsError) as exists:
        _run(cp.create_rerun(RerunRequest(source=source, name=f"{name}-dup")))
    with pytest.raises(PermanentControlPlaneError, match=r"CreateRun rejected the request as invalid") as bad:
        _run(cp.create_rerun(RerunRequest(source=source, name="x" * 31)))

    assert exists.value.code == "already_exists" and exists.value.rpc == "CreateRun"
    assert bad.value.code == "invalid_argument"


def test_an_unknown_run_is_not_found(sb: SandboxHandle) -> None:
    cp = _cp(sb)

    with pytest.raises(NotFoundError) as caught:
        _run(cp.get_run(RunRef(sb.project, sb.domain, "nosuchrun")))

    assert caught.value.rpc == "GetRunDetails" and caught.value.code == "not_found"


def test_watch_yields_the_snapshot_then_each_update(sb: SandboxHandle) -> None:
    cp = _cp(sb)
    sb.launch("ok")  # the snapshot is never empty, whichever tests ran before in this process
    sb.wait_idle()

    async def watch_until_failed(name_box: list[str]) -> list[str]:
        seen: list[str] = []
        async for summary in cp.watch(sb.project, sb.domain):
            if not name_box:
                name_box.extend(await asyncio.to_thread(sb.launch, "net.flaky"))
            if summary.ref.name == name_box[0]:
                seen.append(summary.phase)
                if summary.phase == "FAILED":
                    return seen
        return seen

    phases = _run(asyncio.wait_for(watch_until_failed([]), timeout=30))

    assert phases[-1] == "FAILED"
    assert "RUNNING" in phases or "QUEUED" in phases


def test_a_failure_the_watch_stream_reports_is_not_in_the_future_of_the_clock(sb: SandboxHandle) -> None:
    """A run's end that the stream reports has happened on the control plane's clock: ``now()``
    is at least that end, so a rerun with no backoff is due at once. Otherwise ``now()`` lags by
    what the last answer's ``Date`` lost to its truncation to the second, and the failure read
    at once was in the future: its rerun waited for a timer, up to a second (the reaction
    latency of bench_latency.py went from 14 ms to 1.2 s)."""
    clock = ControlPlaneClock()
    cp = FlyteControlPlane(endpoint=sb.endpoint, org=sb.org, insecure=True, rpc_timeout=10, clock=clock)
    _run(cp.connect())
    sb.launch("ok")  # the snapshot is never empty, whichever tests ran before in this process
    sb.wait_idle()
    _run(cp.list_failed(sb.project, sb.domain, since=utcnow()))  # an answer: the skew is measured
    assert clock.measured

    async def failed() -> RunSummary:
        name: list[str] = []
        async for summary in cp.watch(sb.project, sb.domain):
            if not name:
                name.extend(await asyncio.to_thread(sb.launch, "net.flaky"))
            if summary.ref.name == name[0] and summary.phase == "FAILED":
                return summary
        raise AssertionError("the stream ended before the failure")

    failure = _run(asyncio.wait_for(failed(), timeout=30))

    assert failure.ended_at is not None
    assert clock.now() >= failure.ended_at, (clock.now(), failure.ended_at)
    assert clock.now() <= utcnow()  # still never after the control plane's time


def test_the_watch_stream_asks_for_its_messages_uncompressed(
    sb: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    # connectrpc decompresses a stream message by message in Python: the daemon's WatchRuns
    # client accepts identity only. The SDK's own run_service (gzip accepted) is the control.
    from connectrpc.compression.gzip import GzipCompression
    from flyte._initialize import get_client
    from flyteidl2.common import identifier_pb2
    from flyteidl2.workflow import run_service_pb2

    cp = _cp(sb)
    sb.launch("ok", count=3)
    sb.wait_idle()
    decompressed: list[int] = []
    original = GzipCompression.decompress

    def counting(self: Any, data: Any) -> bytes:
        decompressed.append(len(data))
        return original(self, data)

    monkeypatch.setattr(GzipCompression, "decompress", counting)
    req = run_service_pb2.WatchRunsRequest(
        project_id=identifier_pb2.ProjectIdentifier(organization=sb.org, name=sb.project, domain=sb.domain)
    )

    async def first(stream: Any) -> Any:
        async for item in stream:
            return item
        return None

    async def both() -> tuple[Any, Any]:
        ours = await first(cp.watch(sb.project, sb.domain))
        ours_count = len(decompressed)
        sdk = await first(get_client().run_service.watch_runs(req))
        assert sdk is not None and len(sdk.runs) >= 1
        return ours, (ours_count, len(decompressed) - ours_count)

    ours, (ours_count, sdk_count) = _run(asyncio.wait_for(both(), timeout=30))

    assert ours is not None and ours.ref.project == sb.project
    assert ours_count == 0
    assert sdk_count >= 1  # the same snapshot, gzip-compressed when gzip is accepted


# --- production connections (issue 12) -------------------------------------------------------


def test_a_refused_token_request_becomes_a_credentials_error_that_is_retried() -> None:
    from flyte.remote._client.auth.errors import AuthenticationError

    from rerund.adapters.flyte.errors import translate_error
    from rerund.errors import CredentialsError, TransientControlPlaneError

    err = translate_error(
        AuthenticationError('Status Code (401) received from IDP: {"error": "invalid_client"}'), "ListRuns"
    )

    assert isinstance(err, CredentialsError) and isinstance(err, TransientControlPlaneError)
    assert err.code == "unauthenticated" and err.rpc == "ListRuns"
    assert str(err).startswith("ListRuns: the token endpoint refused rerund's credentials (Status Code (401)")


def test_unauthenticated_and_untrusted_certificates_are_told_apart() -> None:
    from connectrpc.code import Code
    from connectrpc.errors import ConnectError

    from rerund.adapters.flyte.errors import translate_error
    from rerund.errors import CredentialsError

    unauth = translate_error(ConnectError(Code.UNAUTHENTICATED, "token expired"), "GetRunDetails")
    tls = translate_error(
        ConnectError(
            Code.UNAVAILABLE,
            "Request failed: client error (Connect): invalid peer certificate: UnknownIssuer",
        ),
        "ListRuns",
    )

    assert isinstance(unauth, CredentialsError) and unauth.code == "unauthenticated"
    assert not isinstance(tls, CredentialsError) and tls.code == "unavailable"
    assert "invalid peer certificate: UnknownIssuer" in str(tls)


def test_the_connection_repr_never_shows_a_secret() -> None:
    from rerund.adapters.flyte.connection import Connection

    conn = Connection(endpoint="https://x", org="o", api_key="KEY-123", client_secret="SECRET-456")

    assert "KEY-123" not in repr(conn) and "SECRET-456" not in repr(conn)
    assert conn.auth == "the API key"


def test_every_rpc_on_the_wire_passes_the_rate_gate_the_sdk_rerun_path_included(sb: SandboxHandle) -> None:
    # max_rps holds per RPC: the gate books each RPC the SDK's client sends — rerund's own reads
    # and each RPC of the SDK's rerun path (which rerund cannot see one by one otherwise).
    cp = _cp(sb)
    booked: list[int] = []
    sent: list[int] = []

    answered: list[int] = []

    class _Gate:
        async def pace(self, cost: int = 1) -> None:
            booked.append(cost)
            await asyncio.sleep(0)
            sent.append(cost)  # the RPC waited for the whole pace

        def answered(self, cost: int = 1) -> None:
            answered.append(cost)

    cp.rpc_gate = _Gate()
    [name] = sb.launch("net.flaky")
    sb.wait_idle()
    source = RunRef(sb.project, sb.domain, name)

    before = sb.request_counts()
    summary = _run(cp.get_run(source))
    facts = _run(cp.read_failure(summary))
    _run(cp.create_rerun(RerunRequest(source=source, name=f"{name}-gated", source_spec=facts.spec)))
    served = _delta(sb, before)

    assert served["CreateRun"] == 1 and served["UploadInputs"] == 1 and served["GetActionData"] == 1
    assert booked == [1] * sum(served.values())  # one booking per RPC the sandbox served
    assert sent == booked
    assert answered == booked  # each one answered, and told to the gate (the learned rate)


def test_the_sdk_client_sends_requests_uncompressed_with_the_sdks_interceptors(sb: SandboxHandle) -> None:
    from flyte._initialize import get_client

    _cp(sb)
    session = get_client().session_config
    kwargs = session.connect_kwargs()
    assert kwargs["send_compression"] is None  # connectrpc's default is gzip on every request
    names = [type(i).__name__ for i in session.interceptors]
    assert names[:2] == ["ReuseReads", "DefaultMetadataInterceptor"] and names[-1] == "RpcGateInterceptor"


def test_rpc_timeout_starts_when_the_rate_gate_lets_the_rpc_go(sb: SandboxHandle) -> None:
    # Time queued behind max_rps is not the control plane's: an RPC held 3 s at the gate with a
    # 1 s rpc_timeout is still answered; an answer slower than rpc_timeout is a transient
    # DEADLINE_EXCEEDED, retried like any other.
    from rerund.errors import TransientControlPlaneError

    cp = _cp(sb)
    cp.rpc_timeout = 1.0
    [name] = sb.launch("ok")
    sb.wait_idle()
    source = RunRef(sb.project, sb.domain, name)

    class _SlowGate:
        async def pace(self, cost: int = 1) -> None:
            await asyncio.sleep(3.0)

        def answered(self, cost: int = 1) -> None:
            pass

    cp.rpc_gate = _SlowGate()
    assert _run(cp.get_run(source)).ref == source

    cp.rpc_gate = None
    sb.set_faults(latency_s=3.0)
    try:
        with pytest.raises(TransientControlPlaneError) as caught:
            _run(cp.get_run(source))
    finally:
        sb.set_faults(latency_s=0.0)
    assert caught.value.code == "deadline_exceeded"
    assert "rpc_timeout (1s)" in str(caught.value)


def test_the_sdks_rerun_path_reuses_what_read_failure_just_read_once(sb: SandboxHandle) -> None:
    # read_failure reads GetRunDetails (and GetActionDetails of the failing action); the SDK's
    # rerun path would read them again moments later. It is answered with those reads, once:
    # a later rerun of the same source, or any other read of it, goes on the wire.
    cp = _cp(sb)
    names = sb.launch("etl.pipeline", count=4)
    sb.wait_idle()
    refs = [RunRef(sb.project, sb.domain, n) for n in names]
    facts = [_run(cp.read_failure(_run(cp.get_run(ref)))) for ref in refs[:2]]

    def rerun(i: int, suffix: str, **kw: Any) -> dict[str, int]:
        before = sb.request_counts()
        request = RerunRequest(source=refs[i], name=f"{names[i]}-{suffix}", source_spec=facts[i].spec, **kw)
        _run(cp.create_rerun(request))
        return _delta(sb, before)

    first = rerun(0, "a", action="a2")  # the failing action on its own: GetActionDetails(a2) too
    again = rerun(0, "b", action="a2")
    before = sb.request_counts()
    _run(cp.get_run(refs[1]))  # rerund's own reads are never answered from memory
    own = _delta(sb, before)

    assert facts[0].action == "a2"
    assert "GetRunDetails" not in first and "GetActionDetails" not in first and first["CreateRun"] == 1
    assert again["GetRunDetails"] == 1 and again["GetActionDetails"] == 1 and again["CreateRun"] == 1
    assert own == {"GetRunDetails": 1}

    # Only the newest runs' reads within the byte budget are kept: here room for two runs'.
    one_run = cp.read_cache_bytes  # refs[1]'s reads (refs[0]'s were taken by its rerun)
    cp.read_cache_budget = 2 * one_run + one_run // 2
    facts.extend(_run(cp.read_failure(_run(cp.get_run(ref)))) for ref in refs[2:])
    assert list(cp._reads) == refs[2:]  # refs[1]'s were dropped
    assert rerun(1, "c")["GetRunDetails"] == 1
    assert "GetRunDetails" not in rerun(3, "d")


def test_the_rate_gate_is_told_of_each_rpc_answered_but_not_of_an_overload() -> None:
    # What the learned rate counts as let through: an answer (an error the service chose to
    # give included), never RESOURCE_EXHAUSTED, UNAVAILABLE or a timeout.
    from connectrpc.code import Code
    from connectrpc.errors import ConnectError

    from rerund.adapters.flyte.tuning import RpcGateInterceptor

    answered: list[int] = []

    class _Gate:
        async def pace(self, cost: int = 1) -> None:
            pass

        def answered(self, cost: int = 1) -> None:
            answered.append(cost)

    owner = SimpleNamespace(rpc_gate=_Gate(), rpc_timeout=5.0, clock=None)
    gate = RpcGateInterceptor(owner)  # type: ignore[arg-type]

    def outcome(code: Code | None) -> list[int]:
        answered.clear()

        async def call_next(request: Any, ctx: Any) -> Any:
            if code is None:
                return "answer"
            raise ConnectError(code, "x")

        with contextlib.suppress(ConnectError):
            _run(gate.intercept_unary(call_next, "request", None))
        return list(answered)

    assert outcome(None) == [1]
    for code in (Code.NOT_FOUND, Code.ALREADY_EXISTS, Code.INVALID_ARGUMENT, Code.INTERNAL):
        assert outcome(code) == [1], code
    for code in (Code.RESOURCE_EXHAUSTED, Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.UNAUTHENTICATED):
        assert outcome(code) == [], code


def test_phase_names_come_from_the_wire_enum_and_an_unknown_one_is_unspecified() -> None:
    from flyteidl2.common import phase_pb2

    from rerund.adapters.flyte.convert import phase_name

    assert phase_name(phase_pb2.ACTION_PHASE_FAILED) == "FAILED"
    assert phase_name(phase_pb2.ACTION_PHASE_TIMED_OUT) == "TIMED_OUT"
    assert phase_name(phase_pb2.ACTION_PHASE_UNSPECIFIED) == "UNSPECIFIED"
    assert phase_name(999) == "UNSPECIFIED"  # a phase newer than these stubs


# -- the fence around the SDK's private modules ------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "verified"),
    [
        ("2.12.1", True),
        ("2.10.3", True),
        ("2.11.3rc1", True),
        ("2.13.0", False),
        ("2.10.2", False),
        ("2.9.9", False),
        ("", False),
    ],
    ids=["pinned", "oldest", "pre-release", "too-new", "too-old-patch", "too-old", "unknown"],
)
def test_the_fence_accepts_only_the_sdk_versions_it_was_verified_against(
    version: str, verified: bool
) -> None:
    from rerund.adapters.flyte.sdk_internals import version_problem

    problem = version_problem(version)

    if verified:
        assert problem is None
    else:
        assert problem is not None
        assert "outside the versions rerund's SDK tuning was verified against (>=2.10.3,<2.13)" in problem


def test_no_module_of_rerund_but_the_fence_imports_a_private_module_of_the_sdk() -> None:
    import ast
    import pathlib

    import rerund

    def private(module: str) -> bool:
        parts = module.split(".")
        return parts[0] == "flyte" and any(p.startswith("_") for p in parts[1:])

    root = pathlib.Path(rerund.__file__).parent
    found = {}
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if any(private(n) for n in names):
                found.setdefault(str(path.relative_to(root)), []).append(node.lineno)

    assert set(found) == {"adapters/flyte/sdk_internals.py"}, found


def test_an_sdk_outside_the_verified_versions_runs_on_the_plain_path_and_says_so(
    sb: SandboxHandle, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import importlib.metadata

    from rerund.adapters.flyte import sdk_internals

    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: "2.99.0" if name == "flyte" else real(name)
    )
    sdk_internals.tuning_problem.cache_clear()
    try:
        cp = FlyteControlPlane(endpoint=sb.endpoint, org=sb.org, insecure=True, rpc_timeout=10)
        with caplog.at_level("WARNING", logger="rerund.flyte"):
            _run(cp.connect())
        [name] = sb.launch("net.flaky")
        sb.wait_idle()
        listed = _run(cp.list_failed(sb.project, sb.domain, since=datetime.now(UTC) - timedelta(minutes=5)))
    finally:
        monkeypatch.undo()
        sdk_internals.tuning_problem.cache_clear()

    assert cp.tuned is False
    assert name in {r.ref.name for r in listed}
    assert (
        "flyte SDK 2.99.0 is outside the versions rerund's SDK tuning was verified against (>=2.10.3,<2.13); "
        "rerund runs on the plain flyte SDK path (slower, correct)" in caplog.text
    )
    from rerund.adapters.flyte.sdk_internals import get_client

    names = [type(i).__name__ for i in get_client().session_config.interceptors]
    assert "ReuseReads" not in names and "RpcGateInterceptor" not in names


def test_sdk_tuning_false_is_a_setting() -> None:
    from rerund.runtime.settings import load_settings

    assert load_settings(None, environ={}).sdk_tuning is True
    assert load_settings(None, environ={"RERUND_SDK_TUNING": "false"}).sdk_tuning is False


# -- translate_error maps only the SDK's and connectrpc's errors (issue 26) ------------------------------


def _raised(exc: BaseException) -> BaseException:
    """``exc`` as raised here (with a traceback whose innermost frame is this test's)."""
    try:
        raise exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    "bug",
    [
        AttributeError("'Run' object has no attribute 'pb2'"),
        ValueError("invalid literal for int() with base 10: 'x'"),
        TypeError("unsupported operand type(s) for +: 'int' and 'str'"),
        KeyError("spec"),
        RuntimeError("ours"),
    ],
    ids=["attribute", "value", "type", "key", "runtime"],
)
def test_an_error_raised_in_rerunds_own_code_is_re_raised_unchanged(bug: BaseException) -> None:
    from rerund.adapters.flyte.errors import translate_error

    raised = _raised(bug)

    with pytest.raises(type(bug)) as info:
        translate_error(raised, "CreateRun")

    assert info.value is raised


def test_a_check_the_sdk_makes_of_the_request_is_a_permanent_invalid_argument(sb: SandboxHandle) -> None:
    import flyte

    from rerund.adapters.flyte.errors import translate_error

    try:  # the SDK's own check, raised in flyte/_run.py
        flyte.with_runcontext(mode="remote").rerun("x", force_rerun_actions=["a1"])
    except ValueError as exc:
        err = translate_error(exc, "CreateRun")

    assert isinstance(err, PermanentControlPlaneError) and err.code == "invalid_argument"
    assert str(err) == "CreateRun cannot be done: force_rerun_actions requires recover=True"


class _BrokenSpec(FlyteControlPlane):
    """A bug of ours inside a create: the source spec the create reads is not a RunSpecView."""

    async def read_spec(self, ref: RunRef) -> Any:
        return None


def test_a_bug_of_ours_inside_a_create_reaches_the_caller_as_it_is(sb: SandboxHandle) -> None:
    backend = "union"
    [name] = sb.launch("net.flaky")
    sb.wait_idle()
    cp = _BrokenSpec(endpoint=sb.endpoint, org=sb.org, insecure=True, rpc_timeout=10, backend=backend)
    _run(cp.connect())
    request = RerunRequest(source=RunRef(sb.project, sb.domain, name), name=f"{name[:10]}-bug-{backend}")

    with pytest.raises(AttributeError, match="'NoneType' object has no attribute"):
        _run(cp.create_rerun(request))

    assert request.name not in {r["name"] for r in sb.runs()}
