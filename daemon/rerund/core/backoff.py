"""Run-level exponential backoff with deterministic jitter.

``base(n) = min(initial * factor**(n-1), max)`` and ``delay(n)`` lies in
``[base(n)*(1-jitter), base(n)*(1+jitter)]``. The jitter is not random: it is drawn from a
hash of (root, n), so ``rerund explain``, the daemon and a restarted daemon all compute the
same due time for the same rerun, while different lineages still spread out.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import timedelta

__all__ = ["Backoff", "jitter_unit"]


def jitter_unit(root: str, attempt: int) -> float:
    """A stable value in [-1, 1] for (root, attempt): the position inside the jitter band."""
    digest = hashlib.blake2b(f"backoff\x00{root}\x00{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / float(2**64 - 1) * 2.0 - 1.0


@dataclass(frozen=True)
class Backoff:
    """Backoff settings after merging defaults < policy (all fields known).

    Invariants the loader guarantees: ``initial >= 0``, ``factor >= 1``, ``max >= initial``,
    ``0 <= jitter < 1``.
    """

    initial: timedelta
    factor: float
    max: timedelta
    jitter: float

    def base(self, attempt: int) -> timedelta:
        """``min(initial * factor**(attempt-1), max)``; monotone non-decreasing in ``attempt``."""
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt}")
        cap = self.max.total_seconds()
        initial = self.initial.total_seconds()
        # Avoid float overflow for large attempts: once past the cap, stay at the cap.
        exponent = attempt - 1
        if initial <= 0:
            return timedelta(0)
        if self.factor > 1 and exponent * math.log(self.factor) > math.log(cap / initial + 1) + 1:
            return self.max
        return timedelta(seconds=min(initial * self.factor**exponent, cap))

    def delay(self, root: str, attempt: int) -> timedelta:
        """The jittered delay of rerun ``attempt`` of lineage ``root`` (deterministic).

        Always within ``[base*(1-jitter), base*(1+jitter)]`` up to rounding to whole
        milliseconds.
        """
        base = self.base(attempt).total_seconds()
        # No band: base * (1 + 0 * u) is base for every u in [-1, 1], so no hash is drawn.
        seconds = base if self.jitter == 0 else base * (1.0 + self.jitter * jitter_unit(root, attempt))
        return timedelta(milliseconds=round(seconds * 1000))
