"""``rerund sandbox --profile oss``: every numbered behaviour of issue 16 that the open-source
runs service (flyteorg/flyte ``runs/``) shows, reproduced over the wire with a Connect client
or the real flyte SDK. Each test names the behaviour's number; ``union`` contrasts are kept
where the difference is the point."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from functools import partial

import flyte
import flyte.remote as remote
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from flyteidl2.common import identifier_pb2, list_pb2, phase_pb2
from flyteidl2.common import run_pb2 as common_run_pb2
from flyteidl2.task import run_pb2
from flyteidl2.task import task_definition_pb2 as task_pb2
from flyteidl2.workflow import run_service_pb2 as rs
from flyteidl2.workflow.run_service_connect import RunServiceClientSync

import run_service_wire as wire
from rerund.sandbox.profiles import OSS, UNION
from rerund.sandbox.records import ABORTED, SUCCEEDED
from rerund.sandbox.service import Hub
from rerund.sandbox.testing import flyte_init
from run_service_wire import create, names, run_id

pytestmark = pytest.mark.e2e

F = list_pb2.Filter
WORKLOAD = {
    "tasks": {
        "ok": {"behaviour": ["succeed"]},
        "bad": {
            "behaviour": ["fail"],
            "error": {"kind": "USER", "code": "ValueError", "message": "ValueError: x"},
        },
        "late": {"behaviour": ["timeout"]},
        "oom": {"behaviour": ["fail"], "error": {"kind": "USER", "code": "OOMKilled", "message": "m"}},
        "spot": {
            "behaviour": ["fail"],
            "error": {"kind": "SYSTEM", "code": "TaskInterruptedError", "message": "m"},
        },
        "gpu": {
            "behaviour": ["fail"],
            "error": {
                "kind": "SYSTEM",
                "code": "GpuXidError",
                "message": "Xid 79",
                "gpu_fault": {"code": 79},
            },
        },
        "slow": {"duration": "1h"},
        "stuck": {"queued": "1h"},
        "pipe": {"children": ["ok", "bad"]},
    }
}


# One page of the service's default size (limit 0) unless a test says otherwise.
list_runs = partial(wire.list_runs, limit=0)


@pytest.fixture
def oss(sandbox_factory):
    return sandbox_factory(workload=WORKLOAD, time_scale=0.01, profile=OSS.with_error_delay(0))


@pytest.fixture
def client(oss):
    with RunServiceClientSync(oss.endpoint) as c:
        yield c


def action_details(client, sb, name, action="a0"):
    return client.get_action_details(
        rs.GetActionDetailsRequest(
            action_id=identifier_pb2.ActionIdentifier(run=run_id(sb, name), name=action)
        )
    ).details


# -- 1. no label filters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "function", "values", "message"),
    [
        ("labels.team", F.EQUAL, ["ml"], "invalid filter field: labels.team"),
        ("labels.rerund-policy", F.EXISTS, [], "invalid filter field: labels.rerund-policy"),
        ("name", F.EQUAL, ["x"], "invalid filter field: name"),
        ("phase", F.EXISTS, ["6"], "unsupported filter function: EXISTS"),
        ("phase", F.NOT_EXISTS, ["6"], "unsupported filter function: NOT_EXISTS"),
        ("phase", F.VALUE_NOT_IN, ["6", "8"], "unsupported filter function: VALUE_NOT_IN"),
    ],
    ids=["label-equal", "label-exists", "name-column", "exists", "not-exists", "value-not-in"],
)
def test_1_oss_list_runs_refuses_labels_other_fields_and_three_functions(
    oss, client, field, function, values, message
):
    with pytest.raises(ConnectError, match=message) as info:
        list_runs(oss, client, F(field=field, function=function, values=values))

    assert info.value.code == Code.INVALID_ARGUMENT


def test_1_oss_list_runs_filters_on_the_fixed_columns(oss, client):
    oss.launch("bad", name="failed-one")
    oss.launch("ok", name="good-one")
    oss.launch("bad", name="failed-two")
    oss.wait_idle()
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()

    resp = list_runs(
        oss,
        client,
        F(field="phase", function=F.VALUE_IN, values=["6", "8"]),
        F(field="updated_at", function=F.GREATER_THAN_OR_EQUAL, values=[since]),
        F(field="task_name", function=F.EQUAL, values=["bad"]),
        F(field="run_name", function=F.ENDS_WITH, values=["-two"]),
    )

    assert names(resp) == ["failed-two"]


def test_1_oss_list_runs_leaves_run_labels_empty_while_run_details_have_them(oss, client):
    oss.launch("ok", name="labelled", labels={"team": "ml"})

    [run] = list_runs(oss, client).runs
    details = client.get_run_details(rs.GetRunDetailsRequest(run_id=run_id(oss, "labelled"))).details

    assert dict(run.labels) == {}
    assert dict(details.run_spec.labels.values) == {"team": "ml"}


# -- 2. no ALREADY_EXISTS ----------------------------------------------------------------------


def test_2_oss_create_run_of_an_existing_name_returns_the_existing_run_as_success(oss, client):
    create(oss, client, "taken", task="ok")
    oss.wait_for("taken")

    again = create(oss, client, "taken", task="bad")

    assert again.run.action.id.run.name == "taken"
    assert again.run.action.status.phase == phase_pb2.ACTION_PHASE_SUCCEEDED
    assert [r["name"] for r in oss.runs()] == ["taken"]
    assert oss.run("taken")["task"] == "ok"
    assert oss.stats()["reexecutions"] == 1  # and the run was enqueued again


def test_2_oss_sdk_rerun_with_a_taken_name_succeeds_instead_of_raising(oss):
    flyte_init(oss)
    [source] = oss.launch("bad")
    oss.wait_idle()
    first = flyte.with_runcontext(name="taken").rerun(source)
    oss.wait_idle()

    second = flyte.with_runcontext(name="taken").rerun(source)

    assert second.name == first.name == "taken"
    assert len([r for r in oss.runs() if r["name"] == "taken"]) == 1


def test_2_oss_create_run_of_an_existing_failed_name_executes_it_again(oss, client):
    create(oss, client, "again", task="bad")
    oss.wait_idle()
    assert oss.run("again")["phase"] == "FAILED"
    assert oss.stats()["reexecutions"] == 0

    create(oss, client, "again", task="bad")

    assert oss.stats()["reexecutions"] == 1
    assert oss.run("again")["phase"] in ("QUEUED", "RUNNING", "FAILED")
    oss.wait_idle()
    assert oss.run("again")["phase"] == "FAILED"
    assert len([r for r in oss.runs() if r["name"] == "again"]) == 1


def test_2_union_create_run_of_an_existing_name_is_already_exists(sandbox_factory):
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.01)
    with RunServiceClientSync(sb.endpoint) as c:
        create(sb, c, "taken")
        with pytest.raises(ConnectError, match="already exists") as info:
            create(sb, c, "taken")

    assert info.value.code == Code.ALREADY_EXISTS


# -- 3. phase filter values the database cannot take -------------------------------------------


@pytest.mark.parametrize(
    ("function", "values", "message"),
    [
        (F.EQUAL, ["FAILED"], "invalid input syntax for type integer"),
        (F.VALUE_IN, ["6"], "VALUE_IN with one value '6' is not an array"),
        (F.EQUAL, ["1", "0"], "EQUAL with 2 values"),
    ],
    ids=["phase-name", "single-value-in", "sdk-quirk-10"],
)
def test_3_oss_phase_filter_values_sql_cannot_take_answer_internal(oss, client, function, values, message):
    with pytest.raises(ConnectError, match=message) as info:
        list_runs(oss, client, F(field="phase", function=function, values=values))

    assert info.value.code == Code.INTERNAL


def test_3_oss_sdk_listall_of_recovered_runs_fails_with_internal(oss):
    flyte_init(oss)

    with pytest.raises(Exception, match="the database refused the query"):
        list(remote.Run.listall(in_phase=("recovered",)))
    assert list(remote.Run.listall(in_phase=("failed",))) == []


# -- 4. paging ------------------------------------------------------------------------------------


def test_4_oss_pages_default_to_50_with_an_offset_token(oss, client):
    oss.launch("slow", count=60)

    first = list_runs(oss, client)
    second = list_runs(oss, client, token=first.token)

    assert (len(first.runs), first.token) == (50, "50")
    assert (len(second.runs), second.token) == (10, "")
    assert len(set(names(first)) | set(names(second))) == 60


def test_4_oss_a_page_larger_than_200_is_invalid_argument(oss, client):
    with pytest.raises(ConnectError, match=r"invalid limit: 201 \(exceeds maximum of 200\)") as info:
        list_runs(oss, client, limit=201)

    assert info.value.code == Code.INVALID_ARGUMENT
    assert list_runs(oss, client, limit=200).token == ""


def test_4_oss_a_run_created_between_pages_repeats_a_row(oss, client):
    oss.launch("slow", count=4)
    newest_first = list_pb2.Sort(key="created_at", direction=list_pb2.Sort.DESCENDING)

    first = list_runs(oss, client, limit=2, sort=newest_first)
    oss.launch("slow", name="newcomer")
    second = list_runs(oss, client, limit=2, token=first.token, sort=newest_first)

    assert names(second)[0] == names(first)[-1]  # the live offset moved by one row


# -- 5. WatchRuns ---------------------------------------------------------------------------------


async def _watch(sb, request, until, timeout=10.0):
    """Messages of one WatchRuns stream until ``until(messages)``."""
    from flyteidl2.workflow.run_service_connect import RunServiceClient

    messages = []
    async with RunServiceClient(sb.endpoint) as c:

        async def read():
            async for msg in c.watch_runs(request):
                messages.append(msg)
                if until(messages):
                    return

        await asyncio.wait_for(read(), timeout)
    return messages


def _pid(sb, project=None):
    return identifier_pb2.ProjectIdentifier(organization=sb.org, name=project or sb.project, domain=sb.domain)


def test_5_oss_watch_sends_no_first_message_without_runs_and_no_new_runs(oss):
    async def scenario():
        request = rs.WatchRunsRequest(project_id=_pid(oss))
        task = asyncio.ensure_future(_watch(oss, request, lambda m: True))
        await asyncio.sleep(0.3)
        oss.launch("stuck", name="brand-new")  # a new run (QUEUED) is not pushed
        await asyncio.sleep(0.3)
        oss.launch("ok", name="finishing")  # its phase changes are
        return await task

    messages = asyncio.run(scenario())

    [first] = messages
    assert [r.action.id.run.name for r in first.runs] == ["finishing"]
    assert first.runs[0].action.status.phase != phase_pb2.ACTION_PHASE_QUEUED


def test_5_oss_watch_snapshot_holds_101_runs(oss):
    oss.launch("slow", count=120)

    [snapshot] = asyncio.run(_watch(oss, rs.WatchRunsRequest(project_id=_pid(oss)), lambda m: True))

    assert len(snapshot.runs) == 101


def test_5_oss_watch_snapshot_puts_queued_and_running_runs_before_failed_ones(oss):
    # ORDER BY phase ASC, created_at DESC, run_name DESC (action.go ListActions, no sort given):
    # with 101 runs queued or running, a failed run is in no snapshot, however recent.
    oss.launch("slow", count=60)
    oss.launch("stuck", count=45)
    [failed] = oss.launch("bad")
    oss.wait_for(failed)

    [snapshot] = asyncio.run(_watch(oss, rs.WatchRunsRequest(project_id=_pid(oss)), lambda m: True))

    phases = [r.action.status.phase for r in snapshot.runs]
    assert len(phases) == 101 and phases == sorted(phases)
    assert failed not in {r.action.id.run.name for r in snapshot.runs}


def test_5_oss_list_runs_without_a_sort_orders_by_phase_then_newest(oss, client):
    [old_failed] = oss.launch("bad")
    oss.wait_for(old_failed)
    [running] = oss.launch("slow")
    [new_failed] = oss.launch("bad")
    oss.wait_for(new_failed)

    page = client.list_runs(rs.ListRunsRequest(request=list_pb2.ListRequest(limit=10), project_id=_pid(oss)))

    assert [r.action.id.run.name for r in page.runs] == [running, new_failed, old_failed]


def test_5_oss_watch_with_an_org_scope_gets_every_project(oss):
    oss.launch("slow", name="elsewhere", project="other")

    [snapshot] = asyncio.run(_watch(oss, rs.WatchRunsRequest(org="not-this-org"), lambda m: True))

    assert [r.action.id.run.name for r in snapshot.runs] == ["elsewhere"]


def test_5_oss_watch_pushes_no_child_action_changes(oss):
    async def scenario():
        request = rs.WatchRunsRequest(project_id=_pid(oss))
        task = asyncio.ensure_future(
            _watch(oss, request, lambda m: m[-1].runs[0].action.status.phase == phase_pb2.ACTION_PHASE_FAILED)
        )
        await asyncio.sleep(0.3)
        oss.launch("pipe", name="pipeline")
        return await task

    messages = asyncio.run(scenario())

    phases = [m.runs[0].action.status.phase for m in messages]
    assert phases == [phase_pb2.ACTION_PHASE_RUNNING, phase_pb2.ACTION_PHASE_FAILED]


def test_5_oss_a_full_watch_buffer_loses_updates():
    from rerund.sandbox.records import ActionRec, RunRec

    async def scenario():
        hub = Hub(OSS)
        q: asyncio.Queue = asyncio.Queue(maxsize=OSS.watch_buffer)
        hub.oss_watchers.append((lambda r: True, q))
        now = datetime.now(UTC)
        for i in range(150):
            a0 = ActionRec("a0", "", "t", None, SUCCEEDED, now, now)  # type: ignore[arg-type]
            r = RunRec("o", "p", "d", f"r{i}", "t", run_pb2.RunSpec(), now, now, "p/d/r", actions={"a0": a0})
            hub.publish(r, a0)
        return q.qsize(), hub.dropped

    assert asyncio.run(scenario()) == (100, 50)


# -- 6. error details ------------------------------------------------------------------------------


def test_6_oss_error_info_is_missing_until_the_delay_after_failed(sandbox_factory):
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.01, profile=OSS.with_error_delay(3600))
    sb.launch("bad", name="just-failed")
    sb.wait_idle()
    with RunServiceClientSync(sb.endpoint) as c:
        details = action_details(c, sb, "just-failed")

    assert details.status.phase == phase_pb2.ACTION_PHASE_FAILED
    assert not details.HasField("error_info")


def test_6_oss_error_info_only_for_failed_and_the_root_error_in_run_details(oss, client):
    oss.launch("late", name="timed-out")
    oss.launch("pipe", name="pipeline")
    oss.wait_idle()

    timed_out = action_details(client, oss, "timed-out")
    child = action_details(client, oss, "pipeline", "a2")
    run = client.get_run_details(rs.GetRunDetailsRequest(run_id=run_id(oss, "pipeline"))).details

    assert timed_out.status.phase == phase_pb2.ACTION_PHASE_TIMED_OUT
    assert not timed_out.HasField("error_info")
    assert child.error_info.message == "ValueError: x"
    assert run.action.error_info.message == "child action a2 (bad) failed: ValueError: x"


# -- 11. error info: message and kind only ---------------------------------------------------------


def test_11_oss_error_info_has_no_code_nor_gpu_fault_and_the_executors_messages(oss, client):
    for task in ("oom", "spot", "gpu", "bad"):
        oss.launch(task, name=f"{task}-run")
    oss.wait_idle()
    served = {}
    for task in ("oom", "spot", "gpu", "bad"):
        info = action_details(client, oss, f"{task}-run").error_info
        run = client.get_run_details(rs.GetRunDetailsRequest(run_id=run_id(oss, f"{task}-run"))).details
        assert run.action.error_info == info
        assert not info.code and not info.HasField("gpu_fault")
        served[task] = (info.Kind.Name(info.kind), info.message)
    sigkill = "\r\n[primary] terminated with exit code (137). Reason [{}]. Message: \n."
    assert served == {
        "oom": ("KIND_USER", sigkill.format("OOMKilled")),
        "spot": ("KIND_SYSTEM", sigkill.format("Error")),
        "gpu": ("KIND_SYSTEM", "Xid 79"),
        "bad": ("KIND_USER", "ValueError: x"),
    }
    assert oss.run("oom-run")["error"]["code"] == "OOMKilled"  # the admin view keeps the cause


def test_6_union_run_details_leave_the_root_error_out(sandbox_factory):
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.01, profile=UNION)
    sb.launch("bad", name="failed")
    sb.wait_idle()
    with RunServiceClientSync(sb.endpoint) as c:
        run = c.get_run_details(rs.GetRunDetailsRequest(run_id=run_id(sb, "failed"))).details

    assert not run.action.HasField("error_info")


# -- 7. AbortRun of a finished run -------------------------------------------------------------------


def test_7_oss_aborting_a_finished_run_turns_it_aborted_and_bumps_updated_at(oss, client):
    oss.launch("ok", name="done")
    before = oss.wait_for("done")
    ended = before_end(oss, "done")

    client.abort_run(rs.AbortRunRequest(run_id=run_id(oss, "done"), reason="cleanup"))
    after = oss.run("done")
    details = action_details(client, oss, "done")

    assert (before["phase"], after["phase"]) == ("SUCCEEDED", "ABORTED")
    assert after["updated_at"] > before["updated_at"]
    assert before_end(oss, "done") == ended
    assert details.attempts[-1].phase == SUCCEEDED
    assert details.abort_info.reason == "cleanup"
    assert details.status.phase == ABORTED


def before_end(sb, name):
    return sb.sandbox.store.runs[(sb.org, sb.project, sb.domain, name)].root.end_time.isoformat()


def test_7_union_aborting_a_finished_run_changes_nothing(sandbox_factory):
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.01)
    sb.launch("ok", name="done")
    before = sb.wait_for("done")
    with RunServiceClientSync(sb.endpoint) as c:
        c.abort_run(rs.AbortRunRequest(run_id=run_id(sb, "done")))

    assert sb.run("done") == before


# -- 8. recover, projects, ListActions metadata, org ------------------------------------------------


def test_8_oss_recover_is_stored_but_reruns_every_action(oss, client):
    oss.launch("pipe", name="pipeline")
    oss.wait_idle()
    spec = run_pb2.RunSpec(
        relation=common_run_pb2.Relation(
            related_to=run_id(oss, "pipeline", org=""), relation_type=common_run_pb2.RELATION_TYPE_RECOVER
        )
    )

    create(oss, client, "recovered", task="pipe", run_spec=spec)
    oss.wait_idle()

    snap = oss.run("recovered")
    assert snap["relation"] == {"run": "pipeline", "type": "RECOVER"}
    assert [a["phase"] for a in snap["actions"] if a["name"] == "a1"] == ["SUCCEEDED"]  # not RECOVERED


def test_8_oss_create_run_in_an_unknown_project_is_not_found(oss, client):
    with pytest.raises(ConnectError, match='project "nowhere" not found') as info:
        create(oss, client, "lost", project="nowhere")

    assert info.value.code == Code.NOT_FOUND


def test_8_oss_list_actions_metadata_has_no_task_and_identifiers_no_org(oss, client):
    oss.launch("pipe", name="pipeline")
    oss.wait_idle()

    actions = client.list_actions(
        rs.ListActionsRequest(run_id=run_id(oss, "pipeline"), request=list_pb2.ListRequest())
    ).actions
    [run] = list_runs(oss, client).runs

    assert {a.id.name: a.metadata.parent for a in actions} == {"a0": "", "a1": "a0", "a2": "a0"}
    assert not any(a.metadata.HasField("task") for a in actions)
    assert run.action.id.run.org == ""
    assert run.action.id.run.name == "pipeline"


# -- 12. a label value the cluster refuses ----------------------------------------------------------


@pytest.mark.parametrize("value", ["ML Platform", "x" * 64, "-lead", "trail."])
def test_12_oss_a_run_with_a_label_value_kubernetes_refuses_stays_queued(oss, value):
    [refused] = oss.launch("ok", labels={"team": value})
    [fine] = oss.launch("ok", labels={"team": "ml-platform_2.0"})
    oss.wait_for(fine)

    assert oss.run(fine)["phase"] == "SUCCEEDED"
    assert oss.run(refused)["phase"] == "QUEUED"


# -- 15. identifiers echo the request's org; WatchRunDetails sends empty details (issue 26.8) -------


def test_15_oss_run_and_action_details_echo_the_requests_org_while_listings_carry_none(oss, client):
    [name] = oss.launch("bad")
    oss.wait_for(name)
    asked = run_id(oss, name, org="any-org")

    run = client.get_run_details(rs.GetRunDetailsRequest(run_id=asked)).details
    action = client.get_action_details(
        rs.GetActionDetailsRequest(action_id=identifier_pb2.ActionIdentifier(run=asked, name="a0"))
    ).details
    [listed] = list_runs(oss, client).runs

    assert run.action.id.run.org == "any-org" and action.id.run.org == "any-org"
    assert listed.action.id.run.org == ""


def test_15_oss_watch_run_details_sends_empty_details(oss):
    from flyteidl2.workflow.run_service_connect import RunServiceClient

    [name] = oss.launch("bad")
    oss.wait_for(name)

    async def first() -> rs.WatchRunDetailsResponse:
        async with RunServiceClient(oss.endpoint) as c:
            async for msg in c.watch_run_details(rs.WatchRunDetailsRequest(run_id=run_id(oss, name))):
                return msg
        raise AssertionError("no message")

    msg = asyncio.run(asyncio.wait_for(first(), 10))

    assert msg.HasField("details") and msg.details.ByteSize() == 0


# -- 17. no request validation (issue 26.7) -----------------------------------------------------


def test_17_oss_create_run_accepts_an_empty_org_and_domain(oss, client):
    no_org = create(oss, client, "no-org", org="")
    no_domain = create(oss, client, "no-domain", domain="")

    assert no_org.run.action.id.run.name == "no-org"
    assert no_domain.run.action.id.run.domain == ""
    found = client.get_run_details(rs.GetRunDetailsRequest(run_id=run_id(oss, "no-domain", domain="")))
    assert found.details.action.id.run.name == "no-domain"


def test_17_oss_create_run_with_an_empty_project_is_internal(oss, client):
    with pytest.raises(
        ConnectError, match="failed to validate project: invalid_argument: id is required"
    ) as info:
        create(oss, client, "no-project", project="")

    assert info.value.code == Code.INTERNAL


def test_17_oss_create_run_checks_neither_the_related_run_nor_the_offloaded_inputs(oss, client):
    spec = run_pb2.RunSpec(
        relation=common_run_pb2.Relation(
            related_to=run_id(oss, "never-was"), relation_type=common_run_pb2.RELATION_TYPE_RERUN
        )
    )
    create(oss, client, "orphan", run_spec=spec)
    req = rs.CreateRunRequest(
        run_id=run_id(oss, "no-inputs"),
        task_spec=client.get_run_details(
            rs.GetRunDetailsRequest(run_id=run_id(oss, "orphan"))
        ).details.action.task,
        offloaded_input_data=common_run_pb2.OffloadedInputData(uri="sandbox://inputs/never-uploaded"),
    )
    client.create_run(req)

    stored = client.get_run_details(rs.GetRunDetailsRequest(run_id=run_id(oss, "orphan"))).details.run_spec
    assert stored.relation.related_to.name == "never-was"
    assert {"orphan", "no-inputs"} <= {r["name"] for r in oss.runs()}


def test_17_oss_create_run_does_not_check_resources_and_the_run_stays_queued(sandbox_factory):
    from rerund.sandbox.protos import task_spec_for
    from rerund.sandbox.workload import TaskDef

    sb = sandbox_factory(
        workload={"max_resources": {"memory": "64Gi"}, "tasks": {"ok": {}}},
        time_scale=0.01,
        profile=OSS.with_error_delay(0),
    )
    spec = task_spec_for(
        "ok", TaskDef(resources={"memory": "128Gi"}), org=sb.org, project=sb.project, domain=sb.domain
    )
    with RunServiceClientSync(sb.endpoint) as c:
        c.create_run(rs.CreateRunRequest(run_id=run_id(sb, "too-big"), task_spec=spec))
        create(sb, c, "fits")
    sb.wait_for("fits")

    assert sb.run("too-big")["phase"] == "QUEUED"  # the pod is Unschedulable: the plugin keeps it queued


def test_17_oss_reads_with_an_empty_field_are_not_found(oss, client):
    with pytest.raises(ConnectError, match="not found") as info:
        client.get_run_details(rs.GetRunDetailsRequest(run_id=run_id(oss, "")))
    assert info.value.code == Code.NOT_FOUND
    with pytest.raises(ConnectError, match="not found") as aborted:
        client.abort_run(rs.AbortRunRequest(run_id=run_id(oss, "x", project="")))
    assert aborted.value.code == Code.NOT_FOUND


def test_17_oss_list_runs_scopes_org_and_nothing_list_every_run_and_task_scopes_are_honoured(oss, client):
    [a] = oss.launch("ok")
    [b] = oss.launch("bad", project="other")
    oss.wait_idle()

    def listed(**scope):
        return {r.action.id.run.name for r in client.list_runs(rs.ListRunsRequest(**scope)).runs}

    assert listed(org="any-org") == listed() == {a, b}
    assert listed(task_name=task_pb2.TaskName(project="other", domain=oss.domain, name="bad")) == {b}
    assert listed(project_id=identifier_pb2.ProjectIdentifier(name=oss.project, domain="")) == set()


# -- 18. AbortAction works on any action (issue 26.8) ------------------------------------------------


def _abort_action(client, sb, name, action):
    client.abort_action(
        rs.AbortActionRequest(
            action_id=identifier_pb2.ActionIdentifier(run=run_id(sb, name), name=action), reason="by hand"
        )
    )


def test_18_oss_abort_action_aborts_a_finished_child_which_keeps_its_attempts_phase(oss, client):
    [name] = oss.launch("pipe")
    oss.wait_for(name)

    _abort_action(client, oss, name, "a1")

    a1 = action_details(client, oss, name, "a1")
    assert a1.status.phase == phase_pb2.ACTION_PHASE_ABORTED
    assert a1.abort_info.reason == "by hand"
    assert a1.attempts[-1].phase == phase_pb2.ACTION_PHASE_SUCCEEDED
    assert oss.run(name)["phase"] == "FAILED"  # the run itself is left as it was


def test_18_union_abort_action_of_a_child_changes_nothing(sandbox_factory):
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.01, profile=UNION)
    [name] = sb.launch("pipe")
    sb.wait_for(name)
    with RunServiceClientSync(sb.endpoint) as c:
        _abort_action(c, sb, name, "a1")
        a1 = action_details(c, sb, name, "a1")

    assert a1.status.phase == phase_pb2.ACTION_PHASE_SUCCEEDED


# -- 19. an action's attempts come from its first 500 events (issue 26.9) ----------------------------


def test_19_oss_a_failed_action_with_its_terminal_event_past_500_has_an_empty_error_forever(sandbox_factory):
    chatty = {"behaviour": ["fail"], "error": {"kind": "USER", "code": "E", "message": "boom"}}
    workload = {
        "tasks": {"chatty": {**chatty, "status_events": 498}, "quiet": {**chatty, "status_events": 497}}
    }
    sb = sandbox_factory(workload=workload, time_scale=0.01, profile=OSS.with_error_delay(0))
    [cut] = sb.launch("chatty")
    [kept] = sb.launch("quiet")
    sb.wait_idle()
    with RunServiceClientSync(sb.endpoint) as c:
        cut_details = action_details(c, sb, cut)
        kept_details = action_details(c, sb, kept)
        run_details = c.get_run_details(rs.GetRunDetailsRequest(run_id=run_id(sb, cut))).details

    assert cut_details.status.phase == phase_pb2.ACTION_PHASE_FAILED
    assert cut_details.HasField("error_info") and cut_details.error_info.ByteSize() == 0
    assert cut_details.attempts[-1].phase == phase_pb2.ACTION_PHASE_RUNNING
    assert run_details.action.HasField("error_info") and run_details.action.error_info.message == ""
    assert kept_details.error_info.message == "boom"
