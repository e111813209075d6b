"""The only module of rerund that reads the wall clock.

Everything else takes ``now`` as a parameter (an aware UTC ``datetime``), so the core stays
pure and shell tests can freeze time with freezegun.

The daemon's ``now`` is the control plane's, not this host's (``ControlPlaneClock``): the
times it compares ``now`` with — a run's end, the ``updated_at`` a resync lists from, a
rerun's due time (failure time + backoff), a budget window over reruns' creation times — are
all stamped by the control plane's clock. A host clock 30 minutes ahead would otherwise move
the watermark past every new failure, and one 10 minutes behind would hold every due rerun
10 minutes longer.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

__all__ = ["ControlPlaneClock", "utcnow"]


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


class ControlPlaneClock:
    """The control plane's time as this process knows it: the wall clock plus the skew measured
    on the control plane's last answer.

    ``observe(date)`` is called with the HTTP ``Date`` of every answer, at its receipt. The
    skew it keeps, ``date - wall()``, is a lower bound of the true skew: ``Date`` is the
    server's time truncated to the second (never later than when it answered), and the answer
    is received after it was sent. So ``now()`` is never later than the control plane's time
    (by up to a second or two plus half the round trip, which the resync overlap covers): a
    watermark taken from it never passes a failure. Only the last answer counts, so a step of
    either clock is followed at the next answer. Without any answer carrying ``Date`` the
    skew is zero: the host's clock.

    ``saw(stamp)`` is told the times the control plane stamped on what it reported (a run's
    end, from the watch stream or a listing): its clock has reached them, so ``now()`` is at least the
    latest. Without it a failure streamed at once looked up to a second in the future (``Date``
    is truncated to the second) and a rerun with no backoff waited for a timer, as long as
    polling every second. A stamp more than ``STAMP_LEAD`` ahead of the ``Date`` estimate (a
    clock stepped back, or no ``Date`` to measure from) is not used.
    """

    STAMP_LEAD = timedelta(seconds=2)  # the Date's truncation (1 s) and a slow round trip

    def __init__(self, wall: Callable[[], datetime] = utcnow) -> None:
        self._wall = wall
        self._skew = timedelta(0)
        self._seen = datetime.min.replace(tzinfo=UTC)
        self.measured = False

    def observe(self, date: datetime) -> None:
        """An answer of the control plane stamped ``date`` (its HTTP ``Date``) arrived now."""
        self._skew = date - self._wall()
        self.measured = True

    def saw(self, stamp: datetime) -> None:
        """The control plane reported something it stamped ``stamp``: its clock has reached it
        (ignored when more than ``STAMP_LEAD`` ahead of the ``Date`` estimate)."""
        if stamp <= self._wall() + self._skew + self.STAMP_LEAD:
            self._seen = max(self._seen, stamp)

    @property
    def skew(self) -> timedelta:
        """The control plane's clock minus this host's (positive: this host is behind)."""
        return self._skew

    def now(self) -> datetime:
        """The control plane's current time (never later than it, see the class docstring)."""
        estimate = self._wall() + self._skew
        if estimate < self._seen <= estimate + self.STAMP_LEAD:
            return self._seen
        return estimate

    def local(self, at: datetime) -> datetime:
        """The control-plane time ``at`` on this host's clock (when a local timer must fire)."""
        return at - self._skew
