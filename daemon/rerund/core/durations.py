"""Durations as policy files write them (``30s``, ``10m``, ``1h``, ``1d``, ``1h30m``, ``200ms``).

Pure parsing and formatting, shared by the policy loader (which validates) and the decision
core (which prints durations in reasons). Seconds may carry a fraction (``1.5s``).
"""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["DURATION_PATTERN", "MAX_DURATION", "format_duration", "parse_duration"]

DURATION_PATTERN = r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$"
_DURATION = re.compile(DURATION_PATTERN)
_HINT = "use a number with a unit ms, s, m, h or d, e.g. 30s, 10m, 1h, 1d or 1h30m"
# Longer durations cannot be added to a date (a due time, a budget window) without overflowing.
MAX_DURATION = timedelta(days=36500)


def parse_duration(text: object) -> timedelta:
    """Parse ``30s`` / ``10m`` / ``1h`` / ``1d`` / ``200ms`` (and combinations in d-h-m-s-ms order).

    Raises ``ValueError`` with a message that says how to fix it; never accepts a bare number
    (is ``30`` seconds or minutes?) nor a duration over ``MAX_DURATION`` (100 years).
    """
    if isinstance(text, timedelta):
        return text
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r}: {_HINT}")
    m = _DURATION.match(text.strip())
    if not text.strip() or m is None or not any(m.groups()):
        raise ValueError(f"invalid duration {text!r}: {_HINT}")
    days, hours, minutes, seconds, millis = (g or "0" for g in m.groups())
    too_long = f"invalid duration {text!r}: longer than the maximum of 36500d (100 years)"
    try:
        value = timedelta(
            days=int(days),
            hours=int(hours),
            minutes=int(minutes),
            seconds=float(seconds),
            milliseconds=int(millis),
        )
    except OverflowError:
        raise ValueError(too_long) from None
    if value > MAX_DURATION:
        raise ValueError(too_long)
    return value


def format_duration(value: timedelta) -> str:
    """The shortest policy-file spelling of ``value``: ``1h30m``, ``2s``, ``1.25s``, ``0s``."""
    total = value.total_seconds()
    if total < 0:
        return "-" + format_duration(-value)
    whole = int(total)
    frac = round(total - whole, 3)
    if frac >= 1:  # rounding carried
        whole, frac = whole + 1, 0.0
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = []
    if days:
        parts.append(f"{days}d")
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if seconds or frac or not parts:
        sec = f"{seconds + frac:.3f}".rstrip("0").rstrip(".") if frac else str(seconds)
        parts.append(f"{sec}s")
    return "".join(parts)
