"""The core's crontab grammar (``rerund.core.cron``) accepts and refuses exactly what
APScheduler 3's ``CronTrigger`` does, with the same messages: the policy language checks a
schedule with the core's, the cron adapter runs it with APScheduler's."""

from __future__ import annotations

import re

from apscheduler.triggers.cron import CronTrigger
from hypothesis import given, settings
from hypothesis import strategies as st

from rerund.core.cron import CRON_HINT, cron_problem, weekday_names, zone


def apscheduler_problem(expr: str, timezone: str = "UTC") -> str | None:
    """Why APScheduler 3 refuses ``expr`` (what the cron adapter said before the core had a
    grammar of its own), or None."""
    try:
        fields = expr.split()
        if len(fields) != 5:
            raise ValueError(f"cron expression {expr!r} has {len(fields)} fields; {CRON_HINT}")
        where = zone(timezone)
        minute, hour, day, month, dow = fields
        try:
            CronTrigger(
                minute=minute,
                hour=hour,
                day=day,
                month=month,
                day_of_week=weekday_names(dow, expr),
                timezone=where,
            )
        except ValueError as exc:
            if "day of week" in str(exc) or "cron expression" in str(exc):
                raise
            text = re.sub(r"^Error validating expression '[^']*': ", "", str(exc))
            raise ValueError(f"invalid cron expression {expr!r}: {text}; {CRON_HINT}") from None
    except ValueError as exc:
        return str(exc)
    return None


_NUMBER = st.integers(min_value=0, max_value=70).map(str)
_NAME = st.sampled_from(["jan", "Feb", "dec", "foo", "last", "LAST", "mon", "x"])
_ATOM = st.one_of(
    st.just("*"),
    _NUMBER,
    _NAME,
    st.tuples(_NUMBER, _NUMBER).map("-".join),
    st.tuples(_NAME, _NAME).map("-".join),
    st.tuples(st.sampled_from(["*", "1", "5", "3-9", "20-10", "jan-mar"]), _NUMBER).map("/".join),
    st.tuples(_NUMBER, _NUMBER, _NUMBER).map(lambda t: f"{t[0]}-{t[1]}/{t[2]}"),
    st.sampled_from(["", "?", "1,,2", "*/", "-1", "1-", "L", "5W"]),
)
_FIELD = st.lists(_ATOM, min_size=1, max_size=3).map(",".join)
_DOW = st.sampled_from(["*", "1-5", "mon-fri", "0", "7", "8", "5-1", "sun,sat", "*/2", "x"])


@settings(max_examples=400, deadline=None)
@given(minute=_FIELD, hour=_FIELD, day=_FIELD, month=_FIELD, dow=_DOW)
def test_the_core_grammar_says_what_apscheduler_says(
    minute: str, hour: str, day: str, month: str, dow: str
) -> None:
    expr = " ".join(field or "*" for field in (minute, hour, day, month, dow))
    assert cron_problem(expr) == apscheduler_problem(expr)


def test_the_core_grammar_says_what_apscheduler_says_about_these() -> None:
    for expr in (
        "0 3 * * *",
        "61 3 * * *",
        "0 25 * * *",
        "0 0 0 * *",
        "0 0 32 * *",
        "0 0 last * *",
        "0 0 * 13 *",
        "0 0 * jan-mar *",
        "0 0 * mar-jan *",
        "0 0 * foo *",
        "*/0 * * * *",
        "*/60 * * * *",
        "5-3 * * * *",
        "0-0/59 * * * *",
        "0 3 * * 8",
        "0 3 * * 5-1",
        "0 3 * *",
        "a b c d e",
    ):
        assert cron_problem(expr) == apscheduler_problem(expr), expr
    assert cron_problem("0 3 * * *", "Mars/Olympus") == apscheduler_problem("0 3 * * *", "Mars/Olympus")
