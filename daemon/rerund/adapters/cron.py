"""Cron schedules of reproduction checks, on APScheduler 3.x's ``CronTrigger``.

Only adapters import apscheduler, so the firings are computed here; the grammar (and the
crontab weekday numbering) is the core's (``rerund.core.cron``), which the policy language
checks a ``schedule:`` with. ``CronSchedule`` is pure (no clock read): like APScheduler's
triggers, it takes the time as an argument, which is what lets the schedule tests use fixed
times instead of sleeps.

Every walk through time here terminates with bounded work. Daylight saving time is the trap:
an aware local time plus a ``timedelta`` loses ``fold``, so at an autumn change "the firing
after this one" can be the same firing again. So the search never steps from one local
firing to the next: ``latest_firing`` bisects over whole UTC seconds, asking only "what is the
first firing at or after this UTC instant", which it asks at most ``MAX_TRIGGER_CALLS`` times
(two trigger evaluations each at most) whatever the expression, zone or instant.

The other trap is crontab's own rule at a DST change, which the trigger does not follow: when
the clock falls back, a job whose minute and hour fields are both fixed (``30 1 * * *``) fires
once, at the first occurrence of its local time, not again when that time repeats; a job with
``*`` in its minute or hour field (``*/5 * * * *``, ``0 * * * *``) fires at every real
occurrence (Vixie/Debian cron's "wildcard" jobs). ``CronSchedule.first_at_or_after`` skips
the repeated occurrence of a fixed-time job, so every walk built on it — the next firing, the
latest one, the reproduction runner's due slots — fires such a job once. When the clock
springs forward over a fixed local time, the job fires once, an hour (the gap) later
(APScheduler's rule; crontab fires it at the change itself).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rerund.core.cron import cron_problem, parse, timezone_problem, zone

__all__ = ["MAX_TRIGGER_CALLS", "CronSchedule", "cron_problem", "latest_firing", "timezone_problem"]

# How far back ``latest_at_or_before`` looks, widening step by step (a yearly cron needs 366 days).
_LOOKBACK = (
    timedelta(minutes=2),
    timedelta(hours=2),
    timedelta(days=2),
    timedelta(days=32),
    timedelta(days=367),
    timedelta(days=4 * 366 + 1),
)
# One probe per window, then a bisection over the whole seconds of the widest window (< 2**27).
MAX_TRIGGER_CALLS = len(_LOOKBACK) + int(_LOOKBACK[-1].total_seconds()).bit_length() + 1
_SECOND = timedelta(seconds=1)


def _trigger(expr: str, timezone: str) -> Any:
    from apscheduler.triggers.cron import CronTrigger

    f = parse(expr, timezone)  # the core's grammar: ValueError with what to write instead
    return CronTrigger(
        minute=f.minute, hour=f.hour, day=f.day, month=f.month, day_of_week=f.day_of_week, timezone=f.zone
    )


class CronSchedule:
    """The firing times of one crontab expression in one timezone (pure: no clock reads)."""

    def __init__(self, expr: str, timezone: str = "UTC") -> None:
        """Raises ``ValueError`` (the same message as ``cron_problem``) for a bad expression."""
        self.expr = expr
        self.timezone = timezone
        self._trigger = _trigger(expr, timezone)
        self._zone = zone(timezone)
        minute, hour = expr.split()[:2]
        # crontab's "wildcard" jobs fire at every real occurrence of a repeated local time.
        self._once_per_local_time = not (minute.startswith("*") or hour.startswith("*"))

    def first_at_or_after(self, when: datetime) -> datetime | None:
        """The first firing at or after ``when`` (aware), in UTC, or None (one trigger call;
        two for a fixed-time job whose next firing is a local time the clock repeats: that
        repetition is skipped, as crontab skips it)."""
        fire = self._trigger.get_next_fire_time(None, when.astimezone(UTC))
        if fire is not None and self._once_per_local_time and _repeated(fire, self._zone):
            fire = self._trigger.get_next_fire_time(None, _end_of_repetition(fire, self._zone))
        return None if fire is None else fire.astimezone(UTC)

    def next_after(self, when: datetime) -> datetime | None:
        """The first firing strictly after ``when`` (aware UTC), or None if there is none.

        Invariant (property-tested over every zone with transitions, 2020-2035): the result
        is strictly later than ``when``, so a caller that steps from firing to firing always
        moves forward.
        """
        when = when.astimezone(UTC)
        fire = self.first_at_or_after(when + timedelta(microseconds=1))
        if fire is not None and fire <= when:  # never step backwards, whatever the trigger says
            fire = self.first_at_or_after(when.replace(microsecond=0) + _SECOND)
            return fire if fire is not None and fire > when else None
        return fire

    def latest_at_or_before(self, when: datetime) -> datetime | None:
        """The last firing at or before ``when`` (aware UTC), or None within 4 years.

        At most ``MAX_TRIGGER_CALLS`` calls of ``first_at_or_after`` (see ``latest_firing``).
        """
        return latest_firing(self.first_at_or_after, when)


def _repeated(when: datetime, zone: ZoneInfo) -> bool:
    """Whether the local time at instant ``when`` occurred earlier already (the clock fell back)."""
    return when.astimezone(zone).fold == 1


def _end_of_repetition(when: datetime, zone: ZoneInfo) -> datetime:
    """The first whole UTC second after ``when`` whose local time is not a repetition (pure).

    ``when`` lies in the repeated span, which lasts as long as the clock went back (``gap``),
    so ``when + gap`` lies past it; bisects over the seconds between (at most 14 steps for the
    2 hours the largest change in the database moves)."""
    local = when.astimezone(zone)
    gap = local.replace(fold=0).utcoffset() - local.utcoffset()  # type: ignore[operator]
    lo = when.astimezone(UTC).replace(microsecond=0)  # repeated
    hi = lo + gap + _SECOND  # not repeated
    while hi - lo > _SECOND:
        mid = lo + (hi - lo) // 2 // _SECOND * _SECOND
        if _repeated(mid, zone):
            lo = mid
        else:
            hi = mid
    return hi


def latest_firing(
    first_at_or_after: Callable[[datetime], datetime | None], when: datetime
) -> datetime | None:
    """The last firing at or before ``when``, given "first firing at or after t" (pure).

    Widens the look-back window step by step (a minutely cron answers from the first, a yearly
    one from the fifth), then bisects over whole UTC seconds for the latest start whose first
    firing is still at or before ``when``. Terminates after at most ``MAX_TRIGGER_CALLS`` calls
    of ``first_at_or_after``; the result is never after ``when``.
    """
    when = when.astimezone(UTC)
    end = when.replace(microsecond=0)
    for window in _LOOKBACK:
        lo = end - window
        fire = first_at_or_after(lo)
        if fire is None or fire > when:
            continue
        # Invariant: first_at_or_after(lo) <= when < first_at_or_after(lo + span seconds).
        best = fire
        span = int(window.total_seconds()) + 1
        while span > 1:
            half = span // 2
            probe = first_at_or_after(lo + half * _SECOND)
            if probe is not None and best <= probe <= when:
                lo, best, span = lo + half * _SECOND, probe, span - half
            else:
                span = half
        return best
    return None
