"""The clock skew between this host and the control plane, said once in the log."""

from __future__ import annotations

import logging

from rerund.clock import ControlPlaneClock

__all__ = ["SKEW_WARNING_S", "SkewWatch"]

log = logging.getLogger("rerund.daemon")

# Clock skew worth a warning: well above the Date header's second and a slow round trip.
SKEW_WARNING_S = 30.0


class SkewWatch:
    """Called after each resync pass: one WARNING when the clocks are more than
    ``SKEW_WARNING_S`` apart, one INFO when they agree again (within half of it), and one
    WARNING if no answer carried a ``Date`` while ``dates_expected`` (the flyte adapter reads
    them; a control plane handed in may not)."""

    def __init__(self, cp_clock: ControlPlaneClock, *, dates_expected: bool) -> None:
        self.cp_clock = cp_clock
        self._dates_expected = dates_expected
        self._skew_warned = False
        self._no_date_warned = False

    def check(self) -> None:
        if not self.cp_clock.measured:
            if self._dates_expected and not self._no_date_warned:
                self._no_date_warned = True
                log.warning(
                    "the control plane's answers carry no HTTP Date header, so rerund cannot measure "
                    "the clock skew and uses this host's clock for watermarks and due times; keep the "
                    "host's time in sync (NTP): a clock ahead of the control plane's misses failures"
                )
            return
        skew = self.cp_clock.skew.total_seconds()
        if abs(skew) > SKEW_WARNING_S and not self._skew_warned:
            self._skew_warned = True
            log.warning(
                "this host's clock is %.0fs %s the control plane's (measured on its answers' HTTP Date); "
                "rerund uses the control plane's time for watermarks and due times, so nothing is missed "
                "or delayed, but fix the host's time sync (NTP): the log's times and this host's other "
                "programs are off by as much",
                abs(skew),
                "behind" if skew > 0 else "ahead of",
            )
        elif abs(skew) <= SKEW_WARNING_S / 2 and self._skew_warned:
            self._skew_warned = False
            log.info("this host's clock agrees with the control plane's again (within %.0fs)", abs(skew))
