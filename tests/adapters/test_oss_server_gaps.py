"""What the open-source runs service no longer guards (issue 26, round 2), and rerund staying
right without it, each against the sandbox's ``oss`` profile over real HTTP: a run listed
FAILED and executing again by the time it is read, a rerun whose source is gone, a run with
an empty domain, a child aborted after it succeeded, an error cut off by the 500-event cap, a
database error on the look right before creating."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from flyteidl2.common import identifier_pb2
from flyteidl2.workflow import run_service_pb2 as rs
from flyteidl2.workflow.run_service_connect import RunServiceClientSync

from adapter_support import connected
from rerund.adapters.flyte.control_plane import FlyteControlPlane
from rerund.core.runs import RerunRequest, RunRef
from rerund.errors import NotFoundError, PermanentControlPlaneError, TransientControlPlaneError
from rerund.sandbox.profiles import OSS
from rerund.sandbox.testing import SandboxHandle, start_sandbox
from run_service_wire import create, run_id

pytestmark = pytest.mark.e2e

WORKLOAD: dict[str, Any] = {
    "tasks": {
        "ok": {"duration": "0.05s"},
        "bad": {
            "duration": "0.05s",
            "behaviour": ["fail"],
            "error": {"kind": "USER", "code": "ValueError", "message": "ValueError: bad row"},
        },
        "pipe": {"children": ["ok", "bad"]},
        "chatty": {  # its FAILED event is past the 500 events open-source Flyte reads
            "duration": "0.05s",
            "behaviour": ["fail"],
            "status_events": 600,
            "error": {"kind": "USER", "code": "ValueError", "message": "ValueError: bad row"},
        },
        "fail.then.hang": {
            "duration": "0.1s",
            "behaviour": ["fail", "hang"],
            "error": {"kind": "SYSTEM", "code": "ConnectionResetError", "message": "connection reset"},
        },
    }
}


@pytest.fixture(scope="module")
def sb() -> Iterator[SandboxHandle]:
    with start_sandbox(WORKLOAD, time_scale=0.5, profile=OSS.with_error_delay(0)) as handle:
        yield handle


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_run_listed_failed_and_executing_again_is_read_with_its_phase_now(sb: SandboxHandle) -> None:
    cp = connected(sb, backend="oss")
    with RunServiceClientSync(sb.endpoint) as client:
        create(sb, client, "again1", task="fail.then.hang")
        sb.wait_for("again1")
        listed = _run(cp.get_run(RunRef(sb.project, sb.domain, "again1")))
        assert listed.phase == "FAILED"
        create(sb, client, "again1", task="fail.then.hang")  # open-source Flyte runs it again
    assert sb.stats()["reexecutions"] == 1
    assert sb.run("again1")["phase"] in ("QUEUED", "RUNNING")

    facts = _run(cp.read_failure(listed))

    assert facts.summary.phase in ("QUEUED", "RUNNING"), facts.summary
    assert facts.summary.ended_at is None
    with RunServiceClientSync(sb.endpoint) as client:  # it hangs: end it for the tests after
        client.abort_run(rs.AbortRunRequest(run_id=run_id(sb, "again1")))


def test_a_rerun_whose_source_is_gone_is_refused_and_creates_no_orphan(sb: SandboxHandle) -> None:
    # Open-source CreateRun does not check ``relation.related_to``; nothing under runs/ deletes a
    # run, but an operator can (the sandbox's ``forget``). The read of the failure came before.
    cp = connected(sb, backend="oss")
    with RunServiceClientSync(sb.endpoint) as client:
        create(sb, client, "src1", task="fail.then.hang")
    sb.wait_for("src1")
    src = RunRef(sb.project, sb.domain, "src1")
    listed = _run(cp.get_run(src))
    _run(cp.read_failure(listed))  # what the SDK's rerun path reads of the source is kept
    sb.forget("src1")
    before = sb.request_counts().get("CreateRun", 0)

    with pytest.raises(
        PermanentControlPlaneError, match=r"its source run demo/development/src1 is gone"
    ) as info:
        _run(cp.create_rerun(RerunRequest(source=src, name="src1-retry-1")))

    assert info.value.code == "source_gone"
    assert sb.request_counts().get("CreateRun", 0) == before
    assert "src1-retry-1" not in {r["name"] for r in sb.runs()}


def test_a_run_with_an_empty_domain_is_never_created(sb: SandboxHandle) -> None:
    # Open-source Flyte accepts a CreateRun with an empty domain (item 17 of the oss profile):
    # rerund never sends one, even for a source that lives in domain "".
    cp = connected(sb, backend="oss")
    with RunServiceClientSync(sb.endpoint) as client:
        create(sb, client, "nodomain1", task="fail.then.hang", domain="")
    src = RunRef(sb.project, "", "nodomain1")
    before = sb.request_counts().get("CreateRun", 0)

    with pytest.raises(
        PermanentControlPlaneError, match="rerund does not create a run with an empty domain"
    ) as info:
        _run(cp.create_rerun(RerunRequest(source=src, name="nodomain1-retry-1")))

    assert info.value.code == "invalid_argument"
    assert sb.request_counts().get("CreateRun", 0) == before


def test_a_child_aborted_after_it_succeeded_is_not_read_as_the_cause_of_the_failure(
    sb: SandboxHandle,
) -> None:
    # Open-source AbortAction aborts any action with no phase condition: an operator aborting
    # the finished a1 makes it the first "failed" child by creation time, before a2's failure.
    cp = connected(sb, backend="oss")
    [name] = sb.launch("pipe")
    sb.wait_for(name)
    with RunServiceClientSync(sb.endpoint) as client:
        client.abort_action(
            rs.AbortActionRequest(
                action_id=identifier_pb2.ActionIdentifier(run=run_id(sb, name), name="a1"), reason="by hand"
            )
        )
    listed = _run(cp.get_run(RunRef(sb.project, sb.domain, name)))

    facts = _run(cp.read_failure(listed))

    assert (facts.action, facts.action_task) == ("a2", "bad")
    assert facts.error.message == "ValueError: bad row"


def test_an_empty_error_of_a_failed_run_is_error_details_not_arrived(sb: SandboxHandle) -> None:
    # Open-source Flyte builds attempts from an action's first 500 events: past them the FAILED
    # event is cut, and the details carry the attempt's nil error, a present but empty
    # ErrorInfo. That is no error read: rerund waits for it (bounded), never decides on it.
    cp = connected(sb, backend="oss")
    [name] = sb.launch("chatty")
    sb.wait_for(name)
    listed = _run(cp.get_run(RunRef(sb.project, sb.domain, name)))

    facts = _run(cp.read_failure(listed))

    assert facts.error_pending, facts.error


class _MissesTheRunBeforeCreating(FlyteControlPlane):
    """The look before creating misses run ``target`` (another replica creates it right
    after), and the source is not read again (its read was kept by ``read_failure``)."""

    target = ""

    async def run_details_answer(self, ref: RunRef, *, confirm_absent: bool = True) -> Any:
        if ref.name == self.target and not confirm_absent:
            raise NotFoundError(f"run {ref} not found (yet)", rpc="GetRunDetails", code="not_found")
        return await super().run_details_answer(ref, confirm_absent=confirm_absent)

    async def _list_page(self, project: str, domain: str, filters: list[Any], **kw: Any) -> Any:
        if any(f.field == "run_name" and list(f.values) == [self.target] for f in filters):
            return rs.ListRunsResponse()
        return await super()._list_page(project, domain, filters, **kw)

    async def source_read(self, ref: RunRef) -> None:
        return None


def test_a_database_error_on_the_look_right_before_creating_is_not_taken_for_absence(
    sb: SandboxHandle,
) -> None:
    # Open-source GetRunDetails answers NOT_FOUND for a database error: a look again made with
    # it let a CreateRun go out over another replica's run (the 1,000-failure storm under
    # db_errors 0.3 re-executed two runs). The look is a ListRuns, whose database errors are
    # INTERNAL: the create fails and is retried later, nothing runs again.
    [name] = sb.launch("bad")
    sb.wait_for(name)
    src = RunRef(sb.project, sb.domain, name)
    request = RerunRequest(source=src, name=f"{name[:10]}-db-1")
    _run(connected(sb, backend="oss").create_rerun(request))  # the other replica's run
    sb.wait_for(request.name)
    late = _MissesTheRunBeforeCreating(
        endpoint=sb.endpoint, org=sb.org, insecure=True, rpc_timeout=10, backend="oss"
    )
    late.target = request.name
    _run(late.connect())
    facts = _run(late.read_failure(_run(late.get_run(src))))
    before = sb.stats()["reexecutions"]
    sb.set_faults(db_errors=1.0)
    try:
        for _ in range(3):  # however often: retried, never given up as a repeated INTERNAL
            with pytest.raises(TransientControlPlaneError, match="CreateRun"):
                _run(late.create_rerun(RerunRequest(source=src, name=request.name, source_spec=facts.spec)))
    finally:
        sb.set_faults(db_errors=0.0)

    assert sb.stats()["reexecutions"] == before
