# ruff: noqa: E501  (exact user-visible messages are kept on one line to be greppable)
"""The pure parts of reproduction checks: the verdict of a firing, the name of its rerun, and
which firing is due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rerund.core.compare import Tolerance
from rerund.core.names import is_valid_name
from rerund.core.repro import (
    CompareSettings,
    ReproCheck,
    ReproSource,
    due_firing,
    judge,
    kept_failing,
    reads_outputs,
    repro_run_name,
)

CHECK = ReproCheck(name="nightly", schedule="0 3 * * *", source=ReproSource(task="train.fit"))
OUT = {"accuracy": 0.93, "loss": 0.31, "timestamp": "2026-11-26T03:00:00Z"}


def verdict(check=CHECK, ref_phase="SUCCEEDED", new_phase="SUCCEEDED", ref_out=OUT, new_out=OUT, **kw):
    return judge(
        check,
        reference="ref1",
        rerun="rp-nightly-1",
        reference_phase=ref_phase,
        rerun_phase=new_phase,
        reference_outputs=ref_out,
        rerun_outputs=new_out,
        **kw,
    )


def with_compare(**kwargs):
    return ReproCheck(
        name="nightly", schedule="0 3 * * *", source=ReproSource(task="t"), compare=CompareSettings(**kwargs)
    )


JUDGEMENTS = {
    "same phase and outputs match": (
        {},
        "match",
        "check 'nightly': rerun 'rp-nightly-1' reproduced 'ref1': phase SUCCEEDED, 3 outputs equal (exact)",
    ),
    "an output differs": (
        {"new_out": {**OUT, "loss": 0.29}},
        "mismatch",
        "check 'nightly': rerun 'rp-nightly-1' of 'ref1' differs in 1 output field (exact): outputs.loss: 0.31 != 0.29",
    ),
    "an output differs beyond the tolerance": (
        {
            "check": with_compare(outputs="tolerance", tolerance=Tolerance(rel=1e-6), ignore=("timestamp",)),
            "new_out": {**OUT, "loss": 0.29, "timestamp": "later"},
        },
        "mismatch",
        "check 'nightly': rerun 'rp-nightly-1' of 'ref1' differs in 1 output field (tolerance rel=1e-06 abs=0): "
        "outputs.loss: 0.31 != 0.29 (rel diff 6.5% > 1e-06)",
    ),
    "ignored outputs are counted": (
        {"check": with_compare(ignore=("timestamp",)), "new_out": {**OUT, "timestamp": "later"}},
        "match",
        "check 'nightly': rerun 'rp-nightly-1' reproduced 'ref1': phase SUCCEEDED, 2 outputs equal (exact, 1 ignored)",
    ),
    "more than three differences are summarised": (
        {"ref_out": {"a": 1, "b": 1, "c": 1, "d": 1}, "new_out": {"a": 2, "b": 2, "c": 2, "d": 2}},
        "mismatch",
        "check 'nightly': rerun 'rp-nightly-1' of 'ref1' differs in 4 output fields (exact): outputs.a: 1 != 2; "
        "outputs.b: 1 != 2; outputs.c: 1 != 2; and 1 more",
    ),
    "outputs none": (
        {"check": with_compare(outputs="none"), "new_out": {"x": 1}},
        "match",
        "check 'nightly': rerun 'rp-nightly-1' reproduced 'ref1': phase SUCCEEDED, outputs not compared",
    ),
    "the rerun failed where the reference succeeded": (
        {"new_phase": "FAILED"},
        "failed",
        "check 'nightly': rerun 'rp-nightly-1' ended FAILED, reference 'ref1' SUCCEEDED: it did not reproduce",
    ),
    "the rerun failed and the phase is not compared": (
        {"check": with_compare(phase=False), "ref_phase": "FAILED", "new_phase": "TIMED_OUT"},
        "failed",
        "check 'nightly': rerun 'rp-nightly-1' ended TIMED_OUT, reference 'ref1' FAILED: it did not reproduce",
    ),
    "a failed reference that now succeeds": (
        {"ref_phase": "FAILED", "new_phase": "SUCCEEDED"},
        "mismatch",
        "check 'nightly': rerun 'rp-nightly-1' ended SUCCEEDED, reference 'ref1' FAILED: the phase did not reproduce",
    ),
    "a failed reference that fails again": (
        {"ref_phase": "FAILED", "new_phase": "FAILED", "ref_out": None, "new_out": None},
        "match",
        "check 'nightly': rerun 'rp-nightly-1' reproduced 'ref1': phase FAILED, no outputs to compare",
    ),
    "not terminal at the timeout": (
        {"new_phase": None, "timed_out": True},
        "timeout",
        "check 'nightly': rerun 'rp-nightly-1' of 'ref1' was not terminal after the timeout of 2h; counted as timeout",
    ),
}


@pytest.mark.parametrize(("kwargs", "result", "reason"), JUDGEMENTS.values(), ids=list(JUDGEMENTS))
def test_judge_gives_the_result_and_its_reason(kwargs, result, reason):
    v = verdict(**kwargs)

    assert (v.result, v.reason) == (result, reason)


def test_a_mismatch_carries_every_difference_and_a_phase_change_is_one():
    v = verdict(new_out={"accuracy": 0.5, "loss": 0.31})
    assert [str(d) for d in v.diff] == [
        "outputs.accuracy: 0.93 != 0.5",
        "outputs.timestamp: missing in the rerun (reference: '2026-11-26T03:00:00Z')",
    ]
    assert [str(d) for d in verdict(new_phase="FAILED").diff] == ["phase: SUCCEEDED != FAILED"]


SLOT = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


def test_the_rerun_name_is_readable_when_it_fits():
    assert repro_run_name("nightly", SLOT) == "rp-nightly-202611260300"
    assert repro_run_name("nightly", SLOT, manual=True) == "rm-nightly-202611260300"


def test_a_long_check_name_is_shortened_with_a_hash():
    name = repro_run_name("a-very-long-reproduction-check-name", SLOT)

    assert is_valid_name(name) and len(name) <= 30
    assert name != repro_run_name("a-very-long-reproduction-check-name", SLOT + timedelta(minutes=1))


check_names = st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?", fullmatch=True)
slots = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))


@given(check_names, slots, st.booleans())
def test_rerun_names_are_always_valid_and_deterministic(check, slot, manual):
    name = repro_run_name(check, slot, manual=manual)

    assert is_valid_name(name)
    assert name == repro_run_name(check, slot.astimezone(UTC), manual=manual)


@given(check_names, slots, slots)
def test_different_minutes_get_different_names(check, a, b):
    if a.replace(second=0, microsecond=0) != b.replace(second=0, microsecond=0):
        assert repro_run_name(check, a) != repro_run_name(check, b)


NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)

DUE = {
    "never fired: the latest slot": (SLOT, None, None, SLOT),
    "already fired": (SLOT, SLOT, None, None),
    "fired an older slot: the latest only (coalesced)": (SLOT, SLOT - 72 * H, None, SLOT),
    "no slot yet": (None, None, None, None),
    "within the misfire grace": (SLOT, None, 8 * H, SLOT),
    "older than the misfire grace": (SLOT, None, 6 * H, None),
    "a slot after now is not due": (NOW + H, None, None, None),
}


@pytest.mark.parametrize(("latest", "last", "grace", "expected"), DUE.values(), ids=list(DUE))
def test_due_firing(latest, last, grace, expected):
    assert due_firing(latest, last, NOW, grace) == expected


def test_a_failed_reproduction_rerun_is_never_retried_by_a_policy(policies, make_failure):
    from rerund.core.decide import decide, explain

    ps = policies("policies:\n  - name: everything\n")
    failure = make_failure(run="rp-nightly-202611260300", labels={"team": "ml", "rerund-repro": "nightly"})

    decision = decide(failure, ps, NOW)

    assert decision.decision == "ignore" and decision.policy is None
    assert decision.reason == (
        "run 'rp-nightly-202611260300' is a rerun of reproduction check 'nightly': its failure is the "
        "check's result (`rerund repro history`), it is not rerun"
    )
    assert explain(failure, ps, NOW).trace == [
        "label rerund-repro=nightly: a reproduction rerun, never retried: ignore"
    ]
    assert decide(make_failure(), ps, NOW).decision == "rerun"


@pytest.mark.parametrize(
    ("outputs", "ref_phase", "new_phase", "reads"),
    [
        ("exact", "SUCCEEDED", "SUCCEEDED", True),
        ("none", "SUCCEEDED", "SUCCEEDED", False),
        ("exact", "FAILED", "SUCCEEDED", False),
        ("exact", "SUCCEEDED", "FAILED", False),
    ],
    ids=["both-succeeded", "outputs-none", "reference-failed", "rerun-failed"],
)
def test_outputs_are_read_only_when_judge_compares_them(outputs, ref_phase, new_phase, reads):
    check = with_compare(outputs=outputs)
    assert reads_outputs(check, ref_phase, new_phase) is reads
    compared = "equal" in verdict(check, ref_phase=ref_phase, new_phase=new_phase).reason
    assert compared is reads


@pytest.mark.parametrize(
    ("issued", "result"), [(False, "failed"), (True, "timeout")], ids=["before", "after"]
)
def test_a_control_plane_that_kept_failing_is_a_timeout_once_the_rerun_was_issued(issued, result):
    v = kept_failing(CHECK, "UNAVAILABLE", rerun_issued=issued)
    assert v.result == result
    assert v.reason == (
        "check 'nightly': the control plane kept failing until the timeout of 2h ran out (last: UNAVAILABLE)"
    )
