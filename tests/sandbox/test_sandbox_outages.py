"""Outages in the sandbox: a workload's ``outages:`` and ``POST /_sandbox/outages`` make every
execution of a matching task that starts inside the window fail with the outage's error, read
here through the real flyte SDK over HTTP; a bad outage is refused with a located problem."""

from __future__ import annotations

import re
import textwrap
import time
from datetime import UTC, datetime

import flyte
import flyte.remote as remote
import httpx
import pytest

from rerund.errors import WorkloadError
from rerund.sandbox.testing import flyte_init
from rerund.sandbox.workload import load_workload

pytestmark = pytest.mark.e2e

SLOWDOWN = {"kind": "SYSTEM", "code": "SlowDown", "message": "503 SlowDown: Please reduce your request rate."}
WORKLOAD = {
    "tasks": {
        "etl.extract": {"duration": "1s"},
        "etl.load": {"behaviour": ["fail", "succeed"]},
        "etl.pipeline": {"children": ["etl.extract", "etl.load"]},
        "train.fit": {},
    },
    "outages": [{"tasks": ["etl.*"], "after": "0s", "for": "40s", "error": SLOWDOWN}],
    "runs": [{"task": "etl.load"}, {"task": "etl.pipeline"}, {"task": "train.fit"}],
}


def _error(name: str) -> tuple[str, str, str] | None:
    failure = remote.Run.get(name).first_failure()
    if failure is None:
        return None
    info = failure.error_info
    kind = "SYSTEM" if info.kind == info.KIND_SYSTEM else "USER"
    return kind, info.code, info.message


def _wait_until(when: str) -> None:
    end = datetime.fromisoformat(when.replace("Z", "+00:00"))
    while datetime.now(UTC) <= end:
        time.sleep(0.05)


@pytest.fixture
def sb(sandbox_factory):
    handle = sandbox_factory(workload=WORKLOAD, time_scale=0.05)  # the 40 s outage lasts 2 s
    flyte_init(handle)
    return handle


def test_every_execution_of_a_matching_task_that_starts_inside_the_outage_fails_with_its_error(sb):
    sb.wait_idle()
    load, pipeline, fit = (r["name"] for r in sb.runs())

    assert _error(load) == ("SYSTEM", "SlowDown", SLOWDOWN["message"])
    assert _error(pipeline) == ("SYSTEM", "SlowDown", SLOWDOWN["message"])  # its child etl.extract
    assert sb.run(fit)["phase"] == "SUCCEEDED"  # not a matching task

    [outage] = httpx.get(f"{sb.endpoint}/_sandbox/outages").json()
    assert outage["tasks"] == ["etl.*"] and outage["error"] == SLOWDOWN
    _wait_until(outage["ends_at"])
    # After the window a task behaves as its own behaviour says, and the outage's failures were
    # not its executions: etl.load ([fail, succeed]) fails its first rerun, succeeds the second.
    first = flyte.with_runcontext(name=f"{load[:10]}-retry-1").rerun(load)
    first.wait(quiet=True)
    second = flyte.with_runcontext(name=f"{load[:10]}-retry-2").rerun(first.name)
    second.wait(quiet=True)
    assert _error(first.name) == ("SYSTEM", "RuntimeError", "RuntimeError: task failed")
    assert sb.run(second.name)["phase"] == "SUCCEEDED"


