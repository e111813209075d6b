"""Rerun names: ``<root>-retry-<attempt>``, valid DNS-1035 labels of at most 30 characters,
a function of (root, attempt) only, distinct per (root, attempt)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rerund.core.names import is_valid_name, rerun_name

run_names = st.from_regex(r"\A[a-z]([-a-z0-9]{0,28}[a-z0-9])?\Z")


@pytest.mark.parametrize(
    ("root", "attempt", "expected"),
    [
        ("abc123", 1, "abc123-retry-1"),
        ("abc123", 2, "abc123-retry-2"),
        ("r0123456789abcdefghi", 3, "r0123456789abcdefghi-retry-3"),
    ],
    ids=["first", "second", "flyte-generated-root"],
)
def test_a_name_that_fits_is_exactly_root_retry_attempt(root, attempt, expected):
    assert rerun_name(root=root, attempt=attempt) == expected


def test_a_long_root_is_shortened_and_tagged_with_a_stable_hash():
    root = "ab12cd34ef56gh78ij90kl12mn34op"  # 30 characters
    name = rerun_name(root=root, attempt=1)
    assert is_valid_name(name)
    assert name.startswith("ab12cd34")
    assert name.endswith("-retry-1")
    assert name == rerun_name(root=root, attempt=1)


def test_the_long_root_scheme_is_the_one_earlier_versions_used():
    """Reruns issued before the name template was removed keep their names (default template)."""
    assert rerun_name(root="ab12cd34ef56gh78ij90kl12mn34op", attempt=1) == "ab12cd34ef56gh7-e5lpyn-retry-1"


@given(root=st.text(min_size=1, max_size=80), attempt=st.integers(min_value=1, max_value=10**6))
def test_names_are_always_valid_run_names(root, attempt):
    assert is_valid_name(rerun_name(root=root, attempt=attempt))


@given(
    a=st.tuples(run_names, st.integers(min_value=1, max_value=1000)),
    b=st.tuples(run_names, st.integers(min_value=1, max_value=1000)),
)
def test_names_are_distinct_for_distinct_root_and_attempt(a, b):
    if a == b:
        return
    assert rerun_name(root=a[0], attempt=a[1]) != rerun_name(root=b[0], attempt=b[1])
