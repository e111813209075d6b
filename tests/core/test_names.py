"""Rerun names: valid DNS-1035 labels of at most 30 characters, deterministic, distinct."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rerund.core.names import DEFAULT_TEMPLATE, is_valid_name, rerun_name, template_problems

run_names = st.from_regex(r"\A[a-z]([-a-z0-9]{0,28}[a-z0-9])?\Z")


@pytest.mark.parametrize(
    ("template", "root", "run", "policy", "attempt", "expected"),
    [
        (DEFAULT_TEMPLATE, "abc123", "abc123", "oom", 1, "abc123-retry-1"),
        (DEFAULT_TEMPLATE, "abc123", "abc123-retry-1", "oom", 2, "abc123-retry-2"),
        ("{policy}-{root}-{attempt}", "abc", "abc", "oom", 3, "oom-abc-3"),
        ("{run}-r{attempt}", "abc", "abc-r1", "oom", 2, "abc-r1-r2"),
        ("{root}-{attempt}", "ABC", "ABC", "p", 1, "abc-1"),
    ],
    ids=["default", "rerun-of-rerun", "policy-prefix", "run-chain", "lower-cased"],
)
def test_a_name_that_fits_is_exactly_the_rendered_template(template, root, run, policy, attempt, expected):
    assert rerun_name(template, root=root, run=run, policy=policy, attempt=attempt) == expected


def test_a_long_root_is_shortened_and_tagged_with_a_stable_hash():
    root = "ab12cd34ef56gh78ij90kl12mn34op"  # 30 characters
    name = rerun_name(DEFAULT_TEMPLATE, root=root, run=root, policy="p", attempt=1)
    assert is_valid_name(name)
    assert name.startswith("ab12cd34")
    assert name.endswith("-retry-1")
    assert name == rerun_name(DEFAULT_TEMPLATE, root=root, run=root, policy="p", attempt=1)


def test_a_long_policy_name_still_gives_a_valid_name():
    name = rerun_name("{policy}-{root}-{attempt}", root="abc", run="abc", policy="p" * 40, attempt=7)
    assert is_valid_name(name)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{root}-retry", r"must contain \{attempt\}"),
        ("retry-{attempt}", r"must contain \{root\} or \{run\}"),
        ("{root}-{nope}-{attempt}", r"unknown placeholder \{nope\}"),
        ("{root}_retry_{attempt}", r"may only contain lowercase letters, digits and '-'"),
        ("{root-{attempt}", r"is malformed"),
        ("{root}{attempt}", r"needs a separator such as '-' between \{attempt\}"),
        ("{root}-1{attempt}", r"needs a separator"),
    ],
    ids=["no-attempt", "no-root", "unknown-placeholder", "bad-literal", "malformed", "adjacent", "digit-sep"],
)
def test_a_template_that_cannot_make_distinct_valid_names_is_refused(template, message):
    problems = template_problems(template)
    assert problems
    assert any(__import__("re").search(message, p) for p in problems), problems


def test_the_default_template_is_accepted():
    assert template_problems(DEFAULT_TEMPLATE) == []


@given(
    template=st.sampled_from(
        [DEFAULT_TEMPLATE, "{run}-retry-{attempt}", "{policy}-{root}-{attempt}", "r-{root}-{run}-{attempt}"]
    ),
    root=st.text(min_size=1, max_size=80),
    run=st.text(min_size=1, max_size=80),
    policy=st.text(min_size=1, max_size=70),
    attempt=st.integers(min_value=1, max_value=10**6),
)
def test_names_are_always_valid_run_names(template, root, run, policy, attempt):
    assert is_valid_name(rerun_name(template, root=root, run=run, policy=policy, attempt=attempt))


@given(
    template=st.sampled_from([DEFAULT_TEMPLATE, "{policy}-{root}-{attempt}", "{root}-{attempt}"]),
    a=st.tuples(run_names, st.integers(min_value=1, max_value=1000)),
    b=st.tuples(run_names, st.integers(min_value=1, max_value=1000)),
)
def test_names_are_distinct_for_distinct_root_and_attempt(template, a, b):
    if a == b:
        return
    name_a = rerun_name(template, root=a[0], run=a[0], policy="transient-network", attempt=a[1])
    name_b = rerun_name(template, root=b[0], run=b[0], policy="transient-network", attempt=b[1])
    assert name_a != name_b
