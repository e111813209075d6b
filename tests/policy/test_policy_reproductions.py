# ruff: noqa: E501  (exact user-visible messages are kept on one line to be greppable)
"""``reproductions:`` in policy files: compiled into checks, or every problem located as
file:line:col: yaml.path: message."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rerund.core.compare import Tolerance
from rerund.core.repro import CompareSettings, ReproSource
from rerund.errors import PolicyError
from rerund.policy import load_policies
from rerund.policy.schema import policy_schema

HEADER = "apiVersion: rerund/v1\nreproductions:\n"
GOOD = """\
  - name: nightly-train
    schedule: "0 3 * * *"
    source: {run: ab12cd34ef56gh78ij90}
"""


def load(tmp_path, body: str):
    path = tmp_path / "repro.yaml"
    path.write_text(HEADER + body)
    return path, load_policies([path])


def test_a_full_check_compiles_into_the_core_value(tmp_path):
    path, policies = load(
        tmp_path,
        """\
  - name: nightly-train
    description: the model still trains the same
    schedule: "0 3 * * 1-5"
    timezone: Europe/Paris
    source: {task: train.fit, phase: SUCCEEDED, labels: {team: ml}, project: ml, domain: production}
    compare:
      phase: true
      outputs: tolerance
      tolerance: {rel: 1e-6, abs: 0}
      ignore: [timestamp, metrics.wall_time]
    env: {REPRO_CHECK: "1"}
    labels: {purpose: repro}
    timeout: 2h
    misfire_grace: 6h
