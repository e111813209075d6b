"""Durations, one parser for every file and flag: ``30s``, ``10m``, ``1h``, ``1d``, ``200ms`` and
combinations in d-h-m-s-ms order (``1h30m``, ``1s500ms``); a number may carry a fraction
(``1.5s``, ``0.5h``, ``.5s``) except milliseconds; a space may separate a number from its unit.

Where a bare number is also accepted (the daemon's settings and flags, the sandbox: a number of
seconds), the caller says so with ``bare_seconds=True``; policy files never accept one (is
``30`` seconds or minutes?). The sandbox's workload language has no days (``days=False``).
Every caller keeps its own error wording; ``DurationError.kind`` says what was wrong.
Pure parsing and formatting: the policy loader, the decision core (durations in reasons), the
settings and the sandbox (a shared pure helper, the one core module it imports) all use it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Literal

__all__ = ["DURATION_PATTERN", "MAX_DURATION", "DurationError", "format_duration", "parse_duration"]

_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)"
DURATION_PATTERN = "".join(
    (
        r"^\s*",
        rf"(?:({_NUM})\s*d)?\s*",
        rf"(?:({_NUM})\s*h)?\s*",
        rf"(?:({_NUM})\s*m(?!s))?\s*",
        rf"(?:({_NUM})\s*s)?\s*",
        r"(?:(\d+)\s*ms)?\s*$",
    )
)
_DURATION = re.compile(DURATION_PATTERN)
_BARE = re.compile(rf"^\s*({_NUM})\s*$")
_HINT = "use a number with a unit ms, s, m, h or d, e.g. 30s, 10m, 1h, 1d or 1h30m"
# Longer durations cannot be added to a date (a due time, a budget window) without overflowing.
MAX_DURATION = timedelta(days=36500)


class DurationError(ValueError):
    """Not a duration: ``kind`` is ``invalid``, ``negative`` (a bare negative number) or
    ``too_long`` (over ``MAX_DURATION``). The message is the policy files' wording."""

    def __init__(self, message: str, kind: Literal["invalid", "negative", "too_long"]) -> None:
        super().__init__(message)
        self.kind = kind


def parse_duration(text: object, *, bare_seconds: bool = False, days: bool = True) -> timedelta:
    """Parse ``30s`` / ``10m`` / ``1h`` / ``1d`` / ``200ms`` / ``1h30m`` (see the module docstring).

    Raises ``DurationError`` (a ``ValueError``) with a message that says how to fix it; never
    accepts a duration over ``MAX_DURATION`` (100 years), nor a bare number unless
    ``bare_seconds``, nor days unless ``days``.
    """
    if isinstance(text, timedelta):
        return text
    invalid = DurationError(f"invalid duration {text!r}: {_HINT}", "invalid")
    too_long = DurationError(
        f"invalid duration {text!r}: longer than the maximum of 36500d (100 years)", "too_long"
    )
    if bare_seconds and isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise DurationError(f"invalid duration {text!r}: a duration must be >= 0", "negative")
        return _bounded(lambda: timedelta(seconds=float(text)), too_long)
    if not isinstance(text, str):
        raise invalid
    bare = _BARE.match(text) if bare_seconds else None
    if bare is not None:
        return _bounded(lambda: timedelta(seconds=float(bare.group(1))), too_long)
    m = _DURATION.match(text)
    if not text.strip() or m is None or not any(m.groups()) or (m.group(1) and not days):
        raise invalid
    d, h, mins, secs, millis = (float(g) if g else 0.0 for g in m.groups())
    return _bounded(
        lambda: timedelta(days=d, hours=h, minutes=mins, seconds=secs, milliseconds=millis), too_long
    )


def _bounded(make: Callable[[], timedelta], too_long: DurationError) -> timedelta:
    try:
        value = make()
    except OverflowError:
        raise too_long from None
    if value > MAX_DURATION:
        raise too_long
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
