"""Where each resync pass lists from, per listing (a scope, or ``*/*`` for the org-wide listing
of pattern scopes). No I/O of its own: the watermarks are ``OwedWork``'s, the stored ones and
the followed reruns the recorder's; this object keeps only when it last listed failed runs.

Contract:

- *Failed runs*: a pass lists from ``since`` (the watermark minus the overlap) every
  ``DEEP_LISTING_EVERY`` and after a failed listing, else from the last listing minus
  ``CHANGE_MARGIN`` (``failed_start``): a pass costs what changed, not the overlap's worth.
- *Reruns*: the listing reaches back to the budgets' windows, and to the oldest rerun followed
  to its outcome or failure still owed something, by at most ``MAX_LISTING_REACH``
  (``reruns_since``): one rerun that never ends cannot pin the window to its creation time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from rerund.core.runs import RunRef
from rerund.core.scopes import Coverage, plan
from rerund.runtime.reconcile.index import CHANGE_MARGIN
from rerund.runtime.reconcile.owed import OwedWork
from rerund.runtime.reconcile.recorder import DecisionRecorder

__all__ = ["DEEP_LISTING_EVERY", "MAX_LISTING_REACH", "ListingWindows"]

# How often the failed runs of the whole overlap are listed; the passes in between list those
# updated since the last listing (less CHANGE_MARGIN). A failure the control plane shows late,
# within the overlap, is found by the next such listing.
DEEP_LISTING_EVERY = timedelta(minutes=1)
# How much further back than the resync window the reruns listing may reach; older running
# reruns are followed on their own, and for older owed failures the rerun's name, a function of
# (root, attempt), guards against a second create.
MAX_LISTING_REACH = timedelta(hours=1)
_KEYS_KEPT = 4096  # (project, domain) pairs whose listing key ``key_of`` remembers


class ListingWindows:
    """The listings of one reconcile loop over ``coverage`` (``scopes``: the (project, domain)
    pairs listed, one ``*/*`` for pattern scopes) and where each starts."""

    def __init__(self, coverage: Coverage, owed: OwedWork, recorder: DecisionRecorder) -> None:
        self._coverage = coverage
        self.scopes = tuple(plan(coverage.scopes))
        self._owed = owed
        self._recorder = recorder
        # Per listing of failed runs: when it last listed the whole overlap, and last listed.
        self._failed_listed: dict[str, tuple[datetime, datetime]] = {}
        # (project, domain) -> the key of the listing that finds its runs (``key_of``, asked for
        # every failed run the stream carries): projects and domains are few.
        self._keys: dict[tuple[str, str], str] = {}

    def since(self, scope: str, now: datetime) -> datetime:
        """The start of ``scope``'s resync window (watermark minus overlap); the first call
        restores the watermark the ledger kept, if any."""
        if self._owed.watermark(scope) is None:
            stored = self._recorder.stored_watermark(scope)
            if stored is not None:
                self._owed.restore(scope, stored)
        return self._owed.since(scope, now)

    def floor(self, scope: str, now: datetime) -> datetime:
        """The oldest failure time this process considers in ``scope`` (fixed on first use,
        after the ledger's watermark, if any, is restored)."""
        if not self._owed.has_floor(scope):
            self.since(scope, now)
        return self._owed.floor(scope, now)

    def covers(self, ref: RunRef) -> bool:
        """Whether run ``ref`` is in a scope of the loop (an org-wide listing or stream also
        carries runs of projects no scope names)."""
        return self._coverage.covers(ref.project, ref.domain)

    def key_of(self, ref: RunRef) -> str:
        """The key of the listing that finds run ``ref``."""
        pair = (ref.project, ref.domain)
        key = self._keys.get(pair)
        if key is None:
            key = next((f"{p}/{d}" for p, d in self.scopes if self._owed.finds(f"{p}/{d}", ref)), ref.scope)
            if len(self._keys) >= _KEYS_KEPT:
                self._keys.clear()
            self._keys[pair] = key
        return key

    def failed_start(self, scope: str, since: datetime, now: datetime) -> tuple[datetime, bool]:
        """Where this pass's listing of failed runs in ``scope`` starts, and whether it lists
        the whole overlap (from ``since``)."""
        last = self._failed_listed.get(scope)
        if last is None or now - last[0] >= DEEP_LISTING_EVERY or last[1] - CHANGE_MARGIN <= since:
            return since, True
        return last[1] - CHANGE_MARGIN, False

    def failed_listed(self, scope: str, now: datetime, *, deep: bool) -> None:
        """The listing ``failed_start`` chose succeeded at ``now``."""
        self._failed_listed[scope] = (now if deep else self._failed_listed[scope][0], now)

    def failed_listing_lost(self, scope: str) -> None:
        """The listing failed: the next pass lists the whole overlap."""
        self._failed_listed.pop(scope, None)

    def reruns_since(self, scope: str, now: datetime, budgets: dict[str, timedelta]) -> datetime:
        """Where the reruns listing of ``scope`` starts: the resync window, the longest budget
        window, and back to the oldest followed rerun or owed failure by at most
        ``MAX_LISTING_REACH``."""
        since = self.since(scope, now)
        if budgets:
            since = min(since, now - max(budgets.values()))
        reach = since - MAX_LISTING_REACH
        finds = lambda ref: self._owed.finds(scope, ref)  # noqa: E731
        for older in (self._recorder.oldest_tracked(finds), self._owed.oldest_owed(scope)):
            if older is not None and older < since:
                since = max(older, reach)
        return since