def test_an_outage_posted_at_runtime_fails_the_executions_that_start_inside_it(sandbox_factory):
    sb = sandbox_factory(workload={"tasks": {"train.fit": {}, "train.eval": {}}}, time_scale=0.05)
    flyte_init(sb)
    error = {"kind": "USER", "code": "OOMKilled", "message": "[primary] terminated with exit code (137)."}

    resp = httpx.post(
        f"{sb.endpoint}/_sandbox/outages", json={"tasks": ["train.fit"], "for": "30s", "error": error}
    )

    assert resp.status_code == 200, resp.text
    posted = resp.json()
    assert posted["tasks"] == ["train.fit"] and posted["error"] == error
    [inside] = sb.launch("train.fit")
    [other] = sb.launch("train.eval")
    sb.wait_for(inside), sb.wait_for(other)
    assert _error(inside) == ("USER", "OOMKilled", error["message"])
    assert sb.run(other)["phase"] == "SUCCEEDED"
    _wait_until(posted["ends_at"])
    [after] = sb.launch("train.fit")
    assert sb.wait_for(after)["phase"] == "SUCCEEDED"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"tasks": ["train.*"]}, r"^for: Field required"),
        ({"tasks": [], "for": "10s"}, r"^tasks: list at least one task pattern, e\.g\. \['etl\.\*'\]"),
        ({"tasks": ["train.*"], "for": "0s"}, r"^for: an outage lasts a positive duration, e\.g\. 40s"),
        ({"tasks": ["train.*"], "for": "soon"}, r"^for: duration 'soon' is not a duration"),
        (
            {"tasks": ["nope.*"], "for": "10s"},
            r"^tasks\[0\]: pattern 'nope\.\*' matches no task; known tasks: \['train\.fit'\]",
        ),
        ({"tasks": ["train.*"], "for": "10s", "eror": {}}, r"^eror: unknown field 'eror'"),
        (
            {"tasks": ["train.*"], "for": "10s", "error": {"kind": "BAD"}},
            r"^error\.kind: Input should be 'USER' or 'SYSTEM'",
        ),
    ],
    ids=["no-for", "no-tasks", "zero-for", "bad-duration", "unknown-task", "unknown-key", "bad-kind"],
)  # fmt: skip
def test_admin_outages_refuses_a_bad_outage_saying_what_is_wrong(sandbox_factory, body, message):
    sb = sandbox_factory(workload={"tasks": {"train.fit": {}}})

    resp = httpx.post(f"{sb.endpoint}/_sandbox/outages", json=body)

    assert resp.status_code == 400
    assert re.search(message, resp.json()["error"]), resp.json()["error"]
    assert httpx.get(f"{sb.endpoint}/_sandbox/outages").json() == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "tasks: {t: {}}\noutages: [{tasks: ['u.*'], for: 40s}]\n",
            "2:20: outages[0].tasks[0]: pattern 'u.*' matches no task; known tasks: ['t']",
        ),
        ("tasks: {t: {}}\noutages: [{tasks: [t]}]\n", "2:11: outages[0].for: Field required"),
        (
            "tasks: {t: {}}\noutages: [{tasks: [t], for: 0s}]\n",
            "2:29: outages[0].for: an outage lasts a positive duration, e.g. 40s",
        ),
        (
            "tasks: {t: {}}\noutages: [{tasks: [t], for: 1s, after: -1s}]\n",
            "2:40: outages[0].after: duration '-1s' is not a duration",
        ),
        (
            "tasks: {t: {}}\noutages: [{tasks: [], for: 1s}]\n",
            "2:19: outages[0].tasks: list at least one task",
        ),
        (
            "tasks: {t: {}}\noutages: [{tasks: [t], for: 1s, error: {kind: USER, cod: X}}]\n",
            "2:58: outages[0].error.cod: unknown field 'cod'",
        ),
    ],
    ids=["unknown-task", "no-for", "zero-for", "negative-after", "no-tasks", "bad-error-key"],
)
def test_a_bad_outages_entry_is_refused_located(tmp_path, text, problem):
    path = tmp_path / "workload.yaml"
    path.write_text(textwrap.dedent(text))

    with pytest.raises(WorkloadError) as caught:
        load_workload(path)

    assert any(str(p).startswith(f"{path}:{problem}") for p in caught.value.problems), [
        str(p) for p in caught.value.problems
    ]


def test_a_test_starts_an_outage_through_the_handle_later_than_now(sandbox_factory):
    sb = sandbox_factory(workload={"tasks": {"train.fit": {}}}, time_scale=0.05)
    flyte_init(sb)

    placed = sb.outage(["train.*"], "40s", after="20s", error=SLOWDOWN)  # in 1 s, for 2 s
    [before] = sb.launch("train.fit")  # starts before the window: its own behaviour
    assert sb.wait_for(before)["phase"] == "SUCCEEDED"
    _wait_until(placed["starts_at"])
    [inside] = sb.launch("train.fit")

    sb.wait_for(inside)
    assert _error(inside) == ("SYSTEM", "SlowDown", SLOWDOWN["message"])
    assert httpx.get(f"{sb.endpoint}/_sandbox/outages").json() == [placed]
