"""Fidelity of the RunService over the wire (raw Connect client, as the SDK sends it): names,
identifiers, errors, ListRuns/ListActions filters including the SDK's single-phase quirk,
sorting and token paging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from flyteidl2.common import identifier_pb2, list_pb2, phase_pb2
from flyteidl2.common import run_pb2 as common_run_pb2
from flyteidl2.task import run_pb2
from flyteidl2.workflow import run_service_pb2 as rs
from flyteidl2.workflow.run_service_connect import RunServiceClientSync

import run_service_wire as wire
from rerund.sandbox.protos import task_spec_for
from rerund.sandbox.workload import TaskDef
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
        "slow": {"duration": "1h"},
        "pipe": {"children": ["ok", "bad"]},
    }
}


# One page of 100 runs unless a test says otherwise.
list_runs = partial(wire.list_runs, limit=100)


@pytest.fixture
def sb(sandbox_factory):
    return sandbox_factory(workload=WORKLOAD, time_scale=0.01)


@pytest.fixture
def client(sb):
    with RunServiceClientSync(sb.endpoint) as c:
        yield c


@pytest.mark.parametrize(
    "name",
    ["a", "retry-1", "r" + "x" * 29, "abc-123-def"],
    ids=["one-letter", "with-dash", "thirty-chars", "letters-digits-dashes"],
)
def test_valid_run_names_are_accepted(sb, client, name):
    resp = create(sb, client, name)

    assert resp.run.action.id.run.name == name
    assert resp.run.action.status.phase == phase_pb2.ACTION_PHASE_QUEUED


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("a" * 31, "has 31 characters"),
        ("Upper", "is not a DNS-1035 label"),
        ("1abc", "is not a DNS-1035 label"),
        ("ends-", "is not a DNS-1035 label"),
        ("under_score", "is not a DNS-1035 label"),
    ],
    ids=["31-chars", "uppercase", "starts-with-digit", "ends-with-dash", "underscore"],
)
def test_invalid_run_names_answer_invalid_argument(sb, client, name, why):
    with pytest.raises(ConnectError, match=why) as info:
        create(sb, client, name)

    assert info.value.code == Code.INVALID_ARGUMENT
    assert "DNS-1035" in info.value.message


@pytest.mark.parametrize("missing", ["org", "project", "domain"])
def test_create_run_needs_a_non_empty_org_project_and_domain(sb, client, missing):
    with pytest.raises(ConnectError, match=f"CreateRun needs a non-empty {missing}") as info:
        create(sb, client, "fine", **{missing: ""})

    assert info.value.code == Code.INVALID_ARGUMENT


def test_duplicate_run_name_answers_already_exists(sb, client):
    create(sb, client, "twice")

    with pytest.raises(ConnectError, match="run 'twice' already exists in sandbox/demo/development") as info:
        create(sb, client, "twice")

    assert info.value.code == Code.ALREADY_EXISTS


def test_create_run_without_a_name_generates_a_flyte_like_name(sb, client):
    spec = task_spec_for("ok", TaskDef(), org=sb.org, project=sb.project, domain=sb.domain)
    pid = identifier_pb2.ProjectIdentifier(organization=sb.org, name=sb.project, domain=sb.domain)

    resp = client.create_run(rs.CreateRunRequest(project_id=pid, task_spec=spec))

    name = resp.run.action.id.run.name
    assert len(name) == 20 and name.startswith("r") and name.isalnum()


def test_rerun_of_an_unknown_run_answers_not_found(sb, client):
    spec = task_spec_for("ok", TaskDef(), org=sb.org, project=sb.project, domain=sb.domain)
    run_spec = run_pb2.RunSpec(
        relation=common_run_pb2.Relation(
            related_to=run_id(sb, "ghost"), relation_type=common_run_pb2.RELATION_TYPE_RERUN
        )
    )

    with pytest.raises(ConnectError, match="related run sandbox/demo/development/ghost not found") as info:
        client.create_run(rs.CreateRunRequest(run_id=run_id(sb, "child"), task_spec=spec, run_spec=run_spec))

    assert info.value.code == Code.NOT_FOUND


def test_unknown_run_answers_not_found(sb, client):
    with pytest.raises(ConnectError, match="run sandbox/demo/development/nope not found") as info:
        client.get_run_details(rs.GetRunDetailsRequest(run_id=run_id(sb, "nope")))

    assert info.value.code == Code.NOT_FOUND


def test_unknown_action_answers_not_found_and_lists_the_actions(sb, client):
    [name] = sb.launch("ok")

    with pytest.raises(ConnectError, match=r"action 'a7' not found in run .*; it has a0") as info:
        client.get_action_details(
            rs.GetActionDetailsRequest(
                action_id=identifier_pb2.ActionIdentifier(run=run_id(sb, name), name="a7")
            )
        )

    assert info.value.code == Code.NOT_FOUND


def test_failed_child_action_carries_error_info_and_the_root_does_in_action_details(sb, client):
    [name] = sb.launch("pipe")
    sb.wait_idle()

    child = client.get_action_details(
        rs.GetActionDetailsRequest(action_id=identifier_pb2.ActionIdentifier(run=run_id(sb, name), name="a2"))
    ).details
    details = client.get_run_details(rs.GetRunDetailsRequest(run_id=run_id(sb, name))).details

    assert child.metadata.parent == "a0"
    assert (child.error_info.kind, child.error_info.code, child.error_info.message) == (
        child.error_info.KIND_USER,
        "ValueError",
        "ValueError: x",
    )
    assert details.action.status.phase == phase_pb2.ACTION_PHASE_FAILED
    assert not details.action.HasField("error_info")  # like the real backend


def test_single_phase_filter_quirk_finds_recovered_runs(sb, client):
    [name] = sb.launch("pipe")
    sb.wait_idle()
    spec = client.get_run_details(rs.GetRunDetailsRequest(run_id=run_id(sb, name))).details.action.task
    run_spec = run_pb2.RunSpec(
        relation=common_run_pb2.Relation(
            related_to=run_id(sb, name), relation_type=common_run_pb2.RELATION_TYPE_RECOVER
        )
    )
    client.create_run(rs.CreateRunRequest(run_id=run_id(sb, "recovered"), task_spec=spec, run_spec=run_spec))
    sb.wait_idle()

    # The SDK passes the phase string itself as `values`: "10" arrives as ["1", "0"].
    actions = client.list_actions(
        rs.ListActionsRequest(
            run_id=run_id(sb, "recovered"),
            request=list_pb2.ListRequest(filters=[F(function=F.EQUAL, field="phase", values="10")]),
        )
    )

    assert [a.id.name for a in actions.actions] == ["a1"]


@pytest.mark.parametrize(
    ("make_filter", "expected"),
    [
        (lambda: F(function=F.EQUAL, field="phase", values="6"), {"bad-1", "bad-2"}),
        (lambda: F(function=F.VALUE_IN, field="phase", values=["5", "6"]), {"ok-1", "bad-1", "bad-2"}),
        (lambda: F(function=F.EQUAL, field="phase", values=["FAILED"]), {"bad-1", "bad-2"}),
        (lambda: F(function=F.NOT_EQUAL, field="phase", values=["6"]), {"ok-1", "slow-1"}),
        (lambda: F(function=F.EQUAL, field="labels.team", values=["ml"]), {"ok-1", "bad-1"}),
        (lambda: F(function=F.EXISTS, field="labels.team"), {"ok-1", "bad-1", "bad-2"}),
        (lambda: F(function=F.EQUAL, field="task_name", values=["bad"]), {"bad-1", "bad-2"}),
        (
            lambda: F(function=F.EQUAL, field="created_by", values=["sandbox-workload"]),
            {"ok-1", "bad-1", "bad-2", "slow-1"},
        ),
    ],
    ids=[
        "phase-equal-quirk",
        "phase-value-in",
        "phase-by-name",
        "phase-not-equal",
        "label-equal",
        "label-exists",
        "task-name",
        "created-by",
    ],
)
def test_list_runs_filters(sb, client, make_filter, expected):
    sb.launch("ok", name="ok-1", labels={"team": "ml"})
    sb.launch("bad", name="bad-1", labels={"team": "ml"})
    sb.launch("bad", name="bad-2", labels={"team": "data"})
    sb.launch("slow", name="slow-1")
    sb.wait_for("ok-1")
    sb.wait_for("bad-1")
    sb.wait_for("bad-2")

    assert set(names(list_runs(sb, client, make_filter()))) == expected


def test_list_runs_time_filters_select_by_created_and_updated_at(sb, client):
    sb.launch("ok", name="early")
    sb.wait_idle()
    middle = datetime.now(UTC)
    sb.launch("ok", name="late")
    sb.wait_idle()

    created_after = list_runs(
        sb, client, F(function=F.GREATER_THAN_OR_EQUAL, field="created_at", values=[middle.isoformat()])
    )
    created_before = list_runs(
        sb, client, F(function=F.LESS_THAN, field="created_at", values=[middle.isoformat()])
    )
    updated_after = list_runs(
        sb, client, F(function=F.GREATER_THAN_OR_EQUAL, field="updated_at", values=[middle.isoformat()])
    )
    future = (middle + timedelta(hours=1)).isoformat()
    none_after = list_runs(
        sb, client, F(function=F.GREATER_THAN_OR_EQUAL, field="updated_at", values=[future])
    )

    assert names(created_after) == ["late"]
    assert names(created_before) == ["early"]
    assert names(updated_after) == ["late"]
    assert names(none_after) == []


@pytest.mark.parametrize(
    ("bad_filter", "message"),
    [
        (F(function=F.EQUAL, field="colour", values=["red"]), "cannot filter on field 'colour'"),
        (F(function=F.EQUAL, field="phase", values=["42"]), "unknown phase '42'"),
        (
            F(function=F.GREATER_THAN, field="phase", values=["6"]),
            "filter phase GREATER_THAN is not supported",
        ),
        (
            F(function=F.GREATER_THAN, field="created_at", values=["yesterday"]),
            "time 'yesterday' is not ISO-8601",
        ),
    ],
    ids=["unknown-field", "unknown-phase", "phase-comparison", "bad-time"],
)
def test_unsupported_filters_answer_invalid_argument(sb, client, bad_filter, message):
    with pytest.raises(ConnectError, match=message) as info:
        list_runs(sb, client, bad_filter)

    assert info.value.code == Code.INVALID_ARGUMENT


def test_list_runs_sorts_by_created_at_both_ways_and_rejects_unknown_keys(sb, client):
    for name in ("first", "second", "third"):
        sb.launch("ok", name=name)
    sb.wait_idle()

    ascending = list_runs(sb, client, sort=list_pb2.Sort(key="created_at", direction=list_pb2.Sort.ASCENDING))
    descending = list_runs(
        sb, client, sort=list_pb2.Sort(key="created_at", direction=list_pb2.Sort.DESCENDING)
    )
    by_name = list_runs(sb, client, sort=list_pb2.Sort(key="name", direction=list_pb2.Sort.ASCENDING))

    assert names(ascending) == ["first", "second", "third"]
    assert names(descending) == ["third", "second", "first"]
    assert names(by_name) == ["first", "second", "third"]
    with pytest.raises(ConnectError, match="cannot sort by 'colour'"):
        list_runs(sb, client, sort=list_pb2.Sort(key="colour"))


def test_token_paging_returns_every_run_exactly_once(sb, client):
    launched = set(sb.launch("bad", count=25))
    sb.wait_idle()

    seen, token, pages = [], "", 0
    while True:
        resp = list_runs(sb, client, F(function=F.EQUAL, field="phase", values="6"), limit=10, token=token)
        seen += names(resp)
        pages += 1
        token = resp.token
        if not token:
            break

    assert pages == 3
    assert sorted(seen) == sorted(launched)


def test_a_page_token_from_another_server_answers_invalid_argument(sb, client):
    with pytest.raises(ConnectError, match="page token 'garbage' is not one this sandbox issued") as info:
        list_runs(sb, client, token="garbage")

    assert info.value.code == Code.INVALID_ARGUMENT


def test_run_spec_labels_envs_and_relation_are_stored_and_returned(sb, client):
    [src] = sb.launch("bad")
    sb.wait_idle()
    spec = task_spec_for("bad", TaskDef(), org=sb.org, project=sb.project, domain=sb.domain)
    run_spec = run_pb2.RunSpec(
        labels=run_pb2.Labels(values={"rerund-attempt": "1"}),
        relation=common_run_pb2.Relation(
            related_to=run_id(sb, src), relation_type=common_run_pb2.RELATION_TYPE_RERUN
        ),
    )
    run_spec.envs.values.add(key="FLYTE_RETRY", value="true")
    client.create_run(rs.CreateRunRequest(run_id=run_id(sb, "again"), task_spec=spec, run_spec=run_spec))

    details = client.get_run_details(rs.GetRunDetailsRequest(run_id=run_id(sb, "again"))).details

    assert dict(details.run_spec.labels.values) == {"rerund-attempt": "1"}
    assert [(kv.key, kv.value) for kv in details.run_spec.envs.values] == [("FLYTE_RETRY", "true")]
    assert details.action.metadata.relation.related_to.name == src
    assert details.action.metadata.relation.relation_type == common_run_pb2.RELATION_TYPE_RERUN


def test_abort_of_an_unknown_run_answers_not_found(sb, client):
    with pytest.raises(ConnectError, match="not found") as info:
        client.abort_run(rs.AbortRunRequest(run_id=run_id(sb, "ghost")))

    assert info.value.code == Code.NOT_FOUND
