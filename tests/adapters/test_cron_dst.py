"""Every walk through time in the cron adapter terminates, at every DST change (issue 11.1).

The regression: ``latest_at_or_before`` stepped from local firing to local firing; an aware
local time plus a timedelta loses ``fold``, so at an autumn change APScheduler answered the
same firing again, forever, on the event loop. The properties below run over every IANA zone
that changes its offset between 2020 and 2035 (one zone per example, instants drawn around
that zone's own transitions) and over the expressions users write, minutely to yearly.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hang_guard import hang_guard
from rerund.adapters.cron import MAX_TRIGGER_CALLS, CronSchedule, latest_firing

START = datetime(2020, 1, 1, tzinfo=UTC)
END = datetime(2035, 12, 31, tzinfo=UTC)


def _offset(zone: ZoneInfo, when: datetime) -> timedelta | None:
    return when.astimezone(zone).utcoffset()


@functools.cache
def zones_with_transitions() -> tuple[str, ...]:
    """Every IANA zone whose UTC offset differs somewhere in 2020-2035 (sampled every 4 weeks)."""
    found = []
    for name in sorted(available_timezones()):
        zone = ZoneInfo(name)
        first = _offset(zone, START)
        t = START
        while t < END:
            if _offset(zone, t) != first:
                found.append(name)
                break
            t += timedelta(weeks=4)
    return tuple(found)


@functools.cache
def transitions(name: str) -> tuple[datetime, ...]:
    """The UTC instants at which ``name`` changes offset in 2020-2035 (daily scan, then bisection)."""
    zone = ZoneInfo(name)
    found = []
    t, before = START, _offset(zone, START)
    while t < END:
        nxt = t + timedelta(days=1)
        after = _offset(zone, nxt)
        if after != before:
            lo, hi = t, nxt
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                if _offset(zone, mid) == before:
                    lo = mid
                else:
                    hi = mid
            found.append(hi.replace(second=0, microsecond=0))
        t, before = nxt, after
    return tuple(found)


MINUTES = st.sampled_from(["*", "*/5", "*/15", "0", "30", "59", "0,30"])
HOURS = st.sampled_from(["*", "0", "1", "2", "3", "23", "1-3", "*/2"])
DAYS = st.sampled_from(["*", "*", "1", "15", "29", "31"])
MONTHS = st.sampled_from(["*", "*", "*", "1", "3", "10", "11", "2"])
WEEKDAYS = st.sampled_from(["*", "*", "*", "0", "1-5", "sun", "6"])
# What users write, minutely to yearly, plus arbitrary mixes of the same fields.
USUAL = st.sampled_from(
    [
        "* * * * *",
        "*/5 * * * *",
        "0 * * * *",
        "30 1 * * *",
        "30 2 * * *",
        "0 3 * * 1-5",
        "0 0 * * 0",
        "0 0 1 * *",
        "0 0 1 1 *",
        "59 23 31 12 *",
    ]
)
EXPRESSIONS = st.one_of(USUAL, st.tuples(MINUTES, HOURS, DAYS, MONTHS, WEEKDAYS).map(" ".join))


@st.composite
def zone_and_instant(draw: st.DrawFn) -> tuple[str, datetime]:
    name = draw(st.sampled_from(zones_with_transitions()))
    changes = transitions(name)
    if changes and draw(st.booleans()):
        base = draw(st.sampled_from(changes))
        offset = draw(st.integers(min_value=-3 * 3600, max_value=3 * 3600))
        micro = draw(st.sampled_from([0, 0, 1, 999_999]))
        return name, base + timedelta(seconds=offset, microseconds=micro)
    seconds = draw(st.integers(min_value=0, max_value=int((END - START).total_seconds())))
    return name, START + timedelta(seconds=seconds)


PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@PROPERTY
@given(EXPRESSIONS, zone_and_instant())
def test_the_next_firing_strictly_increases(expr, zone_instant):
    name, now = zone_instant
    schedule = CronSchedule(expr, name)
    t = now
    with hang_guard(20, f"{expr!r} in {name}"):
        for _ in range(4):
            nxt = schedule.next_after(t)
            if nxt is None:
                break
            assert nxt > t, f"{expr!r} in {name}: next firing {nxt} after {t} does not move forward"
            t = nxt


@PROPERTY
@given(EXPRESSIONS, zone_and_instant())
def test_the_latest_firing_is_never_after_now_and_costs_bounded_work(expr, zone_instant):
    name, now = zone_instant
    schedule = CronSchedule(expr, name)
    calls = 0

    def counted(when: datetime) -> datetime | None:
        nonlocal calls
        calls += 1
        return schedule.first_at_or_after(when)

    with hang_guard(20, f"{expr!r} in {name}"):
        latest = latest_firing(counted, now)
    assert calls <= MAX_TRIGGER_CALLS
    if latest is not None:
        assert latest <= now, f"{expr!r} in {name}: latest firing {latest} is after now {now}"
        following = schedule.next_after(latest)
        # No firing is skipped between the latest one and now.
        assert following is None or following > now
    assert schedule.latest_at_or_before(now) == latest


REPORTED = {
    "every 5 minutes, Paris, autumn 2026": (
        "*/5 * * * *",
        "Europe/Paris",
        datetime(2026, 10, 25, 1, 0, tzinfo=UTC),
    ),
    "hourly, Berlin, autumn 2026": ("0 * * * *", "Europe/Berlin", datetime(2026, 10, 25, 1, 0, tzinfo=UTC)),
    "01:30 daily, New York, autumn 2026": (
        "30 1 * * *",
        "America/New_York",
        datetime(2026, 11, 1, 6, 0, tzinfo=UTC),
    ),
}


@pytest.mark.parametrize(("expr", "zone", "now"), REPORTED.values(), ids=list(REPORTED))
def test_the_reported_autumn_changes_answer(expr, zone, now):
    with hang_guard(10, f"{expr!r} in {zone}"):
        latest = CronSchedule(expr, zone).latest_at_or_before(now)
    assert latest is not None and latest <= now
    assert (
        latest
        == {
            "Europe/Paris": datetime(2026, 10, 25, 1, 0, tzinfo=UTC),
            "Europe/Berlin": datetime(2026, 10, 25, 1, 0, tzinfo=UTC),
            "America/New_York": datetime(2026, 11, 1, 5, 30, tzinfo=UTC),  # 01:30 EDT, before the change
        }[zone]
    )


def test_every_zone_answers_at_each_of_its_backward_changes_in_2026():
    """Every zone with transitions, not a sample: the latest 5-minute firing just after its autumn change."""
    year = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    checked = 0
    with hang_guard(60, "the autumn changes of every zone"):
        for name in zones_with_transitions():
            zone = ZoneInfo(name)
            for change in transitions(name):
                if not year[0] <= change < year[1]:
                    continue
                if _offset(zone, change) >= _offset(zone, change - timedelta(minutes=1)):  # type: ignore[operator]
                    continue  # only backward (autumn) changes repeat local times
                now = change + timedelta(minutes=7)
                latest = CronSchedule("*/5 * * * *", name).latest_at_or_before(now)
                assert latest is not None and now - timedelta(minutes=5) < latest <= now, name
                checked += 1
    assert checked > 50  # the zones with a DST autumn change in 2026


# -- crontab's rule at a DST change (issue 22.10) ------------------------------------------------
# Vixie/Debian cron: a job whose minute and hour fields are both fixed ("30 1 * * *") fires once
# per local day — not again when the clock falls back and repeats its time, and once (not never)
# when the clock springs forward over it. A job with ``*`` in the minute or hour field ("*/5 * * *
# *", "0 * * * *") fires at every real occurrence, as crontab runs it.


def firings(expr: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """Every firing in [start, end), stepping with ``next_after``."""
    schedule = CronSchedule(expr, zone)
    out: list[datetime] = []
    t = schedule.first_at_or_after(start)
    while t is not None and t < end:
        out.append(t)
        t = schedule.next_after(t)
    return out


def local_day(zone: str, year: int, month: int, day: int) -> tuple[datetime, datetime]:
    z = ZoneInfo(zone)
    start = datetime(year, month, day, tzinfo=z).astimezone(UTC)
    end = (datetime(year, month, day, tzinfo=z) + timedelta(days=1)).astimezone(UTC)
    return start, end


# (expr, zone, local day of the change, the one firing crontab makes that day, in UTC)
CHANGE_DAYS = {
    "New York falls back, 01:30 daily": (
        "30 1 * * *",
        "America/New_York",
        (2026, 11, 1),
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC),  # 01:30 EDT, not again at 01:30 EST
    ),
    "Berlin falls back, 02:30 daily": (
        "30 2 * * *",
        "Europe/Berlin",
        (2026, 10, 25),
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # 02:30 CEST, not again at 02:30 CET
    ),
    "Berlin falls back, 02:00 and 02:45 daily": (
        "0,45 2 * * *",
        "Europe/Berlin",
        (2026, 10, 25),
        (datetime(2026, 10, 25, 0, 0, tzinfo=UTC), datetime(2026, 10, 25, 0, 45, tzinfo=UTC)),
    ),
    "New York springs forward, 02:30 daily": (
        "30 2 * * *",
        "America/New_York",
        (2026, 3, 8),
        datetime(2026, 3, 8, 7, 30, tzinfo=UTC),  # 02:30 does not exist: once, at 03:30 EDT
    ),
    "Berlin springs forward, 02:30 daily": (
        "30 2 * * *",
        "Europe/Berlin",
        (2026, 3, 29),
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),  # 02:30 does not exist: once, at 03:30 CEST
    ),
}


@pytest.mark.parametrize(("expr", "zone", "day", "expected"), CHANGE_DAYS.values(), ids=list(CHANGE_DAYS))
def test_a_daily_check_at_a_fixed_local_time_fires_once_on_the_day_of_a_dst_change(expr, zone, day, expected):
    start, end = local_day(zone, *day)

    got = firings(expr, zone, start, end)

    assert got == (list(expected) if isinstance(expected, tuple) else [expected])


@pytest.mark.parametrize(
    ("expr", "zone", "day", "count"),
    [
        ("*/30 * * * *", "America/New_York", (2026, 11, 1), 50),  # 25 real hours, twice an hour
        ("0 * * * *", "Europe/Berlin", (2026, 10, 25), 25),
        ("0 * * * *", "Europe/Berlin", (2026, 3, 29), 23),
    ],
    ids=["every 30 min, New York falls back", "hourly, Berlin falls back", "hourly, Berlin springs forward"],
)
def test_a_check_with_a_wildcard_hour_or_minute_fires_at_every_real_occurrence_as_crontab_does(
    expr, zone, day, count
):
    start, end = local_day(zone, *day)

    assert len(firings(expr, zone, start, end)) == count


@pytest.mark.parametrize(
    ("expr", "zone", "now", "expected"),
    [
        (
            "30 1 * * *",
            "America/New_York",
            datetime(2026, 11, 1, 6, 45, tzinfo=UTC),  # 01:45 EST, after the repeated 01:30
            datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
        ),
        (
            "30 2 * * *",
            "Europe/Berlin",
            datetime(2026, 10, 25, 1, 40, tzinfo=UTC),  # 02:40 CET, after the repeated 02:30
            datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        ),
    ],
    ids=["New York", "Berlin"],
)
def test_during_the_repeated_hour_the_latest_firing_is_the_first_occurrence(expr, zone, now, expected):
    assert CronSchedule(expr, zone).latest_at_or_before(now) == expected


FIXED_MINUTES = st.sampled_from(["0", "30", "59", "0,30", "15-20"])
FIXED_HOURS = st.sampled_from(["0", "1", "2", "3", "23", "1-3", "0-4"])


@st.composite
def zone_and_backward_change(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone and one of its backward (autumn) changes: the local times it repeats."""
    name = draw(st.sampled_from(zones_with_transitions()))
    zone = ZoneInfo(name)
    backward = [
        t
        for t in transitions(name)
        if _offset(zone, t) < _offset(zone, t - timedelta(minutes=1))  # type: ignore[operator]
    ]
    if not backward:
        return name, START
    return name, draw(st.sampled_from(backward))


@PROPERTY
@given(FIXED_MINUTES, FIXED_HOURS, zone_and_backward_change())
def test_a_fixed_time_job_never_fires_twice_at_the_same_local_time_in_any_zone(minute, hour, zone_change):
    name, change = zone_change
    expr = f"{minute} {hour} * * *"
    zone = ZoneInfo(name)
    with hang_guard(20, f"{expr!r} in {name}"):
        fired = firings(expr, name, change - timedelta(hours=30), change + timedelta(hours=30))
    local = [t.astimezone(zone).replace(tzinfo=None) for t in fired]
    assert len(local) == len(set(local)), f"{expr!r} in {name}: a local time fired twice: {fired}"
