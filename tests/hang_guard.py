"""A hang guard: turns "never returns" into a test failure instead of a wedged CI run.

Not a timing assertion: the limit is far above any honest run; it only bounds a regression
(an endless loop, an exponential walk) so that it fails with a message.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Hung(Exception):
    """The guarded block did not return within its hang limit."""


@contextmanager
def hang_guard(seconds: int, what: str) -> Iterator[None]:
    """Raise ``Hung`` in the guarded block after ``seconds`` (SIGALRM; main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        raise Hung(f"{what} did not return within {seconds}s: a loop or walk does not terminate")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
