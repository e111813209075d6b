"""The outage breaker: per failure fingerprint, many failures in a short window open an
incident; while it is open, reruns of that fingerprint are held and one canary at a time
probes whether the cause is gone; a canary that succeeds closes the incident and releases the
held reruns.

Why: during an outage (an object store answering 503 for a minute, a registry down) every
failed run would burn its attempts against the same broken dependency and give up. Held
instead, each lineage waits; the canary costs one rerun per ``probe_every``, and is not
counted against the lineage's ``max_attempts`` (``LABEL_CANARIES`` says how many of a
lineage's reruns were canaries; the attempt number still advances, so rerun names stay
unique and issuing stays idempotent).

The state machine, per fingerprint (``Breaker``; no I/O, no clock read: ``now`` is passed)::

    closed --(``failures`` distinct failed runs within ``within``)--> open
    open   --(a rerun decided, no canary out, ``probe_every`` since the last)--> canary out
    canary --(the canary run failed, or vanished)--> open (next probe ``probe_every`` later)
    canary --(the canary run succeeded)--> closed: the held reruns are released

Invariants (pinned by Hypothesis in tests/core/test_incidents.py): at most one canary per
incident at a time; two canaries of one incident are at least ``probe_every`` apart; a closed
incident holds nothing; a rerun the breaker lets through unchanged is never of an open
incident's fingerprint.

``IncidentRecord`` is an incident as the ledger keeps it (so a restart, even after SIGKILL,
resumes with the incident open, its canary and its counts): ``Breaker.restore`` reads it back.
What it counts is kept there too (``Members``: ``take_members``, ``restore_members``):
failures counted before a restart and after it open an incident at the same threshold as
without it, and the failures of an open incident relisted after a restart count once.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from rerund.core.durations import format_duration
from rerund.core.model import Decision, Defer, Rerun
from rerund.core.runs import LABEL_CANARIES
from rerund.core.times import iso

__all__ = [
    "LABEL_CANARIES",
    "MAX_INCIDENT_FAILURES",
    "MAX_INCIDENT_WINDOW",
    "Breaker",
    "Held",
    "IncidentRecord",
    "IncidentRule",
    "Members",
    "canaries_of",
    "held_now",
]

MAX_INCIDENT_FAILURES = 1_000_000
MAX_INCIDENT_WINDOW = timedelta(days=1)  # ``within`` and ``probe_every`` are at most this long
_MAX_EXAMPLE = 300


def canaries_of(labels: Mapping[str, str], attempt: int) -> int:
    """How many of a lineage's ``attempt`` reruns were canaries (its ``rerund-canaries`` label):
    0 without the label or when it is not a whole number; never more than ``attempt`` (a
    forged label cannot buy a run more attempts than it has had reruns)."""
    text = labels.get(LABEL_CANARIES, "")
    if not (0 < len(text) <= 4 and text.isascii() and text.isdigit()):
        return 0
    return min(int(text), attempt)


def held_now(reason: str, incidents: Iterable[IncidentRecord]) -> str:
    """The ``reason`` of a held rerun (``Breaker.gate``'s ``Held``) told with its incident as it
    is now: the count and the canary of the reason are those at its own decision (one pass
    holding 12 reruns writes "holding 1 reruns" ... "holding 12 reruns"), so the page and
    ``rerund status`` say the incident's current count from ``incidents`` (the ledger's
    records) instead, or that it closed; the rest of the reason (the policy, the rerun) is
    kept. A reason of no incident in ``incidents`` is returned unchanged (pure)."""
    for r in incidents:
        if not reason.startswith(f"incident {r.fingerprint} open since {iso(r.opened_at)}: holding "):
            continue
        rest = reason.split("; ", 1)[1] if "; " in reason else ""
        if r.state != "open":
            closed = f" at {iso(r.closed_at)}" if r.closed_at is not None else ""
            now = f"incident {r.fingerprint} closed{closed}: its held reruns are released"
        else:
            canary = (
                f"canary {r.canary.rsplit('/', 1)[-1]!r} out since {iso(r.canary_at)}"
                if r.canary is not None and r.canary_at is not None
                else "no canary out"
            )
            now = (
                f"incident {r.fingerprint} open since {iso(r.opened_at)}: "
                f"holding {r.held} reruns now, {canary}"
            )
        return f"{now}; {rest}" if rest else now
    return reason


@dataclass(frozen=True)
class IncidentRule:
    """``incidents:`` of a policy file: ``failures`` failed runs of one fingerprint within
    ``within`` open an incident; while open, one canary rerun every ``probe_every``."""

    failures: int
    within: timedelta
    probe_every: timedelta

    def describe(self) -> str:
        return (
            f"open after {self.failures} failures within {format_duration(self.within)}, "
            f"probe every {format_duration(self.probe_every)}"
        )


@dataclass(frozen=True, kw_only=True)
class Held(Defer):
    """A rerun held by the open incident of its fingerprint: decided again at ``not_before``
    (the next probe) or at once when the incident closes. ``budget`` is empty."""

    budget: str = ""
    incident: str

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "incident": self.incident}


@dataclass(frozen=True)
class IncidentRecord:
    """An incident as the ledger and ``rerund incidents`` show it (JSON: ``to_json``).

    ``state`` is ``open`` or ``closed``; ``failures`` counts distinct failed runs of the
    fingerprint since it opened (the ones that opened it included); ``held`` the reruns held
    now (0 once closed); ``canary`` the run name of the canary out (None: none);
    ``example`` one message of the fingerprint, redacted by the caller."""

    fingerprint: str
    opened_at: datetime
    state: str = "open"
    closed_at: datetime | None = None
    failures: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    held: int = 0
    released: int = 0
    canaries: int = 0
    canary: str | None = None
    canary_at: datetime | None = None
    tasks: tuple[str, ...] = ()
    projects: tuple[str, ...] = ()
    lineages: int = 0
    example: str = ""

    @property
    def key(self) -> str:
        """What names this incident across restarts and replicas (notification keys use it)."""
        return f"{self.fingerprint}:{iso(self.opened_at)}"

    def to_json(self) -> dict[str, Any]:
        def when(t: datetime | None) -> str | None:
            return None if t is None else iso(t)

        return {
            "fingerprint": self.fingerprint,
            "state": self.state,
            "opened_at": iso(self.opened_at),
            "closed_at": when(self.closed_at),
            "failures": self.failures,
            "first_seen": when(self.first_seen),
            "last_seen": when(self.last_seen),
            "held": self.held,
            "released": self.released,
            "canaries": self.canaries,
            "canary": self.canary,
            "canary_at": when(self.canary_at),
            "tasks": list(self.tasks),
            "projects": list(self.projects),
            "lineages": self.lineages,
            "example": self.example,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IncidentRecord:
        def when(key: str) -> datetime | None:
            value = data.get(key)
            return None if value is None else datetime.fromisoformat(str(value).replace("Z", "+00:00"))

        opened = when("opened_at")
        if opened is None:
            raise ValueError("an incident record needs opened_at")
        return cls(
            fingerprint=str(data["fingerprint"]),
            opened_at=opened,
            state=str(data.get("state", "open")),
            closed_at=when("closed_at"),
            failures=int(data.get("failures", 0)),
            first_seen=when("first_seen"),
            last_seen=when("last_seen"),
            held=int(data.get("held", 0)),
            released=int(data.get("released", 0)),
            canaries=int(data.get("canaries", 0)),
            canary=data.get("canary"),
            canary_at=when("canary_at"),
            tasks=tuple(data.get("tasks", ())),
            projects=tuple(data.get("projects", ())),
            lineages=int(data.get("lineages", 0)),
            example=str(data.get("example", "")),
        )


@dataclass(frozen=True)
class Members:
    """What the breaker counts for one fingerprint, as the ledger keeps it across restarts
    (``Breaker.take_members``, ``Breaker.restore_members``): before an incident, the failed
    runs of its window as (run, failed at), fewer than ``failures``; while its incident is
    open, the failed runs and the lineages that incident counted, so the failures relisted
    after a restart (the held ones) are not counted twice. All empty: nothing to keep."""

    window: tuple[tuple[str, datetime], ...] = ()
    runs: tuple[str, ...] = ()
    lineages: tuple[str, ...] = ()


# Fingerprints whose failures the breaker counts at once, before the quiet ones are forgotten.
_MAX_TRACKED = 10_000


@dataclass
class _Window:
    """The failed runs of one fingerprint in its sliding window, ordered by failure time."""

    times: list[tuple[datetime, str]] = field(default_factory=list)
    runs: set[str] = field(default_factory=set)

    def add(self, at: datetime, run: str, within: timedelta) -> bool:
        """Count run ``run`` failed at ``at`` (False: counted already); drop what is older than
        ``within`` before the latest failure. O(log n) plus what is dropped (and an insertion
        into a list, a memmove)."""
        if run in self.runs:
            return False
        insort(self.times, (at, run))
        self.runs.add(run)
        horizon = self.times[-1][0] - within
        drop = bisect_left(self.times, (horizon, ""))
        for _, old in self.times[:drop]:
            self.runs.discard(old)
        del self.times[:drop]
        return True


@dataclass
class _Incident:
    fingerprint: str
    opened_at: datetime
    first_seen: datetime
    last_seen: datetime
    example: str
    probe_from: datetime  # when the first canary's ``probe_every`` starts: this process's opening
    runs: set[str] = field(default_factory=set)
    failures: int = 0
    held: dict[str, str] = field(default_factory=dict)  # held run key -> its lineage
    lineages: set[str] = field(default_factory=set)
    tasks: set[str] = field(default_factory=set)
    projects: set[str] = field(default_factory=set)
    canary: str | None = None
    canary_at: datetime | None = None
    canaries: int = 0
    released: int = 0

    def next_probe(self, probe_every: timedelta) -> datetime:
        return (self.canary_at or self.probe_from) + probe_every

    def record(self, *, state: str = "open", closed_at: datetime | None = None) -> IncidentRecord:
        return IncidentRecord(
            fingerprint=self.fingerprint,
            opened_at=self.opened_at,
            state=state,
            closed_at=closed_at,
            failures=self.failures,
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            held=0 if state == "closed" else len(self.held),
            released=self.released,
            canaries=self.canaries,
            canary=self.canary,
            canary_at=self.canary_at,
            tasks=tuple(sorted(self.tasks))[:20],
            projects=tuple(sorted(self.projects))[:20],
            lineages=len(self.lineages),
            example=self.example,
        )


@dataclass(frozen=True)
class Closed:
    """An incident just closed by a successful canary: ``record`` as closed, and the run keys
    of the reruns it held (to decide again now)."""

    record: IncidentRecord
    released: tuple[str, ...]


class Breaker:
    """The per-fingerprint breaker of one daemon (see the module docstring). Deterministic,
    no I/O, no clock: every method takes the time. ``rule`` None: the breaker is off (``gate``
    returns every decision unchanged, nothing opens)."""

    def __init__(self, rule: IncidentRule | None) -> None:
        self.rule = rule
        self._recent: dict[str, _Window] = {}
        self._open: dict[str, _Incident] = {}
        self._closed: deque[IncidentRecord] = deque(maxlen=100)
        self._dirty: set[str] = set()
        # Fingerprint -> when its last incident closed: failures from before then (the held
        # ones, decided again on release) were counted by that incident and open no new one.
        self._closed_at: dict[str, datetime] = {}
        # Fingerprints whose members (window, or open incident's runs and lineages) changed
        # since ``take_members`` (to save: a restart reads them back, ``restore_members``).
        self._members_dirty: set[str] = set()

    # -- reading -------------------------------------------------------------------------------

    def open_incidents(self) -> list[IncidentRecord]:
        return [i.record() for i in self._open.values()]

    def recent(self) -> list[IncidentRecord]:
        """Open incidents, then the latest closed ones (newest first)."""
        return self.open_incidents() + list(reversed(self._closed))

    def is_open(self, fingerprint: str) -> bool:
        return fingerprint in self._open

    def held_total(self) -> int:
        return sum(len(i.held) for i in self._open.values())

    def canary_runs(self) -> dict[str, str]:
        """Run key of every canary out -> the fingerprint it probes."""
        return {i.canary: fp for fp, i in self._open.items() if i.canary is not None}

    def take_dirty(self) -> list[IncidentRecord]:
        """The open incidents changed since the last call (to save)."""
        out = [self._open[fp].record() for fp in sorted(self._dirty) if fp in self._open]
        self._dirty.clear()
        return out

    def take_members(self) -> dict[str, Members]:
        """The members changed since the last call (to save), per fingerprint: its open
        incident's runs and lineages, else its window, else empty (forgotten)."""
        out = {}
        for fp in sorted(self._members_dirty):
            incident, window = self._open.get(fp), self._recent.get(fp)
            if incident is not None:
                out[fp] = Members(
                    runs=tuple(sorted(incident.runs)), lineages=tuple(sorted(incident.lineages))
                )
            elif window is not None:
                out[fp] = Members(window=tuple((run, at) for at, run in window.times))
            else:
                out[fp] = Members()
        self._members_dirty.clear()
        return out

    # -- events --------------------------------------------------------------------------------

    def configure(self, rule: IncidentRule | None, now: datetime) -> list[Closed]:
        """New policies: a new rule applies from now; ``None`` (the key removed) closes every
        open incident and releases what it held."""
        self.rule = rule
        if rule is not None:
            return []
        return [self._close(fp, now) for fp in list(self._open)]

    def restore(self, records: Iterable[IncidentRecord]) -> None:
        """Incidents read back from the ledger after a restart: the open ones are open again
        (with their canary and counts; the held reruns are held again as they are decided)."""
        for r in records:
            if r.state == "closed" and r.closed_at is not None:
                before = self._closed_at.get(r.fingerprint, r.closed_at)
                self._closed_at[r.fingerprint] = max(r.closed_at, before)
            if r.state != "open" or r.fingerprint in self._open:
                continue
            self._open[r.fingerprint] = _Incident(
                fingerprint=r.fingerprint,
                opened_at=r.opened_at,
                first_seen=r.first_seen or r.opened_at,
                last_seen=r.last_seen or r.opened_at,
                example=r.example,
                probe_from=r.opened_at,
                failures=r.failures,
                tasks=set(r.tasks),
                projects=set(r.projects),
                canary=r.canary,
                canary_at=r.canary_at,
                canaries=r.canaries,
                released=r.released,
            )

    def restore_members(self, members: Mapping[str, Members]) -> None:
        """Members read back from the ledger after a restart (``take_members`` saved them),
        after ``restore``: an open incident gets its runs and lineages back (its counts are the
        record's: a failure relisted now is not counted again); a window's failures count again
        toward opening, as if this process had seen them, except those from before the
        fingerprint's last incident closed. Opens nothing by itself: the next failure does, at
        the threshold it would have without the restart. Windows need a rule (call it with one)."""
        rule = self.rule
        for fp, m in members.items():
            incident = self._open.get(fp)
            if incident is not None:
                incident.runs.update(m.runs)
                incident.lineages.update(m.lineages)
                continue
            if rule is None:
                continue
            closed = self._closed_at.get(fp)
            for run, at in m.window:
                if closed is None or at > closed:
                    self._recent.setdefault(fp, _Window()).add(at, run, rule.within)

    def failed(
        self,
        fingerprint: str,
        run: str,
        at: datetime,
        now: datetime,
        *,
        task: str = "",
        project: str = "",
        lineage: str = "",
        example: str = "",
    ) -> IncidentRecord | None:
        """Run ``run`` failed at ``at`` with ``fingerprint``. Returns the incident when this
        failure opened it (the ``failures``-th distinct run within ``within``), else None. Its
        ``opened_at`` is the latest failure time of those (the control plane's time, so a
        restart that decides the same failures again names the incident alike); its first
        canary is due ``probe_every`` after ``now``.
        Counting the same run twice changes nothing, and so does a failure from before the
        fingerprint's last incident closed (it counted there)."""
        rule = self.rule
        if rule is None or not fingerprint:
            return None
        incident = self._open.get(fingerprint)
        if incident is not None:
            if run not in incident.runs:
                incident.runs.add(run)
                incident.failures += 1
                incident.first_seen = min(incident.first_seen, at)
                incident.last_seen = max(incident.last_seen, at)
                incident.tasks.add(task) if task else None
                incident.projects.add(project) if project else None
                incident.lineages.add(lineage) if lineage else None
                self._dirty.add(fingerprint)
                self._members_dirty.add(fingerprint)
            return None
        closed = self._closed_at.get(fingerprint)
        if closed is not None and at <= closed:
            return None
        window = self._recent.setdefault(fingerprint, _Window())
        if not window.add(at, run, rule.within):
            return None
        self._members_dirty.add(fingerprint)
        if len(window.times) < rule.failures:
            if len(self._recent) > _MAX_TRACKED:  # bounded: forget the fingerprints gone quiet
                self._forget_quiet(at - rule.within)
            return None
        first_seen, last_seen = window.times[0][0], window.times[-1][0]
        runs = set(window.runs)
        del self._recent[fingerprint]
        # Named by the control plane's facts, not this process's clock: a daemon killed before it
        # saved the incident decides the same failures again after the restart and opens it
        # under the same key (``IncidentRecord.key``, which the notifications' keys use).
        incident = _Incident(
            fingerprint=fingerprint,
            opened_at=last_seen,
            first_seen=first_seen,
            last_seen=last_seen,
            example=example[:_MAX_EXAMPLE],
            probe_from=now,
            runs=runs,
            failures=len(runs),
        )
        if task:
            incident.tasks.add(task)
        if project:
            incident.projects.add(project)
        if lineage:
            incident.lineages.add(lineage)
        self._open[fingerprint] = incident
        self._dirty.add(fingerprint)
        return incident.record()

    def _forget_quiet(self, before: datetime) -> None:
        for fp in [fp for fp, w in self._recent.items() if not w.times or w.times[-1][0] < before]:
            del self._recent[fp]
            self._members_dirty.add(fp)

    def gate(self, decision: Decision, source: str, target: str, now: datetime) -> Decision:
        """``decision`` for the failed run ``source`` under the breaker. A ``Rerun`` of an open
        incident's fingerprint becomes the canary (when none is out and ``probe_every`` has
        passed since the last; due now, whatever the backoff said) — its labels count it in
        ``LABEL_CANARIES`` — or is held (a ``Held`` defer until the next probe). ``target`` is
        the key the canary run will have (``project/domain/name``). Anything else is returned
        as it is."""
        rule = self.rule
        incident = self._open.get(decision.fingerprint) if decision.fingerprint else None
        if rule is None or incident is None or not isinstance(decision, Rerun):
            return decision
        probe_at = incident.next_probe(rule.probe_every)
        since = iso(incident.opened_at)
        if incident.canary is None and now >= probe_at:
            incident.held.pop(source, None)
            incident.canary, incident.canary_at = target, now
            incident.canaries += 1
            self._dirty.add(incident.fingerprint)
            counted = int(decision.labels.get(LABEL_CANARIES, "0") or 0) + 1
            labels = {**decision.labels, LABEL_CANARIES: str(counted)}
            reason = (
                f"incident {incident.fingerprint} open since {since}: canary {decision.name!r} probes "
                f"whether the cause is gone (canary {incident.canaries}, not counted against "
                f"max_attempts; holding {len(incident.held)} reruns); " + decision.reason
            )
            # A probe goes out when it is due, whatever the lineage's backoff says.
            return replace(decision, labels=labels, reason=reason, not_before=min(decision.not_before, now))
        if source not in incident.held:
            incident.held[source] = decision.root
            self._dirty.add(incident.fingerprint)
        if decision.root not in incident.lineages:
            incident.lineages.add(decision.root)
            self._members_dirty.add(incident.fingerprint)
        due = probe_at if probe_at > now else now + rule.probe_every
        due = max(due, decision.not_before)
        canary = (
            f"canary {incident.canary.rsplit('/', 1)[-1]!r} out since {iso(incident.canary_at)}"
            if incident.canary is not None and incident.canary_at is not None
            else f"next canary at {iso(due)}"
        )
        reason = (
            f"incident {incident.fingerprint} open since {since}: holding {len(incident.held)} reruns, "
            f"{canary}; policy {decision.policy!r} reruns run {decision.source_run!r} as "
            f"{decision.name!r} when the incident closes (decided again at {iso(due)})"
        )
        return Held(
            reason=reason,
            source_run=decision.source_run,
            root=decision.root,
            policy=decision.policy,
            fingerprint=decision.fingerprint,
            attempt=decision.attempt,
            scope=decision.scope,
            name=decision.name,
            action=decision.action,
            env=decision.env,
            labels=decision.labels,
            inputs=decision.inputs,
            overrides=decision.overrides,
            not_before=due,
            relaunch=decision.relaunch,
            incident=incident.fingerprint,
        )

    def unheld(self, source: str) -> None:
        """Run ``source`` is no longer held (settled otherwise: given up, ignored, gone)."""
        for fp, incident in self._open.items():
            if incident.held.pop(source, None) is not None:
                self._dirty.add(fp)

    def canary_finished(self, target: str, succeeded: bool, now: datetime) -> Closed | None:
        """The canary run ``target`` ended (or vanished: ``succeeded`` False). Success closes
        its incident (returned, with the reruns to release); failure leaves it open with no
        canary out, the next one ``probe_every`` after this one."""
        for fp, incident in self._open.items():
            if incident.canary == target:
                if succeeded:
                    return self._close(fp, now)
                incident.canary = None
                self._dirty.add(fp)
                return None
        return None

    def _close(self, fingerprint: str, now: datetime) -> Closed:
        incident = self._open.pop(fingerprint)
        released = tuple(incident.held)
        incident.released += len(released)
        record = incident.record(state="closed", closed_at=now)
        self._closed.append(record)
        self._closed_at[fingerprint] = now
        self._dirty.discard(fingerprint)
        self._members_dirty.add(fingerprint)  # its runs and lineages: forgotten
        return Closed(record=record, released=released)
