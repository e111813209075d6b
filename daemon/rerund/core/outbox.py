"""The outbox's values and rules, pure: an event's unique key and when a failed send is retried.

An event that must be sent once (a lineage exhausted, a reproduction check that did not
reproduce) is named by a key that every replica, and the same replica after a restart,
computes alike from the event's facts; the outbox stores one row per key, so putting the same
event twice sends it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rerund.core.backoff import Backoff

__all__ = ["RETRY", "OutboxItem", "exhausted_key", "mismatch_key", "retry_at"]

# A failed send is retried after 5 s, 10 s, 20 s, ... at most every 10 minutes, for as long as
# it fails (every failure is logged and counted; the row stays until delivered).
RETRY = Backoff(initial=timedelta(seconds=5), factor=2.0, max=timedelta(minutes=10), jitter=0.0)


@dataclass(frozen=True)
class OutboxItem:
    """One event waiting to be sent: its key, its payload and the sends that failed so far."""

    key: str
    payload: dict[str, Any]
    attempts: int


def exhausted_key(project: str, domain: str, root: str) -> str:
    """The key of "lineage ``root`` of ``project/domain`` is exhausted": a lineage is given up
    on once, whatever failure of it was decided last."""
    return f"exhausted:{project}/{domain}/{root}"


def mismatch_key(check: str, scheduled_for: str, *, manual: bool = False) -> str:
    """The key of "reproduction check ``check`` fired for ``scheduled_for`` did not
    reproduce" (a manual firing, ``rerund repro run``, is another event than the scheduled one)."""
    return f"repro-mismatch:{check}:{scheduled_for}{':manual' if manual else ''}"


def retry_at(attempts: int, now: datetime) -> datetime:
    """When a send that has now failed ``attempts`` times (>= 1) is tried again."""
    return now + RETRY.base(max(1, attempts))
