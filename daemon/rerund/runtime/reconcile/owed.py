"""The work still owed: which failures are settled, which are pending, and how far back the
next resync must look. Pure bookkeeping — no I/O, no clock (``now`` is a parameter); the loop
restores and saves the watermark through the ledger.

Invariants (tested in ``tests/runtime/test_owed.py`` without a control plane):

- *The watermark never passes a failure still owed something.* ``advance(scope, now)`` sets
  the watermark of ``scope`` to the minimum of ``now`` and the failure time of every pending
  item of the scope, so the next listing (from ``since`` = watermark - overlap) finds each
  pending failure again, after a crash as well (the ledger keeps the watermark).
- *Except a failure waiting for a fix* (``WaitForVersion``, possibly for days): it stays
  pending but does not hold the listing's watermark (``advance``), or every pass would list
  every failure since. The watermark kept across a restart (``durable``) is held back by it,
  so after a restart the first listing recomputes it from the control plane like any other
  pending failure: correctness rests on the one saved watermark, never on a second record.
- *A failure is settled only by ``settle``.* Pending items (scheduled, deferred by a budget,
  an unread failure, a create still being retried) stay until the loop carried out their
  decision; ``due(now)`` hands them back when their time has come.
- *A settled failure costs nothing until it changes.* The seen-cache keys a failure by run and
  its (phase, end time) marker: the same marker is skipped. Its decision was carried out (a
  rerun issued, given up, ignored) and is final: a policy reload (``policies_changed``) does not
  make it again. A reload owes a new decision, at the next pass and from cached facts without a
  read, only to the failures still owed something (deferred, waiting for a fix, held) and to
  those whose rerun the control plane refused (``settle(final=False)``) that the last resync
  listed — so a reload costs what is owed, not what the cache holds (issue 24). A failure settled
  for good keeps no facts in the cache, only its marker.
- *A FAILED run whose error details are late is never settled on them.* It is read again
  every ``error_recheck`` for at most ``error_wait`` after it failed (``await_error``, pure:
  ``error_recheck_at``), then decided without them.
- *The seen-cache stays within its byte budget and capacity* (``seen_bytes``,
  ``seen_capacity``; a ``SizedCache``) except for failures the next resync lists again:
  evicting those would cost a failure read on every pass. Past its bounds it holds the resync
  window, and shrinks back as failures fall out of it. An evicted failure is read again if it
  is listed again (after a restart), and its decision is the same.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from rerund.core.runs import FailureFacts, RunRef, RunSummary
from rerund.core.scopes import Coverage
from rerund.sizedcache import ENTRY_BYTES, SizedCache, str_bytes

# The seen-cache's bounds. What a later step asks it: the next resync lists its window again
# (those entries are kept past the bounds: ``_listed_again``), and a watch stream that
# reconnects sends a snapshot of each scope's latest runs (up to 100 on both services, see
# FLYTE-WIRE.md) before its updates. Nothing asks about a settled failure older than both, so the
# cache holds what the next pass and a reconnect need (~2,000 failures beyond the window, ~400
# bytes each settled), not an hour of history (it held 20,000 and 8 MiB until round 7).
SEEN_BYTES = 2 * 1024 * 1024
SEEN_CAPACITY = 2_000
# What the facts of a failure cost besides their strings: the FailureFacts, its summary, error
# and label dicts (the RunSpec and resources views are shared between failures; measured).
_FACTS_BYTES = 1500

__all__ = [
    "SEEN_BYTES",
    "SEEN_CAPACITY",
    "LateError",
    "Marker",
    "OwedWork",
    "Pending",
    "Seen",
    "Waiting",
    "error_recheck_at",
]

Marker = tuple[str, datetime | None]
"""What identifies one failure of a run: its phase and end time (a rerun of the same name
that fails again has another end time)."""


Waiting = tuple[tuple[str, str, str], str]
"""A ``WaitForVersion``: the failed task (project, domain, name) and the version it failed on."""


def error_recheck_at(
    failed_at: datetime, now: datetime, *, wait: timedelta, recheck: timedelta
) -> datetime | None:
    """When to read again a FAILED run whose error details have not arrived: every ``recheck``,
    never later than ``wait`` after ``failed_at``; None once ``wait`` has passed (decide
    without them). No side effects."""
    waited = now - failed_at
    if waited >= wait:
        return None
    return now + min(recheck, wait - waited)


@dataclass(frozen=True)
class LateError:
    """A failure whose error details are late: read again at ``due``; ``first`` the first time
    it waits (said once)."""

    due: datetime
    first: bool


@dataclass(slots=True)
class Seen:
    marker: Marker
    generation: int
    facts: FailureFacts | None
    settled: bool
    # Settled for good (its decision carried out); False: settled only until the policies change
    # (its rerun was refused by the control plane, or every name of it was taken).
    final: bool = True


def _seen_bytes(ref: RunRef, seen: Seen) -> int:
    """Estimated bytes of one seen-cache entry: the entry, its run's name, the facts kept."""
    size = ENTRY_BYTES + 100 + str_bytes(ref.name)  # + the Seen and its marker
    facts = seen.facts
    if facts is not None:
        size += _FACTS_BYTES + len(facts.error.message) + len(facts.error.code)
        size += sum(len(k) + len(v) for k, v in facts.labels.items())
    return size


