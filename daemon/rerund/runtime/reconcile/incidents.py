"""The outage breaker in the shell: feeds the pure ``rerund.core.incidents.Breaker`` the
failures the loop decides and the canary outcomes it sees, saves its incidents in the ledger,
sets the two gauges and sends one notification when an incident opens and one when it closes.

Persistence: an incident lives in the ledger's ``incidents`` table (one row per fingerprint and
opening time; ``rerund.ports.DecisionLedger.record_incident``), saved when it opens, when a
canary goes out or ends, when it closes and after every pass. After a restart (a SIGKILL
included) or a takeover, the first pass reads the open ones back: the held failures, relisted from the
control plane (the watermark holds them), are held again, and the canary out is followed to its
outcome. Issuing stays exactly once without it — a canary and a released rerun have the
deterministic name of their (root, attempt) — the ledger only keeps the incident open (so
the reruns stay held) and its counts across the restart. Deriving the state from the runs
and labels instead would cost a listing of every failure of the window each start, and could
not say when the incident opened nor which canary was out. What the breaker counts
(``Members``: the failures of a window toward opening, fewer than ``failures`` per
fingerprint; an open incident's failed runs and lineages) is saved with each pass too
(``save_incident_members``) and read back by the first pass after a restart, so an incident
opens at the same threshold whether or not the daemon restarted in between, and the held
failures relisted after a restart are not counted twice.

Notifications: ``incident_opened`` and ``incident_closed``, each sent once across restarts and
failovers: with an outbox, put whenever a process reaches the state and again for the incidents
the first pass restores (the outbox keeps one row per key); without one, sent when the ledger's
``record_incident`` says the state is new. Keyed ``incident-open:<fp>:<opened_at>``
and ``incident-close:<fp>:<opened_at>``. ``opened_at`` is the control plane's time of the latest
failure among those that opened the incident (``Breaker.failed``), not this process's clock: a
daemon killed after the incident opened but before its row was saved decides the same failures
again after the restart, opens the incident under the same key, and the outbox (one row per
key) sends "opened" once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from rerund.core.durations import format_duration
from rerund.core.encode import for_terminal
from rerund.core.fingerprints import failure_fingerprint
from rerund.core.incidents import Breaker, Closed, IncidentRecord, IncidentRule, Members
from rerund.core.model import Decision, Defer, Failure, GiveUp, Rerun
from rerund.core.redact import redact_message
from rerund.core.rules import PolicySet
from rerund.core.runs import RunRef, RunSummary
from rerund.core.times import iso
from rerund.runtime.reconcile.recorder import DecisionRecorder, Unanswered

__all__ = ["Incidents"]

log = logging.getLogger("rerund.incidents")

# How far back ``rerund incidents`` and a restart look for closed incidents.
_RECENT = timedelta(days=7)
# How recent an incident's opening or closing is for a restart to put its notification again:
# the outbox forgets delivered events after ``ledger_retention`` (a key put again after that
# would be sent again), and a notification left unsent by a kill is one of the last seconds.
_RENOTIFY = timedelta(hours=1)
# How long a fingerprint's evidence from history is reused before the ledger is asked again.
_EVIDENCE_TTL = timedelta(seconds=30)


class Incidents:
    """The breaker of one reconcile loop, with its ledger rows, gauges and notifications."""

    def __init__(self, recorder: DecisionRecorder, spawn: Callable[[Any], object], now: datetime) -> None:
        self._recorder = recorder
        self._spawn = spawn
        self.breaker = Breaker(None)
        self._evidence: dict[tuple[str, timedelta], tuple[datetime, tuple[int, int]]] = {}
        # The incidents are read back from the ledger at the first pass (``configure``), not
        # here: a follower builds its loop when it starts and runs the first pass when it takes
        # over, by then with the incidents the replica it replaces saved.
        self._restored = False
        self._members: dict[str, Members] | None = None  # read back, not yet counted
        self._gauges()

    # -- the loop's calls ----------------------------------------------------------------------

    def configure(self, rule: IncidentRule | None, now: datetime) -> list[RunRef]:
        """The policies' ``incidents:`` (None: off); the reruns to release when that closed any.
        The first call (the first pass) restores the incidents the ledger holds."""
        if not self._restored:
            self._restore(now)
        if rule == self.breaker.rule and (rule is not None or not self.breaker.open_incidents()):
            return []  # (incidents restored from the ledger under policies without the key close)
        released = self._released(self.breaker.configure(rule, now), now)
        if self._members is not None and rule is not None:  # counted under the rule now in force
            self.breaker.restore_members(self._members)
            self._members = None
        return released

    def gate(self, failure: Failure, decision: Decision, ref: RunRef, now: datetime) -> Decision:
        """Count the failure (when a policy acts on it) and pass ``decision`` through the
        breaker: held, made the canary, or unchanged."""
        if self.breaker.rule is None or not decision.fingerprint:
            return decision
        if isinstance(decision, Rerun | Defer | GiveUp):
            example = for_terminal(redact_message(failure.error.message))
            opened = self.breaker.failed(
                decision.fingerprint,
                str(ref),
                failure.failed_at,
                now,
                task=failure.task,
                project=f"{ref.project}/{ref.domain}",
                lineage=failure.root,
                example=example,
            )
            if opened is not None:
                self._opened(opened, now)
        if not isinstance(decision, Rerun):
            if isinstance(decision, GiveUp):
                self.breaker.unheld(str(ref))
            return decision
        target = str(RunRef(ref.project, ref.domain, decision.name))
        was_canary = set(self.breaker.canary_runs())
        gated = self.breaker.gate(decision, str(ref), target, now)
        if target in self.breaker.canary_runs() and target not in was_canary:
            log.info(
                "incident %s: canary %s goes out (probes whether the cause is gone)",
                decision.fingerprint,
                target,
            )
            self.save(now)
        self._gauges()
        return gated

    def canaries(self) -> list[RunRef]:
        """The canary runs out now (to read when the stream has not said how they ended)."""
        out = []
        for key in self.breaker.canary_runs():
            project, domain, name = key.split("/", 2)
            out.append(RunRef(project, domain, name))
        return out

    def is_canary(self, ref: RunRef) -> bool:
        return str(ref) in self.breaker.canary_runs()

    def run_ended(self, summary: RunSummary, now: datetime) -> list[RunRef]:
        """A run reached a terminal phase: when it is a canary, its incident closes (success:
        the reruns to release are returned) or waits for the next probe (failure)."""
        key = str(summary.ref)
        if not summary.terminal or key not in self.breaker.canary_runs():
            return []
        closed = self.breaker.canary_finished(key, summary.phase == "SUCCEEDED", now)
        if closed is None:
            log.info("incident: canary %s ended %s; the next probes later", key, summary.phase)
            self.save(now)
            return []
        return self._released([closed], now)

    def canary_gone(self, ref: RunRef, now: datetime) -> None:
        """The canary run does not exist (its create never happened): probe again later."""
        self.breaker.canary_finished(str(ref), False, now)
        self.save(now)

    def save(self, now: datetime) -> None:
        """Save the incidents changed since the last save; set the gauges."""
        for record in self.breaker.take_dirty():
            self._save(record, now)
        members = self.breaker.take_members()
        if members:
            self._recorder.call(lambda lg: lg.save_incident_members(members, now=now))
        self._gauges()

    def _save(self, record: IncidentRecord, now: datetime) -> None:
        self._recorder.call(lambda lg: lg.record_incident(record, now=now))

    def with_evidence(self, failure: Failure, policies: PolicySet, now: datetime) -> Failure:
        """``failure`` with the evidence its policies' ``give_up_below`` weigh: per window,
        the reruns of its fingerprint and their recoveries, from the ledger (cached for
        ``_EVIDENCE_TTL``: an outage decides many failures of one fingerprint at once)."""
        windows = policies.evidence_windows()
        if not windows:
            return failure
        fingerprint = failure_fingerprint(failure)
        evidence: dict[str, tuple[int, int]] = {}
        for window in windows:
            key = (fingerprint, window)
            cached = self._evidence.get(key)
            if cached is None or now - cached[0] > _EVIDENCE_TTL:
                found = self._history(fingerprint, now - window)
                if isinstance(found, Unanswered):
                    continue
                if len(self._evidence) > 10_000:
                    self._evidence.clear()
                cached = self._evidence[key] = (now, found)
            evidence[format_duration(window)] = cached[1]
        return failure.model_copy(update={"evidence": evidence}) if evidence else failure

    def _history(self, fingerprint: str, since: datetime) -> tuple[int, int] | Unanswered:
        found = self._recorder.call(
            lambda lg: lg.fingerprint_recoveries(since=since, fingerprint=fingerprint)
        )
        return found if isinstance(found, Unanswered) else found.get(fingerprint, (0, 0))

    def recent(self) -> list[dict[str, Any]]:
        """Open and recently closed incidents, as ``/status`` and ``rerund incidents`` show them."""
        return [r.to_json() for r in self.breaker.recent()]

    # -- transitions ---------------------------------------------------------------------------

    def _opened(self, record: IncidentRecord, now: datetime) -> None:
        log.warning(
            "incident %s opened: %d failed runs of one fingerprint (incidents: %s); their reruns are "
            "held and one canary probes at a time (example: %s)",
            record.fingerprint,
            record.failures,
            self.breaker.rule.describe() if self.breaker.rule else "",
            record.example,
        )
        self._state_changed(record, "incident_opened", f"incident-open:{record.key}", now)
        self.breaker.take_dirty()  # just saved

    def _released(self, closed: list[Closed], now: datetime) -> list[RunRef]:
        refs: list[RunRef] = []
        for c in closed:
            log.warning(
                "incident %s closed: canary succeeded after %d canaries; releasing %d held reruns",
                c.record.fingerprint,
                c.record.canaries,
                len(c.released),
            )
            self._state_changed(c.record, "incident_closed", f"incident-close:{c.record.key}", now)
            for key in c.released:
                project, domain, name = key.split("/", 2)
                refs.append(RunRef(project, domain, name))
        self._gauges()
        return refs

    def _restore(self, now: datetime) -> None:
        """Open again the incidents the ledger holds open (with their canary and counts), and
        put their notifications in the outbox again (open: "opened"; closed: "closed"; those of
        the last ``_RENOTIFY``): a process killed between saving a state and putting its
        notification left it unsent, and the outbox (one row per key) drops what it holds
        already. Only with an outbox: sent at once, they would be sent again. A ledger that
        fails is asked again at the next pass."""
        saved = self._recorder.call(lambda lg: lg.incidents(since=now - _RECENT))
        if saved is Unanswered.FAILED:
            return
        members = self._recorder.call(lambda lg: lg.incident_members())
        if members is Unanswered.FAILED:
            return
        self._restored = True
        if isinstance(saved, Unanswered) or isinstance(members, Unanswered):
            return
        self.breaker.restore(saved)
        self._members = members
        self._gauges()
        if self._recorder.outbox is None or self._recorder.notifier is None:
            return
        for record in saved:
            if (record.closed_at or record.opened_at) < now - _RENOTIFY:
                continue
            event = "incident_opened" if record.state == "open" else "incident_closed"
            key = f"incident-{'open' if record.state == 'open' else 'close'}:{record.key}"
            self._notify(record, event, key, now)

    def _state_changed(self, record: IncidentRecord, event: str, key: str, now: datetime) -> None:
        """Save ``record`` and notify once: with an outbox, always put (it keeps one row per
        key, so another replica or an earlier process that saved this state but died before
        its put is covered); without one, when the ledger says this state is new."""
        novel = self._recorder.novel("incident", key, lambda lg: lg.record_incident(record, now=now))
        if self._recorder.notifier is None or (not novel and self._recorder.outbox is None):
            return
        self._notify(record, event, key, now)

    def _notify(self, record: IncidentRecord, event: str, key: str, now: datetime) -> None:
        what = "opened" if event == "incident_opened" else "closed"
        text = (
            f"rerund: incident {record.fingerprint} {what} — {record.failures} failures"
            + (
                f", holding {record.held} reruns"
                if what == "opened"
                else f", {record.canaries} canaries; releasing the held reruns"
            )
            + f" (example: {record.example})"
        )
        payload = {"text": text, "event": event, "key": key, "at": iso(now), "incident": record.to_json()}
        self._spawn(self._recorder.notify(key, payload, now))

    def _gauges(self) -> None:
        metrics = self._recorder.metrics
        metrics.incidents_open.set(len(self.breaker.open_incidents()))
        metrics.incident_reruns_held.set(self.breaker.held_total())
