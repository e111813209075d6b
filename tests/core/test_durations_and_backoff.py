"""Durations as policies write them, and the deterministic jittered backoff."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from rerund.core.backoff import Backoff, jitter_unit
from rerund.core.durations import format_duration, parse_duration
from rerund.runtime.settings import parse_duration as settings_duration
from rerund.sandbox.workload import parse_duration as sandbox_seconds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("1h", timedelta(hours=1)),
        ("1d", timedelta(days=1)),
        ("1h30m", timedelta(minutes=90)),
        ("1.5s", timedelta(seconds=1.5)),
        ("0s", timedelta(0)),
        ("200ms", timedelta(milliseconds=200)),
        ("1s500ms", timedelta(milliseconds=1500)),
    ],
    ids=["seconds", "minutes", "hours", "days", "combined", "fraction", "zero", "millis", "seconds-millis"],
)
def test_durations_parse(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["30", 30, "30 sec", "-1s", "", "1m1h", "s", None, "5ms1s", "1.5ms"], ids=str
)
def test_a_bad_duration_says_how_to_write_one(text):
    with pytest.raises(ValueError, match=r"invalid duration .*: use a number with a unit ms, s, m, h or d"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(seconds=30), "30s"),
        (timedelta(minutes=90), "1h30m"),
        (timedelta(seconds=1.25), "1.25s"),
        (timedelta(0), "0s"),
        (timedelta(days=1, seconds=1), "1d1s"),
    ],
    ids=["seconds", "hours-minutes", "fraction", "zero", "day-second"],
)
def test_durations_format_as_policies_write_them(value, text):
    assert format_duration(value) == text
    assert parse_duration(text) == value


B = Backoff(initial=timedelta(seconds=30), factor=2, max=timedelta(minutes=10), jitter=0.1)


@pytest.mark.parametrize(
    ("attempt", "base"),
    [(1, 30), (2, 60), (3, 120), (5, 480), (6, 600), (50, 600), (10**6, 600)],
    ids=["first", "second", "third", "fifth", "capped", "far", "huge"],
)
def test_the_base_delay_doubles_until_the_cap(attempt, base):
    assert B.base(attempt) == timedelta(seconds=base)


def test_the_first_attempt_is_number_one():
    with pytest.raises(ValueError, match="attempt must be >= 1, got 0"):
        B.base(0)


def test_the_same_lineage_and_attempt_always_get_the_same_delay():
    assert B.delay("abc", 2) == B.delay("abc", 2)
    assert {B.delay(f"run{i}", 2) for i in range(20)} != {B.delay("abc", 2)}  # lineages spread out


backoffs = st.builds(
    Backoff,
    initial=st.integers(min_value=0, max_value=3600).map(lambda s: timedelta(seconds=s)),
    factor=st.floats(min_value=1, max_value=10),
    max=st.integers(min_value=3600, max_value=86400).map(lambda s: timedelta(seconds=s)),
    jitter=st.floats(min_value=0, max_value=0.99),
)


@given(b=backoffs, root=st.text(max_size=40), attempt=st.integers(min_value=1, max_value=200))
def test_delays_stay_within_the_jitter_band(b, root, attempt):
    base = b.base(attempt).total_seconds()
    delay = b.delay(root, attempt).total_seconds()
    assert base * (1 - b.jitter) - 0.001 <= delay <= base * (1 + b.jitter) + 0.001
    assert b.base(attempt) <= b.max


@given(b=backoffs, attempt=st.integers(min_value=1, max_value=200))
def test_the_base_delay_is_monotone_and_capped(b, attempt):
    assert b.base(attempt) <= b.base(attempt + 1) <= b.max


@given(b=backoffs, root=st.text(max_size=40), attempt=st.integers(min_value=1, max_value=60))
def test_delays_are_monotone_before_the_cap_when_the_bands_do_not_overlap(b, root, attempt):
    assume(b.factor * (1 - b.jitter) >= 1 + b.jitter)
    assume(b.base(attempt + 1) < b.max)
    assert b.delay(root, attempt) <= b.delay(root, attempt + 1)


@given(root=st.text(max_size=40), attempt=st.integers(min_value=1))
def test_the_jitter_unit_lies_in_minus_one_to_one(root, attempt):
    assert -1.0 <= jitter_unit(root, attempt) <= 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h30m", timedelta(minutes=90)),
        ("0.5h", timedelta(minutes=30)),
        (".5s", timedelta(seconds=0.5)),
        ("30 s", timedelta(seconds=30)),
        ("1h 30m", timedelta(minutes=90)),
    ],
    ids=["combined", "fraction-of-an-hour", "leading-dot", "space-before-unit", "space-between"],
)
def test_one_grammar_serves_policies_settings_and_the_sandbox(text, expected):
    assert parse_duration(text) == expected
    assert settings_duration(text) == expected
    assert sandbox_seconds(text) == expected.total_seconds()


@pytest.mark.parametrize(
    ("value", "expected"), [("30", timedelta(seconds=30)), (1.5, timedelta(seconds=1.5))], ids=str
)
def test_a_bare_number_is_seconds_only_where_the_caller_allows_it(value, expected):
    assert parse_duration(value, bare_seconds=True) == expected
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)
