"""The crontab grammar of a reproduction check's ``schedule`` (pure: no I/O, no scheduler).

Standard crontab, five fields: minute, hour, day of month, month, day of week. The policy
language checks a schedule with ``cron_problem`` and a timezone with ``timezone_problem``; the
cron adapter (``rerund.adapters.cron``) computes firings with APScheduler 3 from the same
``parse``. The field rules and their messages are APScheduler 3's own (its ``CronTrigger``
fields), so a schedule the policy accepts is one the adapter can run; a test holds the two
against each other.

One trap is handled here: APScheduler 3.x numbers weekdays from Monday = 0, crontab from
Sunday = 0 (7 is Sunday too). ``parse`` rewrites the day-of-week field into weekday names, so
``0 3 * * 1-5`` means Monday to Friday, as in crontab.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["CRON_HINT", "CronFields", "cron_problem", "parse", "timezone_problem", "weekday_names", "zone"]

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DOW_TOKEN = re.compile(r"^(?:(\*)|([a-z0-9]+)(?:-([a-z0-9]+))?)(?:/(\d+))?\Z")
CRON_HINT = "write five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * *' (03:00 daily)"

# APScheduler 3's field grammar (``apscheduler.triggers.cron.expressions``).
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_BOUNDS = {"month": (1, 12), "day": (1, 31), "hour": (0, 23), "minute": (0, 59)}
_SEPARATOR = re.compile(" *, *")
_ALL = re.compile(r"\*(?:/(?P<step>\d+))?$")
_RANGE = re.compile(r"(?P<first>\d+)(?:-(?P<last>\d+))?(?:/(?P<step>\d+))?$")
_NAMES = re.compile(r"(?P<first>[a-z]+)(?:-(?P<last>[a-z]+))?", re.IGNORECASE)
_LAST = re.compile(r"last", re.IGNORECASE)


@dataclass(frozen=True)
class CronFields:
    """A valid schedule's fields, the day of week as weekday names (APScheduler 3 reads them)."""

    minute: str
    hour: str
    day: str
    month: str
    day_of_week: str
    zone: ZoneInfo


def zone(name: str) -> ZoneInfo:
    """The IANA timezone ``name``; ``ValueError`` saying what to write instead."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {name!r}; use an IANA name such as UTC, Europe/Paris or America/New_York"
        ) from None


def timezone_problem(name: str) -> str | None:
    """Why ``name`` is not a usable IANA timezone, or None."""
    try:
        zone(name)
    except ValueError as exc:
        return str(exc)
    return None


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


def weekday_names(field: str, expr: str) -> str:
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


def _range_problem(name: str, first: int, last: int | None, step: int | None) -> str | None:
    """APScheduler's ``validate_range`` of one expression (its ``*/step`` check first)."""
    low, high = _BOUNDS[name]
    if step and step > high - low:
        return f"the step value ({step}) is higher than the total range of the expression ({high - low})"
    if first < low:
        return f"the first value ({first}) is lower than the minimum value ({low})"
    if last is not None and last > high:
        return f"the last value ({last}) is higher than the maximum value ({high})"
    span = (last or high) - first
    if step and step > span:
        return f"the step value ({step}) is higher than the total range of the expression ({span})"
    return None


def _range(first: int, last: int | None, step: int | None) -> tuple[int, int | None, int | None]:
    """APScheduler's ``RangeExpression`` construction (before its range is validated)."""
    if step == 0:
        raise ValueError("Increment must be higher than 0")
    if last is None and step is None:
        last = first
    if last is not None and first > last:
        raise ValueError("The minimum value in a range must not be higher than the maximum")
    return first, last, step


def _int(text: str | None) -> int | None:
    return None if text is None else int(text)


def _expression(name: str, expr: str) -> None:
    """One comma-separated part of a field, as APScheduler compiles it (``ValueError``)."""
    problem: str | None = None
    if (m := _ALL.match(expr)) is not None:
        step = _int(m["step"])
        if step == 0:
            raise ValueError("Increment must be higher than 0")
        low, high = _BOUNDS[name]
        if step and step > high - low:
            problem = (
                f"the step value ({step}) is higher than the total range of the expression ({high - low})"
            )
    elif (m := _RANGE.match(expr)) is not None:
        problem = _range_problem(name, *_range(int(m["first"]), _int(m["last"]), _int(m["step"])))
    elif name == "month" and (m := _NAMES.match(expr)) is not None:
        first, last = m["first"], m["last"]
        if first.lower() not in _MONTHS:
            raise ValueError(f'Invalid month name "{first}"')
        if last and last.lower() not in _MONTHS:
            raise ValueError(f'Invalid month name "{last}"')
        numbers = _range(
            _MONTHS.index(first.lower()) + 1, _MONTHS.index(last.lower()) + 1 if last else None, None
        )
        problem = _range_problem(name, *numbers)
    elif name == "day" and _LAST.match(expr) is not None:
        return
    else:
        raise ValueError(f'Unrecognized expression "{expr}" for field "{name}"')
    if problem is not None:
        raise ValueError(f"Error validating expression {expr!r}: {problem}")


def _field(name: str, text: str) -> None:
    for expr in _SEPARATOR.split(text.strip()):
        _expression(name, expr)


def parse(expr: str, timezone: str = "UTC") -> CronFields:
    """The fields of the five-field crontab expression ``expr`` in ``timezone``; ``ValueError``
    with the message ``cron_problem`` returns."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"cron expression {expr!r} has {len(fields)} fields; {CRON_HINT}")
    where = zone(timezone)
    minute, hour, day, month, dow = fields
    names = weekday_names(dow, expr)
    try:
        # In APScheduler's order of fields: month, day, (day of week), hour, minute.
        for name, text in (("month", month), ("day", day), ("hour", hour), ("minute", minute)):
            _field(name, text)
    except ValueError as exc:
        text = re.sub(r"^Error validating expression '[^']*': ", "", str(exc))
        raise ValueError(f"invalid cron expression {expr!r}: {text}; {CRON_HINT}") from None
    return CronFields(minute, hour, day, month, names, where)


def cron_problem(expr: str, timezone: str = "UTC") -> str | None:
    """Why ``expr`` is not a valid five-field crontab expression, or None."""
    try:
        parse(expr, timezone)
    except ValueError as exc:
        return str(exc)
    return None