""",
    )

    [check] = policies.reproductions
    assert len(policies) == 0
    assert (check.name, check.schedule, check.timezone) == ("nightly-train", "0 3 * * 1-5", "Europe/Paris")
    assert check.source == ReproSource(
        task="train.fit", phase="SUCCEEDED", labels={"team": "ml"}, project="ml", domain="production"
    )
    assert check.compare == CompareSettings(
        phase=True,
        outputs="tolerance",
        tolerance=Tolerance(rel=1e-6, abs=0),
        ignore=("timestamp", "metrics.wall_time"),
    )
    assert (check.env, check.labels) == ({"REPRO_CHECK": "1"}, {"purpose": "repro"})
    assert (check.timeout, check.misfire_grace) == (timedelta(hours=2), timedelta(hours=6))
    assert check.origin == f"{path}:3:5"


def test_defaults_compare_phase_and_outputs_exactly_within_two_hours(tmp_path):
    _, policies = load(tmp_path, GOOD)

    [check] = policies.reproductions
    assert check.source == ReproSource(run="ab12cd34ef56gh78ij90")
    assert check.compare == CompareSettings(phase=True, outputs="exact", tolerance=None, ignore=())
    assert (check.timezone, check.timeout, check.misfire_grace) == ("UTC", timedelta(hours=2), None)


BAD = {
    "bad cron": (
        '  - name: a\n    schedule: "0 25 * * *"\n    source: {run: r}\n',
        [
            "4:15: reproductions[0].schedule: invalid cron expression '0 25 * * *': the last value (25) is higher than the maximum value (23); write five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * *' (03:00 daily)"
        ],
    ),
    "cron with too few fields": (
        '  - name: a\n    schedule: "@daily"\n    source: {run: r}\n',
        [
            "4:15: reproductions[0].schedule: cron expression '@daily' has 1 fields; write five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * *' (03:00 daily)"
        ],
    ),
    "unknown timezone": (
        '  - name: a\n    schedule: "0 3 * * *"\n    timezone: CET+1\n    source: {run: r}\n',
        [
            "5:15: reproductions[0].timezone: unknown timezone 'CET+1'; use an IANA name such as UTC, Europe/Paris or America/New_York"
        ],
    ),
    "unknown keys": (
        '  - name: a\n    schedule: "0 3 * * *"\n    source: {run: r, tsk: x}\n    compare: {output: exact}\n',
        [
            "5:22: reproductions[0].source.tsk: unknown key 'tsk'; did you mean 'task'? allowed keys: run, task, phase, labels, project, domain",
            "6:15: reproductions[0].compare.output: unknown key 'output'; did you mean 'outputs'? allowed keys: phase, outputs, tolerance, ignore",
        ],
    ),
    "bad tolerance": (
        '  - name: a\n    schedule: "0 3 * * *"\n    source: {run: r}\n    compare: {outputs: tolerance, tolerance: {rel: -0.1, abs: lots}}\n',
        [
            "6:52: reproductions[0].compare.tolerance.rel: must be >= 0.0, got -0.1",
            "6:63: reproductions[0].compare.tolerance.abs: expected a number, got 'lots'",
        ],
    ),
    "outputs tolerance without tolerance": (
        '  - name: a\n    schedule: "0 3 * * *"\n    source: {run: r}\n    compare: {outputs: tolerance}\n',
        [
            "6:24: reproductions[0].compare.outputs: outputs: tolerance needs a tolerance, e.g. tolerance: {rel: 1e-6, abs: 0}"
        ],
    ),
    "tolerance without outputs tolerance": (
        '  - name: a\n    schedule: "0 3 * * *"\n    source: {run: r}\n    compare: {tolerance: {rel: 0.1}}\n',
        [
            "6:26: reproductions[0].compare.tolerance: tolerance is only used with outputs: tolerance, but outputs is exact; set outputs: tolerance or remove tolerance"
        ],
    ),
    "bad outputs mode": (
        '  - name: a\n    schedule: "0 3 * * *"\n    source: {run: r}\n    compare: {outputs: approx}\n',
        [
            "6:24: reproductions[0].compare.outputs: 'approx' is not allowed; use 'exact', 'tolerance' or 'none'"
        ],
    ),
    "duplicate names": (
        GOOD + GOOD,
        [
            "6:11: reproductions[1].name: duplicate check name 'nightly-train', first defined at {file}:3:5; check names must be unique"
        ],
    ),
    "source with both run and task": (
        '  - name: a\n    schedule: "0 3 * * *"\n    source: {run: r, task: t}\n',
        [
            "5:13: reproductions[0].source: source names both of run and task; give exactly one: {run: NAME} for a fixed reference run, or {task: NAME} for the latest run of a task"
        ],
    ),
    "source with neither": (
        '  - name: a\n    schedule: "0 3 * * *"\n    source: {labels: {team: ml}}\n',
        [
            "5:13: reproductions[0].source: source names neither of run and task; give exactly one: {run: NAME} for a fixed reference run, or {task: NAME} for the latest run of a task"
        ],
    ),
    "phase with a fixed run": (
        '  - name: a\n    schedule: "0 3 * * *"\n    source: {run: r, phase: FAILED}\n',
        [
            "5:29: reproductions[0].source.phase: phase only selects among runs of a task; with a fixed run it does nothing: remove it, or use task: instead of run:"
        ],
    ),
    "bad phase": (
        '  - name: a\n    schedule: "0 3 * * *"\n    source: {task: t, phase: RUNNING}\n',
        [
            "5:30: reproductions[0].source.phase: 'RUNNING' is not allowed; use 'SUCCEEDED', 'FAILED', 'TIMED_OUT' or 'ABORTED'"
        ],
    ),
    "zero timeout and a bad name": (
        '  - name: Nightly\n    schedule: "0 3 * * *"\n    source: {run: r}\n    timeout: 0s\n',
        [
            "3:11: reproductions[0].name: invalid check name 'Nightly': use 1-63 lowercase letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            "6:14: reproductions[0].timeout: must be a positive duration, got 0s; write e.g. 2h",
        ],
    ),
    "missing schedule and source": (
        "  - name: a\n",
        [
            "3:5: reproductions[0].schedule: missing required key 'schedule'",
            "3:5: reproductions[0].source: missing required key 'source'",
        ],
    ),
    "reserved label": (
        '  - name: a\n    schedule: "0 3 * * *"\n    source: {run: r}\n    labels: {rerund-repro: x}\n',
        [
            "6:13: reproductions[0].labels: label 'rerund-repro' is set by rerund itself; choose a key not starting with 'rerund-'"
        ],
    ),
}


@pytest.mark.parametrize(("body", "expected"), BAD.values(), ids=list(BAD))
def test_a_bad_reproduction_entry_is_reported_with_file_line_column_and_path(tmp_path, body, expected):
    path = tmp_path / "repro.yaml"
    path.write_text(HEADER + body)

    with pytest.raises(PolicyError) as caught:
        load_policies([path])

    assert [str(p) for p in caught.value.problems] == [
        f"{path}:" + e.replace("{file}", str(path)) for e in expected
    ]


def test_check_names_are_unique_across_files(tmp_path):
    (tmp_path / "a.yaml").write_text(HEADER + GOOD)
    (tmp_path / "b.yaml").write_text(HEADER + GOOD)

    with pytest.raises(PolicyError) as caught:
        load_policies([tmp_path])

    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'b.yaml'}:3:11: reproductions[0].name: duplicate check name 'nightly-train', first defined at {tmp_path / 'a.yaml'}:3:5; check names must be unique"
    ]


def test_the_schema_describes_reproductions():
    schema = policy_schema()
    spec = schema["$defs"]["ReproductionSpec"]

    assert schema["properties"]["reproductions"]["items"] == {"$ref": "#/$defs/ReproductionSpec"}
    assert spec["required"] == ["name", "schedule", "source"]
    assert spec["additionalProperties"] is False
    assert set(spec["properties"]) == {
        "name", "schedule", "timezone", "source", "compare", "env", "labels", "timeout", "misfire_grace", "description",
    }  # fmt: skip
    compare = schema["$defs"]["ReproCompareSpec"]["properties"]
    assert compare["outputs"]["enum"] == ["exact", "tolerance", "none"]
