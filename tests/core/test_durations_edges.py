# ruff: noqa: E501  (exact user-visible messages are kept on one line to be greppable)
"""The edges of the one duration grammar: the 36500d limit, bare numbers, days, what kind of
mistake each error reports, and how rounding carries when a duration is formatted."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rerund.core.durations import MAX_DURATION, DurationError, format_duration, parse_duration


def test_the_limit_is_36500_days_exactly() -> None:
    assert MAX_DURATION == timedelta(days=36500)
    assert parse_duration("36500d") == timedelta(days=36500)
    with pytest.raises(
        DurationError,
        match=r"^invalid duration '36500d1ms': longer than the maximum of 36500d \(100 years\)$",
    ) as caught:
        parse_duration("36500d1ms")
    assert caught.value.kind == "too_long"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (10**10, "invalid duration 10000000000: longer than the maximum of 36500d (100 years)"),
        ("10000000000", "invalid duration '10000000000': longer than the maximum of 36500d (100 years)"),
        (1e300, "invalid duration 1e+300: longer than the maximum of 36500d (100 years)"),
    ],
    ids=["int", "text", "overflowing-float"],
)
def test_a_bare_number_over_the_limit_is_too_long(value: object, message: str) -> None:
    with pytest.raises(DurationError) as caught:
        parse_duration(value, bare_seconds=True)
    assert (str(caught.value), caught.value.kind) == (message, "too_long")


@pytest.mark.parametrize(
    ("value", "expected"), [(0, timedelta(0)), (0.5, timedelta(seconds=0.5)), (3, timedelta(seconds=3))]
)
def test_a_bare_number_of_seconds_may_be_zero_or_a_fraction(value: float, expected: timedelta) -> None:
    assert parse_duration(value, bare_seconds=True) == expected


def test_a_negative_bare_number_is_refused_as_negative() -> None:
    with pytest.raises(DurationError) as caught:
        parse_duration(-1, bare_seconds=True)
    assert (str(caught.value), caught.value.kind) == (
        "invalid duration -1: a duration must be >= 0",
        "negative",
    )


@pytest.mark.parametrize(
    ("text", "days"),
    [("soon", True), ("1d", False), ("", True), (30, False)],
    ids=["word", "days-where-none", "empty", "bare-in-a-policy"],
)
def test_an_invalid_duration_is_of_kind_invalid(text: object, days: bool) -> None:
    with pytest.raises(DurationError) as caught:
        parse_duration(text, days=days)
    assert caught.value.kind == "invalid"
    assert (
        str(caught.value)
        == f"invalid duration {text!r}: use a number with a unit ms, s, m, h or d, e.g. 30s, 10m, 1h, 1d or 1h30m"
    )


def test_hours_are_fine_where_days_are_not() -> None:
    assert parse_duration("25h", days=False) == timedelta(hours=25)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(seconds=-90), "-1m30s"),
        (timedelta(seconds=59.9996), "1m"),  # 59.9996 rounds to 60.000: the minute carries
        (timedelta(seconds=3599.9999), "1h"),
        (timedelta(seconds=1.0004), "1s"),
        (timedelta(seconds=1.25), "1.25s"),
        (timedelta(seconds=90.5), "1m30.5s"),
        (timedelta(0), "0s"),
    ],
)
def test_formatting_rounds_to_milliseconds_and_carries(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
