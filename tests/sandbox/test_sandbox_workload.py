"""The workload file: what it accepts, how a bad one is refused (file:line:column, YAML path,
what is wrong), durations, behaviour per lineage, and literals round-tripping."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rerund.errors import WorkloadError
from rerund.sandbox import literals
from rerund.sandbox.workload import TaskDef, load_workload, parse_duration, workload_from_dict

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path, text):
    path = tmp_path / "workload.yaml"
    path.write_text(text)
    return path


def test_the_demo_workload_is_valid():
    w = load_workload(REPO / "policies/demo/workload.yaml")

    assert (w.project, w.domain) == ("demo", "development")
    assert w.tasks["etl.pipeline"].children == ("etl.extract", "etl.load")
    assert w.tasks["train.fit"].behaviour == ("fail", "fail", "succeed")
    assert [(r.task, r.count) for r in w.runs][:2] == [("train.fit", 3), ("etl.pipeline", 2)]
    assert w.arrivals[0].every == 20 and w.arrivals[0].for_ == 600


def test_the_issue_example_shape_is_valid(tmp_path):
    path = write(
        tmp_path,
        """\
project: demo
domain: development
tasks:
  train.fit:
    duration: 0.5s
    behaviour: [fail, fail, succeed]
    error: {kind: SYSTEM, code: ConnectionResetError, message: "ConnectionResetError: peer reset"}
    outputs: {accuracy: 0.93}
  etl.pipeline:
    children: [etl.extract, etl.load]
  etl.extract: {behaviour: [succeed]}
  etl.load:
    behaviour: [fail, succeed]
    error: {kind: USER, code: ValueError, message: "ValueError: bad row 17"}
runs:
  - {task: train.fit, count: 3, labels: {team: ml}, inputs: {lr: 0.1}}
  - {task: etl.pipeline, count: 2}
arrivals:
  - {task: train.fit, every: 2s, for: 60s}
""",
    )

    w = load_workload(path)

    assert w.tasks["train.fit"].duration == 0.5
    assert w.tasks["etl.load"].error.kind == "USER"
    assert w.runs[0].labels == {"team": "ml"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "tasks:\n  t:\n    behaviour: [fail, explode]\n",
            r":3:23: tasks\.t\.behaviour\[1\]: Input should be 'succeed', 'fail', 'timeout' or 'hang'",
        ),
        ("tasks:\n  t:\n    duraton: 1s\n", r":3:14: tasks\.t\.duraton: unknown field 'duraton'"),
        (
            "tasks:\n  t:\n    duration: soon\n",
            r":3:15: tasks\.t\.duration: duration 'soon' is not a duration; use e\.g\. 50ms, 0\.5s, 2m, 1h",
        ),
        (
            "tasks:\n  t: {children: [ghost]}\n",
            r":2:18: tasks\.t\.children\[0\]: unknown task 'ghost'; known tasks: \['t'\]",
        ),
        (
            "tasks:\n  t: {}\nruns:\n  - {task: nope}\n",
            r":4:12: runs\[0\]\.task: unknown task 'nope'; known tasks: \['t'\]",
        ),
        (
            "tasks:\n  a: {children: [b]}\n  b: {children: [a]}\n",
            r"tasks\.a\.children: children form a cycle: a -> b -> a",
        ),
        (
            "tasks:\n  t: {}\narrivals:\n  - {task: t, every: 0s}\n",
            r":4:22: arrivals\[0\]\.every: every must be a positive duration, e\.g\. 2s",
        ),
        (
            "tasks:\n  t: {error: {kind: FATAL}}\n",
            r":2:21: tasks\.t\.error\.kind: Input should be 'USER' or 'SYSTEM'",
        ),
        (
            "tasks:\n  t: {outputs: {loss: {random: [2, 1]}}}\n",
            r":2:16: tasks\.t\.outputs: output 'loss': random needs \[low, high\] numbers with low <= high",
        ),
        ("tasks: [1, 2]\n", r":1:8: tasks: Input should be a valid dictionary"),
        ("tasks:\n  t: {behaviour: []}\n", r"behaviour must list at least one of succeed, fail, timeout"),
        ("- just\n- a list\n", r":1:1: a workload file must be a mapping with tasks:, runs:, arrivals:"),
        ("tasks: {t: [unclosed\n", r":2:1: invalid YAML"),
    ],
    ids=[
        "unknown-behaviour",
        "misspelt-field",
        "bad-duration",
        "unknown-child",
        "unknown-run-task",
        "child-cycle",
        "zero-arrival-interval",
        "unknown-error-kind",
        "random-bounds-reversed",
        "tasks-not-a-mapping",
        "empty-behaviour",
        "not-a-mapping",
        "broken-yaml",
    ],
)
def test_a_bad_workload_file_is_refused_with_file_line_and_reason(tmp_path, text, problem):
    path = write(tmp_path, text)

    with pytest.raises(WorkloadError, match=problem) as info:
        load_workload(path)

    assert str(info.value).startswith(f"workload {path} is invalid; the sandbox did not start\n{path}:")


def test_every_problem_is_reported_not_just_the_first(tmp_path):
    path = write(tmp_path, "tasks:\n  a: {duraton: 1}\n  b: {behaviour: [nope]}\n")

    with pytest.raises(WorkloadError) as info:
        load_workload(path)

    assert [(p.line, p.path) for p in info.value.problems] == [
        (2, "tasks.a.duraton"),
        (3, "tasks.b.behaviour[0]"),
    ]


def test_a_missing_workload_file_is_refused_with_its_path(tmp_path):
    with pytest.raises(
        WorkloadError, match=r"missing\.yaml:1:1: cannot read the workload file: No such file"
    ):
        load_workload(tmp_path / "missing.yaml")


def test_a_workload_given_as_data_is_validated_the_same_way():
    with pytest.raises(WorkloadError, match=r"<workload>:1:1: runs\[0\]\.task: unknown task 'x'"):
        workload_from_dict({"tasks": {}, "runs": [{"task": "x"}]})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("50ms", 0.05), ("0.5s", 0.5), ("2m", 120.0), ("1h", 3600.0), ("3", 3.0), (1.5, 1.5), (0, 0.0)],
    ids=["ms", "s", "m", "h", "bare-string", "float", "zero"],
)
def test_durations_parse_to_seconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["fast", "-1s", "1d", True, -2, None], ids=str)
def test_bad_durations_say_what_is_accepted(bad):
    with pytest.raises(ValueError, match=r"use e\.g\. 50ms, 0\.5s, 2m, 1h"):
        parse_duration(bad)


@given(st.lists(st.sampled_from(["succeed", "fail", "timeout"]), min_size=1, max_size=5), st.integers(1, 50))
def test_the_kth_execution_takes_the_kth_behaviour_and_the_last_repeats(behaviour, k):
    task = TaskDef(behaviour=behaviour)

    expected = behaviour[k - 1] if k <= len(behaviour) else behaviour[-1]
    assert task.outcome(k) == expected


plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**62), 2**62)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(plain)
def test_plain_values_round_trip_through_literals(value):
    assert literals.from_literal(literals.to_literal(value)) == value


def test_unsupported_values_are_refused_with_their_type():
    with pytest.raises(TypeError, match=r"unsupported value .* of type set"):
        literals.to_literal({1, 2})
