"""Backoff values pinned exactly: a due time is computed again by every replica, every restart
and ``rerund explain``, so the numbers themselves (not only their bounds) are the contract."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rerund.core.backoff import Backoff, jitter_unit

S = timedelta(seconds=1)
MS = timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("initial", "attempt", "base"),
    [
        (1 * S, 1, 1 * S),  # a one-second backoff is one second, not zero
        (1 * S, 4, 8 * S),
        (0.5 * S, 1, 0.5 * S),
        (1 * MS, 4, 8 * MS),  # far below the cap: no shortcut to the cap
        (1 * MS, 20, 524.288 * S),
        (1 * MS, 21, 600 * S),
        (0 * S, 5, 0 * S),
    ],
    ids=[
        "one-second",
        "one-second-doubled-thrice",
        "half-second",
        "one-ms-doubled",
        "one-ms-near-cap",
        "capped",
        "zero",
    ],
)
def test_the_base_delay_is_exact(initial: timedelta, attempt: int, base: timedelta) -> None:
    assert Backoff(initial=initial, factor=2.0, max=timedelta(minutes=10), jitter=0.0).base(attempt) == base


def test_a_factor_of_one_keeps_the_initial_delay_for_ever() -> None:
    assert Backoff(initial=3 * S, factor=1.0, max=timedelta(minutes=10), jitter=0.0).base(10_000) == 3 * S


def test_an_attempt_far_past_the_cap_is_the_cap_without_overflow() -> None:
    assert Backoff(initial=1 * S, factor=100.0, max=timedelta(days=1), jitter=0.0).base(10**6) == timedelta(
        days=1
    )


@pytest.mark.parametrize(
    ("root", "attempt", "delay"),
    [
        ("abc123", 1, timedelta(seconds=14.378)),
        ("abc123", 2, timedelta(seconds=26.013)),
        ("abc123", 3, timedelta(seconds=52.717)),
    ],
)
def test_the_jittered_delay_is_pinned(root: str, attempt: int, delay: timedelta) -> None:
    # jitter_unit('abc123', 1) is +0.8756: the delay lies *above* the base (10s * (1 + 0.5 * 0.8756)).
    b = Backoff(initial=10 * S, factor=2.0, max=timedelta(minutes=10), jitter=0.5)
    assert b.delay(root, attempt) == delay


def test_the_jitter_unit_is_pinned_per_lineage_and_attempt() -> None:
    assert jitter_unit("abc123", 1) == pytest.approx(0.8755745034164832, abs=1e-12)
    assert jitter_unit("abc123", 2) == pytest.approx(0.6012698958246456, abs=1e-12)
    assert jitter_unit("nightly", 1) == pytest.approx(0.8188054913965253, abs=1e-12)


def test_the_jitter_unit_spreads_over_the_whole_band() -> None:
    units = [jitter_unit("lineage", n) for n in range(1, 2001)]
    assert min(units) < -0.99 and max(units) > 0.99
    assert abs(sum(units) / len(units)) < 0.05  # centred: as many delays above the base as below


@given(st.text(min_size=1, max_size=20), st.integers(min_value=1, max_value=50))
def test_the_delay_is_the_base_moved_by_the_jitter_of_its_own_attempt(root: str, attempt: int) -> None:
    b = Backoff(initial=10 * S, factor=2.0, max=timedelta(minutes=10), jitter=0.3)
    expected = b.base(attempt).total_seconds() * (1 + 0.3 * jitter_unit(root, attempt))
    assert b.delay(root, attempt) == timedelta(milliseconds=round(expected * 1000))