@dataclass
class Pending:
    """A failure still owed an action: scheduled, deferred, or whose create must be retried."""

    facts: FailureFacts | None
    summary: RunSummary
    failed_at: datetime
    due: datetime | None
    # A WaitForVersion: re-decided when the task's listed latest version is another one.
    waiting: Waiting | None = None


class OwedWork:
    """The seen-cache, the pending failures and the per-scope watermarks of one daemon."""

    def __init__(
        self,
        *,
        lookback: timedelta,
        overlap: timedelta,
        seen_capacity: int = SEEN_CAPACITY,
        seen_bytes: int = SEEN_BYTES,
        coverage: Coverage | None = None,
        error_wait: timedelta = timedelta(seconds=60),
        error_recheck: timedelta = timedelta(seconds=2),
    ) -> None:
        # Which listing finds which run: a concrete scope its own runs, the org-wide ``*/*``
        # listing the runs its wildcard scopes cover (``rerund.core.scopes``).
        self.coverage = coverage or Coverage(())
        self.lookback = lookback
        self.overlap = overlap
        self.seen_capacity = seen_capacity
        self.error_wait = error_wait
        self.error_recheck = error_recheck
        # Bounded in bytes (``seen_bytes``; ~400 bytes a settled failure, more with its facts) and
        # in entries (``seen_capacity``), never evicting a failure the next resync lists again.
        self.seen: SizedCache[RunRef, Seen] = SizedCache(
            "seen", seen_bytes, _seen_bytes, keep=self._listed_again, max_entries=seen_capacity
        )
        self.pending: dict[RunRef, Pending] = {}
        self.generation = 0
        self._watermarks: dict[str, datetime] = {}
        self._floors: dict[str, datetime] = {}
        self._listed_since: dict[str, datetime] = {}  # per scope: where the last listing began
        self._late_errors: set[RunRef] = set()  # FAILED runs waiting for their error details

    # -- watermarks --------------------------------------------------------------------------

    def watermark(self, scope: str) -> datetime | None:
        return self._watermarks.get(scope)

    def restore(self, scope: str, at: datetime) -> None:
        """The watermark the ledger kept from an earlier run of the daemon."""
        self._watermarks[scope] = at

    def since(self, scope: str, now: datetime) -> datetime:
        """Where the next listing of failed runs in ``scope`` starts: the watermark minus the
        overlap, or ``now - lookback`` on a first start. Never after ``now - overlap``: a
        watermark ahead of the control plane's time (kept by a daemon whose clock ran ahead)
        would skip the failures in between."""
        wm = self._watermarks.get(scope)
        if wm is None:
            return now - self.lookback
        return min(wm, now) - self.overlap

    def has_floor(self, scope: str) -> bool:
        return scope in self._floors

    def floor(self, scope: str, now: datetime) -> datetime:
        """The oldest failure time this process considers in ``scope`` (set on first use)."""
        if scope not in self._floors:
            self._floors[scope] = self.since(scope, now)
        return self._floors[scope]

    def listed(self, scope: str, since: datetime) -> None:
        """A listing of ``scope`` from ``since`` began (the seen-cache keeps what it lists)."""
        self._listed_since[scope] = since

    def advance(self, scope: str, now: datetime) -> datetime:
        """Move the watermark of ``scope`` to ``now``, or to the oldest failure still owed that
        is not waiting for a fix (those are tracked on their own)."""
        owed = [
            p.failed_at for ref, p in self.pending.items() if p.waiting is None and self.finds(scope, ref)
        ]
        wm = min([now, *owed])
        self._watermarks[scope] = wm
        return wm

    def durable(self, scope: str, listing: datetime) -> datetime:
        """The watermark to keep across a restart: the ``listing`` one (``advance``), held back
        by the failures waiting for a fix too (a restart lists from it once and recomputes them)."""
        waiting = [
            p.failed_at for ref, p in self.pending.items() if p.waiting is not None and self.finds(scope, ref)
        ]
        return min([listing, *waiting])

    def oldest_owed(self, scope: str) -> datetime | None:
        """The failure time of the oldest pending failure of ``scope``."""
        return min((p.failed_at for ref, p in self.pending.items() if self.finds(scope, ref)), default=None)

    def finds(self, scope: str, ref: RunRef) -> bool:
        """Whether the listing of ``scope`` (``project/domain`` or ``*/*``) finds run ``ref``."""
        return self.coverage.finds(scope, ref.project, ref.domain)

    # -- failures ----------------------------------------------------------------------------

    def decided(self, ref: RunRef, marker: Marker) -> bool:
        """True when this failure was decided already under the policies in force, or settled
        for good under any (or was found gone): seeing it again costs nothing."""
        seen = self.seen.get(ref)
        return (
            seen is not None
            and seen.marker == marker
            and (seen.generation == self.generation or seen.facts is None or (seen.settled and seen.final))
        )

    def cached_facts(self, ref: RunRef, marker: Marker) -> FailureFacts | None:
        """The facts read earlier for this very failure, if any (a re-decision needs no read)."""
        seen = self.seen.get(ref)
        return seen.facts if seen is not None and seen.marker == marker else None

    def remember(self, ref: RunRef, marker: Marker, facts: FailureFacts | None, *, settled: bool) -> None:
        self.seen.put(ref, Seen(marker=marker, generation=self.generation, facts=facts, settled=settled))

    def _listed_again(self, ref: RunRef, seen: Seen) -> bool:
        """Whether the next resync lists this failure again: evicting it would cost a failure
        read on every pass, so past its budget the cache grows to hold the resync window, and
        shrinks back as failures fall out of it."""
        cutoff = min(self._listed_since.values(), default=None)
        ended = seen.marker[1]
        return cutoff is not None and ended is not None and ended >= cutoff

    def owe(self, facts: FailureFacts, due: datetime | None, waiting: Waiting | None = None) -> None:
        """``facts`` is owed an action at ``due`` (None: at the next pass); ``waiting``: it
        waits for another version of its task too (tracked on its own, see ``advance``)."""
        ref = facts.summary.ref
        self.pending[ref] = Pending(
            facts=facts, summary=facts.summary, failed_at=facts.failed_at, due=due, waiting=waiting
        )

    def await_error(self, summary: RunSummary, failed_at: datetime, now: datetime) -> LateError | None:
        """A FAILED run read without its error details: owed a read again (``LateError``) while
        ``error_wait`` has not passed since ``failed_at``; None once it has (decide without them)."""
        due = error_recheck_at(failed_at, now, wait=self.error_wait, recheck=self.error_recheck)
        if due is None:
            self._late_errors.discard(summary.ref)
            return None
        first = summary.ref not in self._late_errors
        self._late_errors.add(summary.ref)
        self.owe_unread(summary, failed_at, due)
        return LateError(due, first)

    def error_arrived(self, ref: RunRef) -> None:
        """The failure of ``ref`` was read with its error details (or decided without them)."""
        self._late_errors.discard(ref)

    def owed(self, ref: RunRef) -> Pending | None:
        """What ``ref`` is owed, if anything."""
        return self.pending.get(ref)

    def due_times(self) -> dict[RunRef, datetime | None]:
        """Every pending failure -> when it is due (None: at the next pass)."""
        return {ref: p.due for ref, p in self.pending.items()}

    def waiting(self) -> dict[RunRef, Waiting]:
        """The pending failures waiting for another version of their task."""
        return {ref: p.waiting for ref, p in self.pending.items() if p.waiting is not None}

    def owe_unread(self, summary: RunSummary, failed_at: datetime, due: datetime | None = None) -> None:
        """A failure whose facts could not be read yet (or not completely: its error details
        are late): read again at ``due`` (None: at the next pass)."""
        self.pending[summary.ref] = Pending(facts=None, summary=summary, failed_at=failed_at, due=due)

    def settle(self, ref: RunRef, *, final: bool = True) -> None:
        """The decision about ``ref`` has been carried out: nothing more is owed. ``final=False``:
        nothing more until the policies change (the control plane refused its rerun)."""
        self.pending.pop(ref, None)
        seen = self.seen.get(ref)
        if seen is not None:
            seen.settled = True
            seen.final = final
            seen.generation = self.generation
            if final and seen.facts is not None:
                # Never decided again (``decided``): its facts (spec, error, labels: kilobytes)
                # are not kept, so the seen-cache costs a marker per failure (issue 24).
                before = self.seen.size_of(ref)
                seen.facts = None
                self.seen.resized(ref, before)

    def due(self, now: datetime, busy: Collection[RunRef] = ()) -> list[RunRef]:
        """Pending failures whose time has come (due at or before ``now``, or at the next
        pass), except those ``busy`` (being read, decided or issued right now)."""
        return [ref for ref, p in self.pending.items() if (p.due is None or p.due <= now) and ref not in busy]

    def policies_changed(self) -> int:
        """New policies are in force: every pending failure whose facts were read (deferred by a
        budget or a backoff, waiting for a fix, held by an incident, a create to retry) is due
        at the next pass, decided again from its cached facts (no read) under the new policies;
        one still to be read keeps its time. A settled failure is not decided again: its
        decision was carried out and is final (``decided``) — except one whose rerun the
        control plane refused (``settle(final=False)``) that the last resync listed (ended at or
        after the oldest start of the last listings), owed a new decision too. A reload's work
        is what is owed, not ``seen_capacity``. Returns how many failures are owed a new
        decision."""
        self.generation += 1
        for pending in self.pending.values():
            if pending.facts is not None:
                pending.due = None
        cutoff = min(self._listed_since.values(), default=None)
        refused = [
            seen.facts
            for ref, seen in self.seen.items()
            if seen.settled
            and not seen.final
            and seen.facts is not None
            and ref not in self.pending
            and (cutoff is None or seen.marker[1] is None or seen.marker[1] >= cutoff)
        ]
        for facts in refused:
            self.owe(facts, None)
        return sum(1 for p in self.pending.values() if p.facts is not None)
