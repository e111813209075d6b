# ruff: noqa: E501  (exact user-visible messages are kept on one line to be greppable)
"""The top-level ``incidents:`` key (the outage breaker's settings): loaded into the policy
set, shown by ``rerund check``, and every bad value refused with its file:line:col: path."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from rerund.cli import main
from rerund.core.incidents import IncidentRule
from rerund.errors import PolicyError
from rerund.policy import load_policies

HEADER = "apiVersion: rerund/v1\npolicies:\n  - name: a\n"

GOOD = HEADER + "incidents:\n  open: {failures: 10, within: 1m}\n  probe_every: 30s\n"


def test_incidents_load_into_the_policy_set(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    assert load_policies([path]).incidents == IncidentRule(
        failures=10, within=timedelta(minutes=1), probe_every=timedelta(seconds=30)
    )


def test_without_the_key_the_breaker_is_off(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(HEADER)
    assert load_policies([path]).incidents is None


def test_check_shows_the_incidents_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    assert main(["check", str(path)]) == 0
    assert "incidents: open after 10 failures within 1m, probe every 30s" in capsys.readouterr().out
    assert main(["check", "--format", "json", str(path)]) == 0
    shown = json.loads(capsys.readouterr().out)["incidents"]
    assert shown == {"failures": 10, "within": "1m", "probe_every": "30s"}


BAD = [
    (
        "zero-failures",
        "incidents:\n  open: {failures: 0, within: 1m}\n",
        ["5:20: incidents.open.failures: must be >= 1, got 0"],
    ),
    (
        "a-window-of-a-week",
        "incidents:\n  open: {failures: 3, within: 7d}\n",
        ["5:31: incidents.open.within: must be a positive duration of at most 1d, got 7d; write e.g. 1m"],
    ),
    (
        "a-zero-probe",
        "incidents:\n  open: {failures: 3, within: 1m}\n  probe_every: 0s\n",
        ["6:16: incidents.probe_every: must be a positive duration of at most 1d, got 0s; write e.g. 1m"],
    ),
    (
        "a-duration-without-unit",
        "incidents:\n  open: {failures: 3, within: 60}\n",
        [
            "5:31: incidents.open.within: invalid duration 60: use a number with a unit ms, s, m, h or d, e.g. 30s, 10m, 1h, 1d or 1h30m"
        ],
    ),
    (
        "no-open",
        "incidents:\n  probe_every: 30s\n",
        ["5:3: incidents.open: missing required key 'open'"],
    ),
    (
        "an-unknown-key",
        "incidents:\n  open: {failures: 3, within: 1m}\n  probe: 30s\n",
        [
            "6:3: incidents.probe: unknown key 'probe'; did you mean 'probe_every'? allowed keys: open, probe_every"
        ],
    ),
]


@pytest.mark.parametrize(("body", "expected"), [(b, e) for _, b, e in BAD], ids=[i for i, _, _ in BAD])
def test_a_bad_incidents_value_is_refused_and_located(tmp_path: Path, body: str, expected: list[str]) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(HEADER + body)
    with pytest.raises(PolicyError) as caught:
        load_policies([path])
    assert [str(p) for p in caught.value.problems] == [f"{path}:{e}" for e in expected]


def test_incidents_defined_in_two_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD.replace(HEADER, "apiVersion: rerund/v1\n"))
    with pytest.raises(
        PolicyError,
        match=r"b.yaml:3:3: incidents: already defined at .*a.yaml:5:3; define incidents in one file only",
    ):
        load_policies([tmp_path])


GIVE_UP_BAD = [
    (
        "a-rate-above-one",
        "{recovery_rate: 1.5, min_reruns: 10, window: 7d}",
        "recovery_rate: must be <= 1.0, got 1.5",
    ),
    ("zero-reruns", "{recovery_rate: 0.1, min_reruns: 0, window: 7d}", "min_reruns: must be >= 1, got 0"),
    (
        "a-year",
        "{recovery_rate: 0.1, min_reruns: 10, window: 365d}",
        "window: must be a positive duration of at most 90d, got 365d; write e.g. 7d",
    ),
    ("no-window", "{recovery_rate: 0.1, min_reruns: 10}", "missing required key 'window'"),
]


@pytest.mark.parametrize(
    ("value", "message"), [(v, m) for _, v, m in GIVE_UP_BAD], ids=[i for i, _, _ in GIVE_UP_BAD]
)
def test_a_bad_give_up_below_is_refused_and_located(tmp_path: Path, value: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(HEADER + f"    retry:\n      give_up_below: {value}\n")
    with pytest.raises(PolicyError) as caught:
        load_policies([path])
    [problem] = caught.value.problems
    assert str(problem).startswith(f"{path}:5:")
    assert "policies[0].retry.give_up_below" in str(problem)
    assert str(problem).endswith(message)


def test_give_up_below_loads_into_the_plan_and_its_window_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        HEADER + "    retry:\n      give_up_below: {recovery_rate: 0.1, min_reruns: 10, window: 7d}\n"
    )
    policies = load_policies([path])
    assert policies.evidence_windows() == {timedelta(days=7)}
