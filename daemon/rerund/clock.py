"""The only module of rerund that reads the wall clock.

Everything else takes ``now`` as a parameter (an aware UTC ``datetime``), so the core stays
pure and shell tests can freeze time with freezegun.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["utcnow"]


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)
