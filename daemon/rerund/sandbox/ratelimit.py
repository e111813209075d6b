"""``rerund sandbox --rate-limit N/s``: a gateway's token bucket in front of every RPC.

Production gateways limit the request rate per client and answer RESOURCE_EXHAUSTED (HTTP 429)
beyond it. ``TokenBucket`` is the pure rule (refill ``rate`` tokens per second up to
``capacity``; a request takes one or is refused); ``RateLimiter`` applies it to every Flyte RPC
(unary calls and stream starts) as a Connect interceptor and counts what it refused. The rate
is changed at runtime with ``POST /_sandbox/faults {"rate_limit": "100/s"}`` (0 = unlimited).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext

__all__ = ["RateLimiter", "RateMeter", "TokenBucket", "format_rate", "parse_rate"]

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|second|m|min|minute))?\s*$")


def parse_rate(text: str | float | int) -> float:
    """``"100/s"``, ``"6000/min"``, ``"2.5/s"``, ``100`` or ``"0"`` (unlimited) -> requests per
    second. Raises ValueError saying the accepted forms."""
    if isinstance(text, bool):
        raise ValueError(f"rate limit {text!r} is not a rate; use N/s, e.g. 100/s (0 = unlimited)")
    if isinstance(text, int | float):
        value = float(text)
    else:
        m = _RATE.match(text)
        if m is None:
            raise ValueError(
                f"rate limit {text!r} is not a rate; use N/s or N/min, e.g. 100/s (0 = unlimited)"
            )
        value = float(m.group(1))
        if m.group(2) in ("m", "min", "minute"):
            value /= 60.0
    if value < 0 or value != value or value == float("inf"):
        raise ValueError(f"rate limit must be a finite number >= 0 per second, got {text!r}")
    return value


def format_rate(rate: float) -> str:
    return "unlimited" if rate <= 0 else f"{rate:g}/s"


@dataclass
class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` banked (``rate`` when 0: one second's
    worth, at least 1). Pure: time comes in as ``now`` (monotonic seconds).

    Invariant: over any window of length T the bucket grants at most ``capacity + rate * T``.
    ``rate <= 0`` grants everything.
    """

    rate: float
    capacity: float = 0.0
    _tokens: float = -1.0
    _last: float = 0.0

    def __post_init__(self) -> None:
        if self.capacity <= 0:
            self.capacity = max(1.0, self.rate)

    def take(self, now: float) -> bool:
        """Take one token at ``now``; False when none is left."""
        if self.rate <= 0:
            return True
        if self._tokens < 0:  # first use: a full bucket
            self._tokens, self._last = self.capacity, now
        elapsed = max(0.0, now - self._last)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class RateMeter:
    """Counts RPCs per whole second of the sandbox's monotonic clock (the last ``keep`` seconds),
    so a benchmark can read the peak rate a client sent without sampling it from outside.
    A Connect metadata interceptor; ``GET /_sandbox/rates`` serves ``as_json``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, keep: int = 3600) -> None:
        self._clock = clock
        self._keep = keep
        self.per_second: dict[int, int] = {}

    async def on_start(self, ctx: RequestContext[Any, Any]) -> None:
        second = int(self._clock())
        self.per_second[second] = self.per_second.get(second, 0) + 1
        if len(self.per_second) > self._keep:
            for old in sorted(self.per_second)[: len(self.per_second) - self._keep]:
                del self.per_second[old]

    async def on_end(self, token: None, ctx: RequestContext[Any, Any], error: Exception | None) -> None:
        return None

    def as_json(self) -> dict[str, Any]:
        seconds = sorted(self.per_second)
        return {
            "peak_rpc_per_s": max(self.per_second.values(), default=0),
            "per_second": [self.per_second[s] for s in seconds],
        }


class RateLimiter:
    """A Connect metadata interceptor refusing RPCs beyond the bucket with RESOURCE_EXHAUSTED."""

    def __init__(self, rate: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.bucket = TokenBucket(rate)
        self.refused = 0
        self.changed = False

    @property
    def rate(self) -> float:
        return self.bucket.rate

    def set_rate(self, rate: float) -> None:
        self.bucket = TokenBucket(rate)
        self.changed = True

    async def on_start(self, ctx: RequestContext[Any, Any]) -> None:
        if not self.bucket.take(self._clock()):
            self.refused += 1
            raise ConnectError(
                Code.RESOURCE_EXHAUSTED,
                f"rate limit exceeded: {ctx.method().name} refused at {format_rate(self.bucket.rate)}; "
                "slow down and retry after a backoff",
            )

    async def on_end(self, token: None, ctx: RequestContext[Any, Any], error: Exception | None) -> None:
        return None
