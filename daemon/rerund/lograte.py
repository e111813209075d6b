"""One line a minute for an error that repeats: ``EveryMinute(log).error(message)``.

A dependency that is down (the state database, a full disk) fails every write; logging each
failure floods the log with the same line hundreds of times a second and hides everything
else. ``EveryMinute`` logs the first failure at once, counts the ones that follow within the
interval, and names that count in the next line it logs.

A leaf like ``rerund.errors`` and ``rerund.clock``: it imports no other rerund module.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["EveryMinute"]


class EveryMinute:
    """ERROR lines to ``log``, at most one per ``every`` seconds (``monotonic`` is the clock);
    thread-safe. The lines held back are counted, not lost: the next line says how many."""

    def __init__(
        self,
        log: logging.Logger,
        *,
        every: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._every = every
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._last: float | None = None
        self._held = 0

    def reset(self) -> None:
        """The error is over: the next one is logged at once (a new outage, not a repeat)."""
        with self._lock:
            self._last = None
            self._held = 0

    def error(self, message: str) -> bool:
        """Log ``message`` at ERROR unless a line went out less than ``every`` seconds ago;
        True when it was logged."""
        with self._lock:
            now = self._monotonic()
            if self._last is not None and now - self._last < self._every:
                self._held += 1
                return False
            held, self._held = self._held, 0
            since = 0.0 if self._last is None else now - self._last
            self._last = now
        if held:
            self._log.error(
                "%s (and %d more errors like it in the last %.0f s, not logged one by one)",
                message,
                held,
                since,
            )
        else:
            self._log.error("%s", message)
        return True
