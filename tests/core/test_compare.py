"""The typed comparison of outputs: every difference, with a readable path and message."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rerund.core.compare import Tolerance, compare_outputs

TOL = Tolerance(rel=1e-6)

# id -> (reference, rerun, mode, tolerance, ignore, expected difference lines)
CASES = {
    "equal outputs": ({"a": 1, "b": "x"}, {"a": 1, "b": "x"}, "exact", None, (), []),
    "int equals the same float": ({"a": 1}, {"a": 1.0}, "exact", None, (), []),
    "nan equals nan": ({"a": math.nan}, {"a": math.nan}, "exact", None, (), []),
    "exact float differs": ({"a": 0.31}, {"a": 0.29}, "exact", None, (), ["outputs.a: 0.31 != 0.29"]),
    "within relative tolerance": ({"a": 1.0}, {"a": 1.0000001}, "tolerance", TOL, (), []),
    "outside relative tolerance": (
        {"metrics": {"loss": 0.31}},
        {"metrics": {"loss": 0.29}},
        "tolerance",
        TOL,
        (),
        ["outputs.metrics.loss: 0.31 != 0.29 (rel diff 6.5% > 1e-06)"],
    ),
    "within absolute tolerance": ({"a": 0.0}, {"a": 1e-9}, "tolerance", Tolerance(abs=1e-6), (), []),
    "outside absolute tolerance": (
        {"a": 0.0},
        {"a": 0.01},
        "tolerance",
        Tolerance(abs=1e-3),
        (),
        ["outputs.a: 0.0 != 0.01 (abs diff 0.01 > 0.001)"],
    ),
    "both tolerances shown": (
        {"a": 1.0},
        {"a": 2.0},
        "tolerance",
        Tolerance(rel=0.1, abs=0.5),
        (),
        ["outputs.a: 1.0 != 2.0 (rel diff 50% > 0.1, abs diff 1 > 0.5)"],
    ),
    "tolerance applies at any depth": (
        {"m": {"l": [1.0, {"x": 2.0}]}},
        {"m": {"l": [1.0000001, {"x": 2.0000001}]}},
        "tolerance",
        TOL,
        (),
        [],
    ),
    "exact mode ignores the tolerance": (
        {"a": 1.0},
        {"a": 1.0000001},
        "exact",
        TOL,
        (),
        ["outputs.a: 1.0 != 1.0000001"],
    ),
    "none compares nothing": ({"a": 1}, {"b": "x"}, "none", None, (), []),
    "strings": ({"s": "abc"}, {"s": "abd"}, "exact", None, (), ["outputs.s: 'abc' != 'abd'"]),
    "bools": ({"ok": True}, {"ok": False}, "exact", None, (), ["outputs.ok: true != false"]),
    "bool is not a number": (
        {"ok": True},
        {"ok": 1},
        "exact",
        None,
        (),
        ["outputs.ok: type differs: bool true != int 1"],
    ),
    "type mismatch": (
        {"m": "a.pt"},
        {"m": 3},
        "exact",
        None,
        (),
        ["outputs.m: type differs: str 'a.pt' != int 3"],
    ),
    "null vs value": (
        {"m": None},
        {"m": 3},
        "exact",
        None,
        (),
        ["outputs.m: type differs: null null != int 3"],
    ),
    "list vs map": (
        {"m": [1]},
        {"m": {"a": 1}},
        "exact",
        None,
        (),
        ["outputs.m: type differs: list [1] != map {a: 1}"],
    ),
    "missing key": (
        {"a": 1, "b": 0.5},
        {"a": 1},
        "exact",
        None,
        (),
        ["outputs.b: missing in the rerun (reference: 0.5)"],
    ),
    "extra key": (
        {"a": 1},
        {"a": 1, "c": [1, 2]},
        "exact",
        None,
        (),
        ["outputs.c: not in the reference (rerun: [1, 2])"],
    ),
    "nested missing and extra keys": (
        {"m": {"x": 1, "y": 2}},
        {"m": {"x": 1, "z": 2}},
        "exact",
        None,
        (),
        ["outputs.m.y: missing in the rerun (reference: 2)", "outputs.m.z: not in the reference (rerun: 2)"],
    ),
    "list items": ({"l": [1, 2, 3]}, {"l": [1, 5, 3]}, "exact", None, (), ["outputs.l[1]: 2 != 5"]),
    "shorter list": (
        {"l": [1, 2, 3]},
        {"l": [1]},
        "exact",
        None,
        (),
        ["outputs.l: list length 3 != 1 (2 items missing in the rerun, from index 1)"],
    ),
    "longer list": (
        {"l": [1]},
        {"l": [1, 2]},
        "exact",
        None,
        (),
        ["outputs.l: list length 1 != 2 (1 item missing in the reference, from index 1)"],
    ),
    "odd map keys are quoted": (
        {"m": {"a b": 1}},
        {"m": {"a b": 2}},
        "exact",
        None,
        (),
        ["outputs.m['a b']: 1 != 2"],
    ),
    "ignore an output name": ({"t": 1, "a": 1}, {"t": 2, "a": 1}, "exact", None, ("t",), []),
    "ignore a missing output": ({"t": 1}, {}, "exact", None, ("t",), []),
    "ignore an extra output": ({}, {"t": 1}, "exact", None, ("t",), []),
    "ignore a nested path": (
        {"m": {"wall": 1.5, "loss": 1}},
        {"m": {"wall": 2.5, "loss": 2}},
        "exact",
        None,
        ("m.wall",),
        ["outputs.m.loss: 1 != 2"],
    ),
    "ignore a list item": ({"l": [1, 2]}, {"l": [9, 2]}, "exact", None, ("l[0]",), []),
    "long values are shortened": (
        {"s": "x" * 100},
        {"s": "y"},
        "exact",
        None,
        (),
        ["outputs.s: '" + "x" * 56 + "... != 'y'"],
    ),
    "infinities": ({"a": math.inf}, {"a": -math.inf}, "tolerance", TOL, (), ["outputs.a: inf != -inf"]),
}


@pytest.mark.parametrize(("ref", "new", "mode", "tol", "ignore", "expected"), CASES.values(), ids=list(CASES))
def test_compare_outputs_reports_exactly_these_differences(ref, new, mode, tol, ignore, expected):
    got = compare_outputs(ref, new, mode=mode, tolerance=tol, ignore=ignore)

    assert [str(d) for d in got] == expected


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=4), values, max_size=4))
def test_any_outputs_reproduce_themselves(outputs):
    assert compare_outputs(outputs, outputs) == []
    assert compare_outputs(outputs, outputs, mode="tolerance", tolerance=TOL) == []


@given(
    st.dictionaries(st.text(max_size=4), values, max_size=4),
    st.dictionaries(st.text(max_size=4), values, max_size=4),
)
def test_an_ignored_output_is_never_reported(a, b):
    ignore = set(a) | set(b)

    assert compare_outputs(a, b, ignore=ignore) == []
