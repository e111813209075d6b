"""Rerun names: ``<root>-retry-<attempt>``, valid DNS-1035 labels of at most 30 characters,
a function of (root, attempt[, salt]) only, distinct per (root, attempt, salt).

Exactly-once across versions depends on the exact names: a daemon upgraded in the middle of a
lineage must compute the name the old one used, so the names of shortened and sanitised roots
are pinned here, character for character.
"""

from __future__ import annotations

import random
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rerund.core.names import MAX_SALT, is_valid_name, rerun_name

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


@pytest.mark.parametrize(
    ("root", "attempt", "salt", "expected"),
    [
        ("nightly-training-run-010933", 1, 0, "nightly-t-xlpdvruqczfg-retry-1"),
        ("nightly-training-run-019903", 1, 0, "nightly-t-m4bcs4jb7pcl-retry-1"),
        ("ab12cd34ef56gh78ij90kl12mn34op", 1, 0, "ab12cd34e-5isnqlgqqvdm-retry-1"),
        ("ab12cd34ef56gh78ij90kl12mn34op", 1000, 0, "ab12cd-6nlc7zqotkgl-retry-1000"),
        ("Nightly_Run.2026", 2, 0, "nightly-r-q7fvyyttpb2c-retry-2"),
        ("2026-backfill", 1, 0, "r2026-bac-73cuq732qop3-retry-1"),
        ("abc123", 1, 1, "abc123-men2feap3d3h-retry-1"),
        ("abc123", 1, 2, "abc123-wxpzwj2snl6t-retry-1"),
    ],
    ids=[
        "nightly-a",
        "nightly-b",
        "30-chars",
        "attempt-1000",
        "sanitised",
        "digit-first",
        "salt-1",
        "salt-2",
    ],
)
def test_the_names_of_shortened_sanitised_and_salted_roots_are_pinned(root, attempt, salt, expected):
    assert rerun_name(root=root, attempt=attempt, salt=salt) == expected


def test_roots_that_shared_a_30_bit_hash_get_different_names():
    """Issue 22.1: with 6 hash characters ``…-010933`` and ``…-019903`` were both
    ``nightly-trainin-tpegc5-retry-1`` and the second lineage was never rerun."""
    a = rerun_name(root="nightly-training-run-010933", attempt=1)
    b = rerun_name(root="nightly-training-run-019903", attempt=1)
    assert a != b


def test_a_long_root_is_shortened_and_tagged_with_a_60_bit_hash():
    root = "ab12cd34ef56gh78ij90kl12mn34op"  # 30 characters
    name = rerun_name(root=root, attempt=1)
    short, tag, rest = name.split("-", 2)
    assert (short, rest) == ("ab12cd34e", "retry-1")
    assert len(tag) * 5 >= 60  # base32: 5 bits a character
    assert name == rerun_name(root=root, attempt=1)


def test_a_salted_name_is_never_the_plain_one_and_salts_differ():
    names = [rerun_name(root="abc123", attempt=1, salt=s) for s in range(MAX_SALT + 1)]
    assert names[0] == "abc123-retry-1"
    assert len(set(names)) == len(names)
    assert all(is_valid_name(n) and n.endswith("-retry-1") for n in names)


def test_a_negative_salt_is_refused():
    with pytest.raises(ValueError, match="salt -1 of lineage 'abc123' attempt 1 is negative"):
        rerun_name(root="abc123", attempt=1, salt=-1)


@given(
    root=st.text(min_size=1, max_size=80),
    attempt=st.integers(min_value=1, max_value=10**6),
    salt=st.integers(min_value=0, max_value=MAX_SALT),
)
def test_names_are_always_valid_run_names(root, attempt, salt):
    assert is_valid_name(rerun_name(root=root, attempt=attempt, salt=salt))


@given(
    a=st.tuples(run_names, st.integers(min_value=1, max_value=1000), st.integers(0, MAX_SALT)),
    b=st.tuples(run_names, st.integers(min_value=1, max_value=1000), st.integers(0, MAX_SALT)),
)
def test_names_are_distinct_for_distinct_root_attempt_and_salt(a, b):
    if a == b:
        return
    assert rerun_name(root=a[0], attempt=a[1], salt=a[2]) != rerun_name(root=b[0], attempt=b[1], salt=b[2])


def _roots(numbered: int, random_roots: int) -> list[str]:
    """``nightly-training-run-000000`` on, plus random valid and invalid roots (fixed seed)."""
    rng = random.Random(22)
    alphabet = string.ascii_lowercase + string.digits + "-_.ABC"
    roots = [f"nightly-training-run-{i:06d}" for i in range(numbered)]
    roots += ["".join(rng.choices(alphabet, k=rng.randint(16, 60))) for _ in range(random_roots)]
    return sorted(set(roots))


def _assert_distinct(roots: list[str], attempts: range) -> None:
    seen: dict[str, tuple[str, int]] = {}
    for attempt in attempts:
        for root in roots:
            name = rerun_name(root=root, attempt=attempt)
            other = seen.setdefault(name, (root, attempt))
            assert other == (root, attempt), f"{other} and {(root, attempt)} are both named {name!r}"


def test_a_hundred_thousand_long_roots_never_share_a_name():
    """The nightly roots that collided with 6 hash characters (20,000 of them already did)."""
    _assert_distinct(_roots(90_000, 10_000), range(1, 2))


@pytest.mark.slow
def test_a_million_long_roots_at_three_attempts_never_share_a_name():
    _assert_distinct(_roots(900_000, 100_000), range(1, 4))
