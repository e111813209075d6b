"""Cron schedules of reproduction checks, on APScheduler 3.x's ``CronTrigger``.

Only adapters import apscheduler, so cron parsing lives here; the policy model validates a
``schedule:`` by calling ``cron_problem`` and the runtime computes slots with ``CronSchedule``.
Both are pure (no clock read): like APScheduler's triggers, they take the time as an argument,
which is what lets the schedule tests use fixed times instead of sleeps.

Standard crontab, five fields: minute, hour, day of month, month, day of week. One trap is
handled here: APScheduler 3.x numbers weekdays from Monday = 0, crontab from Sunday = 0 (7 is
Sunday too). The day-of-week field is rewritten into weekday names before APScheduler sees
it, so ``0 3 * * 1-5`` means Monday to Friday, as in crontab.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["CronSchedule", "cron_problem", "timezone_problem"]

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DOW_TOKEN = re.compile(r"^(?:(\*)|([a-z0-9]+)(?:-([a-z0-9]+))?)(?:/(\d+))?$")
_HINT = "write five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * *' (03:00 daily)"
# How far back ``latest_at_or_before`` looks, widening step by step (a yearly cron needs 366 days).
_LOOKBACK = (
    timedelta(minutes=2),
    timedelta(hours=2),
    timedelta(days=2),
    timedelta(days=32),
    timedelta(days=367),
    timedelta(days=4 * 366 + 1),
)


def _day_number(text: str, expr: str) -> int:
    if text.isdigit():
        n = int(text)
        if n > 7:
            raise ValueError(
                f"day of week {n} in {expr!r} is out of range; use 0-7 (0 and 7 are Sunday) or sun-sat"
            )
        return n % 7
    if text[:3] in _DAYS and len(text) == 3:
        return _DAYS.index(text)
    raise ValueError(
        f"day of week {text!r} in {expr!r} is not a day; use 0-7 (0 and 7 are Sunday) or sun-sat"
    )


def _weekdays(field: str, expr: str) -> str:
    """The crontab day-of-week field as weekday names APScheduler 3.x reads the same way."""
    if field == "*" or field == "?":
        return "*"
    days: set[int] = set()
    for token in field.lower().split(","):
        m = _DOW_TOKEN.match(token)
        if m is None:
            raise ValueError(
                f"day of week {token!r} in {expr!r} is malformed; write e.g. 1-5, mon-fri or */2"
            )
        star, first, last, step = m.groups()
        start = 0 if star else _day_number(first, expr)
        if star:
            end = 6
        elif last is not None:
            end = _day_number(last, expr)
            if last == "7":
                end = 7
        else:
            end = 6 if step else start
        if end < start:
            raise ValueError(
                f"day of week range {token!r} in {expr!r} runs backwards; write it as two parts, e.g. 5-6,0"
            )
        stride = int(step) if step else 1
        if stride < 1:
            raise ValueError(f"day of week step in {token!r} of {expr!r} must be at least 1")
        days.update(d % 7 for d in range(start, end + 1, stride))
    return ",".join(_DAYS[d] for d in sorted(days))


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {name!r}; use an IANA name such as UTC, Europe/Paris or America/New_York"
        ) from None


def timezone_problem(name: str) -> str | None:
    """Why ``name`` is not a usable IANA timezone, or None."""
    try:
        _zone(name)
    except ValueError as exc:
        return str(exc)
    return None


def _trigger(expr: str, timezone: str) -> Any:
    from apscheduler.triggers.cron import CronTrigger

    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"cron expression {expr!r} has {len(fields)} fields; {_HINT}")
    zone = _zone(timezone)
    minute, hour, day, month, dow = fields
    try:
        return CronTrigger(
            minute=minute, hour=hour, day=day, month=month, day_of_week=_weekdays(dow, expr), timezone=zone
        )
    except ValueError as exc:
        if "day of week" in str(exc) or "cron expression" in str(exc):
            raise
        text = re.sub(r"^Error validating expression '[^']*': ", "", str(exc))
        raise ValueError(f"invalid cron expression {expr!r}: {text}; {_HINT}") from None


def cron_problem(expr: str, timezone: str = "UTC") -> str | None:
    """Why ``expr`` is not a valid five-field crontab expression, or None (pure)."""
    try:
        _trigger(expr, timezone)
    except ValueError as exc:
        return str(exc)
    return None


class CronSchedule:
    """The firing times of one crontab expression in one timezone (pure: no clock reads)."""

    def __init__(self, expr: str, timezone: str = "UTC") -> None:
        """Raises ``ValueError`` (the same message as ``cron_problem``) for a bad expression."""
        self.expr = expr
        self.timezone = timezone
        self._trigger = _trigger(expr, timezone)

    def next_after(self, when: datetime) -> datetime | None:
        """The first firing strictly after ``when`` (aware UTC), or None if there is none."""
        start = when.astimezone(UTC) + timedelta(microseconds=1)
        fire = self._trigger.get_next_fire_time(None, start)
        return None if fire is None else fire.astimezone(UTC)

    def latest_at_or_before(self, when: datetime) -> datetime | None:
        """The last firing at or before ``when`` (aware UTC), or None within 4 years."""
        when = when.astimezone(UTC)
        for window in _LOOKBACK:
            latest: datetime | None = None
            fire = self._trigger.get_next_fire_time(None, when - window)
            while fire is not None and fire.astimezone(UTC) <= when:
                latest = fire.astimezone(UTC)
                fire = self._trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
            if latest is not None:
                return latest
        return None
