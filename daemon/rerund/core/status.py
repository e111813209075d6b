"""Where every lineage stands, purely: in flight (and why, and until when), recovered or
exhausted; budgets in use; the last result of each reproduction check.

``rerund status``, ``rerund history --run`` and the operator page at ``/`` all show the same
thing, so it is computed once, here, from plain values: the rows of the audit ledger
(decisions, issue results, outcomes, reproduction results), the reruns listed on the control
plane (the source of truth for what exists, its phase and its lineage labels) and, when the
caller is the daemon itself, what it still owes (``pending``: run -> due time). No I/O, no
clock read (the caller passes ``now``), no logging.

Lineage states (the first rule that holds):

1. **recovered** — a rerun of the lineage ended SUCCEEDED (ledger outcome or listed phase);
2. **exhausted** — a ``give_up`` decision was recorded for the lineage;
3. **running** — the latest rerun exists and is not terminal;
4. **deferred** — the latest decision is ``defer`` (a budget is full, or an incident holds it:
   its ``why`` then says the incident's held count now, ``held_now``) until its ``not_before``;
5. **due** — the latest decision is a ``rerun`` not created yet, due at its ``not_before``;
6. **awaiting decision** — the latest rerun failed and no decision about it is recorded yet;
7. **ignored** — only ``ignore`` decisions (not in flight: nothing is owed).

Every state carries a ``why`` sentence made from the recorded reasons, so the page, the
table and the JSON say the same words as the log line that made the decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from rerund.core import times
from rerund.core.durations import format_duration
from rerund.core.incidents import IncidentRecord, held_now
from rerund.core.rules import Budget, PolicySet, RetryPlan

__all__ = [
    "BudgetUse",
    "FingerprintRate",
    "LineageState",
    "ListedRerun",
    "ReproState",
    "State",
    "Status",
    "StoryLine",
    "budget_limits",
    "compute_status",
    "decision_lines",
    "explanation_lines",
    "iso",
    "lineage_lines",
    "lineage_story",
]

State = Literal["running", "deferred", "due", "awaiting decision", "recovered", "exhausted", "ignored"]
IN_FLIGHT: tuple[State, ...] = ("running", "deferred", "due", "awaiting decision")
_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})


def iso(when: datetime | None) -> str | None:
    """``rerund.core.times.iso`` (UTC ISO-8601 with a ``Z``), or None."""
    return None if when is None else times.iso(when)


def _parse(text: Any) -> datetime | None:
    if not text:
        return None
    if isinstance(text, datetime):
        return text.astimezone(UTC)
    when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ListedRerun:
    """A rerun as the control plane lists it (labels ``rerund-root``/``-attempt``/``-policy``)."""

    project: str
    domain: str
    name: str
    root: str
    attempt: int
    policy: str
    phase: str
    created_at: datetime | None = None


@dataclass(frozen=True)
class StoryLine:
    """One step in a lineage's story: a decision, a create, an outcome."""

    at: datetime
    event: str  # rerun | give_up | ignore | defer | created | already_exists | invalid | dry_run | outcome
    run: str
    attempt: int | None
    policy: str
    text: str

    def to_json(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "event": self.event,
            "run": self.run,
            "attempt": self.attempt,
            "policy": self.policy,
            "text": self.text,
        }


@dataclass(frozen=True)
class LineageState:
    """Where one lineage stands. ``attempt`` is the latest attempt decided or issued."""

    project: str
    domain: str
    root: str
    state: State
    attempt: int
    policy: str
    why: str
    due: datetime | None = None
    at: datetime | None = None  # when the state was reached (last event)
    latest_run: str = ""
    story: tuple[StoryLine, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.project}/{self.domain}/{self.root}"

    def to_json(self, *, story: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "project": self.project,
            "domain": self.domain,
            "root": self.root,
            "state": self.state,
            "attempt": self.attempt,
            "policy": self.policy,
            "latest_run": self.latest_run,
            "due": iso(self.due),
            "at": iso(self.at),
            "why": self.why,
        }
        if story:
            out["story"] = [s.to_json() for s in self.story]
        return out


@dataclass(frozen=True)
class BudgetUse:
    """A budget (``global`` or a policy's): reruns issued in its sliding window."""

    name: str
    used: int
    max_reruns: int
    per: timedelta
    frees_at: datetime | None  # when the oldest counted rerun leaves the window

    @property
    def full(self) -> bool:
        return self.used >= self.max_reruns

    def to_json(self) -> dict[str, Any]:
        return {
            "budget": self.name,
            "used": self.used,
            "max_reruns": self.max_reruns,
            "per": format_duration(self.per),
            "full": self.full,
            "frees_at": iso(self.frees_at),
        }


@dataclass(frozen=True)
class ReproState:
    """The last recorded result of a reproduction check, with its diff."""

    check: str
    result: str
    reason: str
    scheduled_for: datetime | None
    rerun: str | None
    diff: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "result": self.result,
            "reason": self.reason,
            "scheduled_for": iso(self.scheduled_for),
            "rerun": self.rerun,
            "diff": [{"path": p, "message": m} for p, m in self.diff],
        }


@dataclass(frozen=True)
class Status:
    """Everything ``rerund status`` and the operator page show."""

    now: datetime
    in_flight: tuple[LineageState, ...]
    recovered: tuple[LineageState, ...]
    exhausted: tuple[LineageState, ...]
    ignored: int
    budgets: tuple[BudgetUse, ...]
    reproductions: tuple[ReproState, ...]
    notes: tuple[str, ...] = field(default=())
    # Open and recent incidents of the outage breaker (``rerund.core.incidents``), open first.
    incidents: tuple[IncidentRecord, ...] = field(default=())
    # Fingerprints whose reruns recover at least half the time (flaky: rerunning pays), and
    # those whose reruns never did (hopeless: ``give_up_below`` would stop them), most reruns first.
    flaky: tuple[FingerprintRate, ...] = field(default=())
    hopeless: tuple[FingerprintRate, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "now": iso(self.now),
            "in_flight": [s.to_json() for s in self.in_flight],
            "recovered": [s.to_json() for s in self.recovered],
            "exhausted": [s.to_json() for s in self.exhausted],
            "ignored": self.ignored,
            "budgets": [b.to_json() for b in self.budgets],
            "reproductions": [r.to_json() for r in self.reproductions],
            "notes": list(self.notes),
            "incidents": [i.to_json() for i in self.incidents],
            "flaky": [f.to_json() for f in self.flaky],
            "hopeless": [f.to_json() for f in self.hopeless],
        }


@dataclass(frozen=True)
class FingerprintRate:
    """How the reruns of one fingerprint's failures ended (from the ledger)."""

    fingerprint: str
    reruns: int
    recovered: int

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "reruns": self.reruns,
            "recovered": self.recovered,
            "rate": round(self.recovered / self.reruns, 3) if self.reruns else None,
        }


# A fingerprint is flaky when at least this many of its reruns ended and half recovered;
# hopeless when at least this many ended and none recovered.
_MIN_RATED_RERUNS = 3


def _rates(
    recoveries: Mapping[str, tuple[int, int]], *, flaky: bool, recent: int
) -> tuple[FingerprintRate, ...]:
    rows = [FingerprintRate(fp, n, ok) for fp, (n, ok) in recoveries.items() if n >= _MIN_RATED_RERUNS]
    chosen = [r for r in rows if (2 * r.recovered >= r.reruns if flaky else r.recovered == 0)]
    return tuple(sorted(chosen, key=lambda r: (-r.reruns, r.fingerprint))[:recent])


def budget_limits(policies: PolicySet) -> dict[str, Budget]:
    """Budget name (``global`` or a policy name) -> its limit, as ``decide`` counts them."""
    out: dict[str, Budget] = {}
    if policies.global_budget is not None:
        out["global"] = policies.global_budget
    for rule in policies.rules:
        if isinstance(rule.retry, RetryPlan) and rule.retry.budget is not None:
            out[rule.name] = rule.retry.budget
    return out


def _key(row: Mapping[str, Any], root: str | None = None) -> tuple[str, str, str]:
    return (str(row.get("project") or ""), str(row.get("domain") or ""), str(root or row.get("root") or ""))


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def lineage_story(
    decisions: Iterable[Mapping[str, Any]],
    issues: Iterable[Mapping[str, Any]],
    outcomes: Iterable[Mapping[str, Any]],
) -> list[StoryLine]:
    """The ledger rows of one lineage as a story, oldest first (pure).

    ``decisions`` are ``Ledger.history`` rows (``at``, ``run``, ``decision``, ``policy``,
    ``attempt``, ``reason``, ``name``, ``not_before``), ``issues`` ``Ledger.issues`` rows,
    ``outcomes`` ``Ledger.outcomes`` rows (``target``, ``phase``). Ties in time read as
    outcome -> decision -> create: a pass records how a rerun ended, decides about it, then
    creates the next one.
    """
    lines: list[tuple[datetime, int, StoryLine]] = []
    for d in decisions:
        at = _parse(d["at"])
        assert at is not None
        lines.append(
            (
                at,
                1,
                StoryLine(
                    at,
                    str(d["decision"]),
                    str(d["run"]),
                    _int(d.get("attempt")),
                    str(d.get("policy") or ""),
                    str(d["reason"]),
                ),
            )
        )
    for i in issues:
        at = _parse(i["at"])
        assert at is not None
        result = str(i["result"])
        target = str(i["target"])
        text = {
            "created": f"rerun {target!r} created (attempt {i['attempt']}, scope {i.get('scope')})",
            "already_exists": f"rerun {target!r} was already issued ({i.get('message') or 'it exists'})",
            "invalid": f"the control plane rejected rerun {target!r}: {i.get('message')}",
            "dry_run": f"rerun {target!r} not created (--dry-run)",
        }.get(result, f"rerun {target!r}: {result}")
        lines.append((at, 2, StoryLine(at, result, target, _int(i["attempt"]), str(i["policy"]), text)))
    for o in outcomes:
        at = _parse(o["at"])
        assert at is not None
        target = str(o["target"])
        phase = str(o["phase"])
        text = f"rerun {target!r} ended {phase}" + (
            f": lineage {o['root']!r} recovered at attempt {o['attempt']}" if phase == "SUCCEEDED" else ""
        )
        lines.append((at, 0, StoryLine(at, "outcome", target, _int(o["attempt"]), str(o["policy"]), text)))
    lines.sort(key=lambda t: (t[0], t[1]))
    return [line for _, _, line in lines]


def _state(
    key: tuple[str, str, str],
    decisions: Sequence[Mapping[str, Any]],
    issues: Sequence[Mapping[str, Any]],
    outcomes: Sequence[Mapping[str, Any]],
    reruns: Sequence[ListedRerun],
    pending: Mapping[str, datetime | None],
    incidents: Sequence[IncidentRecord] = (),
) -> LineageState:
    project, domain, root = key
    story = tuple(lineage_story(decisions, issues, outcomes))
    last_at = story[-1].at if story else None
    # The runs of the lineage, by attempt: from the control plane first, then the ledger.
    phases: dict[int, tuple[str, str]] = {}  # attempt -> (run name, phase)
    for o in outcomes:
        phases[int(o["attempt"])] = (str(o["target"]), str(o["phase"]))
    for i in issues:
        if i["result"] in ("created", "already_exists"):
            phases.setdefault(int(i["attempt"]), (str(i["target"]), ""))
    for r in reruns:
        known = phases.get(r.attempt)
        if known is None or not known[1] or r.phase in _TERMINAL:
            phases[r.attempt] = (r.name, r.phase)
        if r.created_at is not None and (last_at is None or r.created_at > last_at):
            last_at = r.created_at
    policies = [str(d.get("policy") or "") for d in decisions if d.get("policy")] + [r.policy for r in reruns]
    policy = policies[-1] if policies else ""
    decided = [
        int(d["attempt"]) for d in decisions if d.get("attempt") is not None and d["decision"] != "give_up"
    ]
    attempt = max([0, *decided, *phases])
    latest_run = phases[max(phases)][0] if phases else root

    def state(
        kind: State, why: str, due: datetime | None = None, at: datetime | None = last_at
    ) -> LineageState:
        return LineageState(
            project,
            domain,
            root,
            kind,
            attempt,
            policy,
            why,
            due=due,
            at=at,
            latest_run=latest_run,
            story=story,
        )

    # A recovered or exhausted lineage is shown at the time it got there, not at its last event:
    # a restarted daemon decides again about runs in its lookback (finding the rerun issued),
    # which would otherwise move the time to the restart.
    won = sorted(a for a, (_, phase) in phases.items() if phase == "SUCCEEDED")
    if won:
        name = phases[won[0]][0]
        succeeded = [
            _parse(o["at"]) for o in outcomes if int(o["attempt"]) == won[0] and o["phase"] == "SUCCEEDED"
        ]
        return state(
            "recovered",
            f"rerun {name!r} succeeded: lineage {root!r} recovered at attempt {won[0]}",
            at=min((t for t in succeeded if t is not None), default=last_at),
        )
    gave_up = [d for d in decisions if d["decision"] == "give_up"]
    if gave_up:
        return state("exhausted", str(gave_up[-1]["reason"]), at=_parse(gave_up[0]["at"]) or last_at)
    if phases:
        top = max(phases)
        name, phase = phases[top]
        if phase not in _TERMINAL:
            if not phase:
                return state(
                    "running", f"rerun {name!r} (attempt {top}) was created; no outcome recorded yet"
                )
            return state("running", f"rerun {name!r} (attempt {top}) is {phase}")
    last = decisions[-1] if decisions else None
    if last is not None and last["decision"] == "ignore" and (not phases or last["run"] == latest_run):
        return state("ignored", str(last["reason"]))
    rerun_like = [d for d in decisions if d["decision"] in ("rerun", "defer")]
    latest = rerun_like[-1] if rerun_like else None
    if latest is not None and (latest.get("attempt") is None or int(latest["attempt"]) > max([0, *phases])):
        run_key = f"{project}/{domain}/{latest['run']}"
        due = pending.get(run_key) or _parse(latest.get("not_before"))
        if latest["decision"] == "defer":
            reason = str(latest["reason"])
            if latest.get("incident"):  # held by an incident: its count now, not at this decision
                reason = held_now(reason, incidents)
            return state("deferred", reason, due=due)
        return state("due", str(latest["reason"]), due=due)
    if phases:
        top = max(phases)
        name, phase = phases[top]
        return state(
            "awaiting decision",
            f"rerun {name!r} (attempt {top}) ended {phase}; the next pass decides about it",
        )
    return state("awaiting decision", f"run {root!r} failed; the next pass decides about it")


def compute_status(
    *,
    now: datetime,
    decisions: Iterable[Mapping[str, Any]] = (),
    issues: Iterable[Mapping[str, Any]] = (),
    outcomes: Iterable[Mapping[str, Any]] = (),
    reruns: Iterable[ListedRerun] = (),
    budgets: Mapping[str, Budget] | None = None,
    reproductions: Iterable[Mapping[str, Any]] = (),
    pending: Mapping[str, datetime | None] | None = None,
    recent: int = 20,
    notes: Sequence[str] = (),
    incidents: Iterable[IncidentRecord] = (),
    recoveries: Mapping[str, tuple[int, int]] | None = None,
) -> Status:
    """Where every lineage stands at ``now`` (pure; see the module docstring for the rules).

    ``decisions``/``issues``/``outcomes`` are ledger rows in any order (each with ``project``,
    ``domain``, ``root``); ``reruns`` what the control plane lists; ``budgets`` the limits
    (``budget_limits``); ``reproductions`` recorded results (newest kept per check);
    ``pending`` the daemon's owed items (``project/domain/run`` -> due), when known.
    Invariants: each lineage appears in exactly one list; ``in_flight`` is sorted by due time
    (unknown last), ``recovered``/``exhausted`` newest first and at most ``recent`` long.
    """
    pending = pending or {}
    groups: dict[tuple[str, str, str], dict[str, list[Any]]] = {}

    def group(key: tuple[str, str, str]) -> dict[str, list[Any]]:
        return groups.setdefault(key, {"decisions": [], "issues": [], "outcomes": [], "reruns": []})

    for d in sorted(decisions, key=lambda r: (str(r["at"]), int(r.get("id") or 0))):
        group(_key(d))["decisions"].append(d)
    for i in issues:
        group(_key(i))["issues"].append(i)
    for o in outcomes:
        group(_key(o))["outcomes"].append(o)
    reruns = list(reruns)
    for r in reruns:
        if r.root:
            group((r.project, r.domain, r.root))["reruns"].append(r)
    incidents = tuple(incidents)
    states = [
        _state(k, g["decisions"], g["issues"], g["outcomes"], g["reruns"], pending, incidents)
        for k, g in groups.items()
    ]
    far = datetime.max.replace(tzinfo=UTC)
    old = datetime.min.replace(tzinfo=UTC)
    in_flight = sorted((s for s in states if s.state in IN_FLIGHT), key=lambda s: (s.due or far, s.key))
    recovered = sorted((s for s in states if s.state == "recovered"), key=lambda s: s.at or old, reverse=True)
    exhausted = sorted((s for s in states if s.state == "exhausted"), key=lambda s: s.at or old, reverse=True)
    uses = []
    for name, budget in sorted((budgets or {}).items(), key=lambda kv: (kv[0] != "global", kv[0])):
        start = now - budget.per
        times = sorted(
            r.created_at
            for r in reruns
            if r.created_at is not None and r.created_at >= start and (name == "global" or r.policy == name)
        )
        uses.append(
            BudgetUse(
                name, len(times), budget.max_reruns, budget.per, times[0] + budget.per if times else None
            )
        )
    latest: dict[str, Mapping[str, Any]] = {}
    for row in reproductions:
        check = str(row["check"])
        prev = latest.get(check)
        if prev is None or str(row.get("scheduled_for")) > str(prev.get("scheduled_for")):
            latest[check] = row
    repros = tuple(
        ReproState(
            check=name,
            result=str(row["result"]),
            reason=str(row["reason"]),
            scheduled_for=_parse(row.get("scheduled_for")),
            rerun=row.get("rerun"),
            diff=tuple((str(d["path"]), str(d["message"])) for d in row.get("diff") or ()),
        )
        for name, row in sorted(latest.items())
    )
    return Status(
        now=now,
        in_flight=tuple(in_flight),
        recovered=tuple(recovered[:recent]),
        exhausted=tuple(exhausted[:recent]),
        ignored=sum(1 for s in states if s.state == "ignored"),
        budgets=tuple(uses),
        reproductions=repros,
        notes=tuple(notes),
        incidents=tuple(sorted(incidents, key=lambda i: (i.state != "open", -i.opened_at.timestamp()))),
        flaky=_rates(recoveries or {}, flaky=True, recent=recent),
        hopeless=_rates(recoveries or {}, flaky=False, recent=recent),
    )


def lineage_lines(
    root: str, attempt: int, reruns: Sequence[ListedRerun], state: LineageState | None
) -> list[str]:
    """What already happened in the lineage of a run being explained (pure).

    A live explanation decides as if the run had just failed; for a run whose reruns already
    exist that decision has been carried out long ago, so these lines say which reruns exist
    (with their phases) and where the lineage stands.
    """
    mine = sorted((r for r in reruns if r.root == root), key=lambda r: (r.attempt, r.name))
    lines = []
    if mine:
        shown = ", ".join(
            f"{r.name} (attempt {r.attempt}, {r.phase or 'phase not listed yet'})" for r in mine
        )
        lines.append(f"{'reruns:':<12}{len(mine)} rerun(s) of lineage {root!r} exist: {shown}")
        later = [r for r in mine if r.attempt > attempt]
        if later:
            lines.append(
                f"{'note:':<12}this run is attempt {attempt} of its lineage; the decision below was carried "
                f"out already: attempt {attempt + 1} exists as {later[0].name!r}"
            )
    else:
        lines.append(f"{'reruns:':<12}no rerun of lineage {root!r} exists yet")
    if state is not None:
        due = f", due at {iso(state.due)}" if state.due else ""
        lines.append(f"{'state:':<12}lineage {state.state}{due}: {state.why}")
    return lines


def explanation_lines(
    run: str,
    facts: Mapping[str, Any],
    decision: Mapping[str, Any],
    trace: Sequence[str],
    lineage: Sequence[str] = (),
    changes: Sequence[str] | None = None,
    *,
    exact: bool = True,
) -> list[str]:
    """The text form of a live explanation (``rerund explain RUN`` and the operator page):
    the run's facts, its lineage, then the decision, the RunSpec changes and the trace (pure)."""
    err = facts.get("error") or {}
    lines = [
        f"{'run:':<12}{run} ({facts.get('phase')}, task {facts.get('task')})",
        f"{'lineage:':<12}root {facts.get('root')!r}, attempt {facts.get('attempt')} "
        f"({facts.get('attempt')} rerun(s) issued before this run)",
        *lineage,
        f"{'failed:':<12}action {facts.get('action')} ({facts.get('action_task')})"
        f" at {facts.get('failed_at')}",
        f"{'error:':<12}{err.get('kind')} {err.get('code')}: {str(err.get('message', ''))[:300]}",
    ]
    return lines + decision_lines(decision, trace, changes, exact=exact)


def decision_lines(
    decision: Mapping[str, Any],
    trace: Sequence[str],
    changes: Sequence[str] | None = None,
    *,
    exact: bool = True,
) -> list[str]:
    """A decision, the diff of the rerun's RunSpec against the source run's (``changes``, one
    ``~`` line per field that changes) and the trace, as text lines (``explain``, ``explain
    --failure``, the operator page)."""
    lines = [f"{'decision:':<12}{decision['decision']}", f"{'reason:':<12}{decision['reason']}"]
    for key in ("name", "scope", "action", "not_before"):
        if decision.get(key):
            lines.append(f"{key + ':':<12}{decision[key]}")
    if decision.get("fingerprint"):  # the failure's (rerund.core.fingerprints): one per cause
        lines.append(f"fingerprint: {decision['fingerprint']}")
    for key in ("env", "labels", "inputs"):
        if decision.get(key):
            lines.append(f"{key + ':':<12}" + ", ".join(f"{k}={v}" for k, v in decision[key].items()))
    overrides = decision.get("overrides") or {}
    if overrides:
        lines.append(f"{'overrides:':<12}" + ", ".join(f"{k}={_plain(v)}" for k, v in overrides.items()))
    relaunch = decision.get("relaunch")
    if relaunch:
        version = relaunch["version"] or "the latest deployed when relaunched"
        lines.append(
            f"{'task:':<12}{relaunch['task']} version {version} (task_version: {relaunch['task_version']})"
        )
        resources = relaunch["resources"]
        lines.append(
            f"{'resources:':<12}" + (_resources(resources) if resources is not None else "as deployed")
        )
    waiting = decision.get("waiting_for")
    if waiting:
        lines.append(
            f"{'waiting:':<12}for a version of {waiting['task']} newer than {waiting['failed_version']!r}"
        )
    if decision["decision"] in ("rerun", "defer"):
        head = "the rerun's RunSpec against the source run's" + (
            "" if exact else " (the source's spec is not known: give the failure a spec: to see values)"
        )
        lines.append(f"changes:    {head}")
        lines.extend(f"  ~ {line}" for line in changes or ["nothing besides the relation"])
    lines.append("trace:")
    lines.extend(f"  {i}. {step}" for i, step in enumerate(trace, 1))
    return lines


def _resources(view: Mapping[str, Mapping[str, str]]) -> str:
    """``cpu 1, memory 8Gi (limit 8Gi)`` from a ``ResourcesView`` dump."""
    requests, limits = view.get("requests", {}), view.get("limits", {})
    parts = []
    for name in ("cpu", "memory", "gpu", "ephemeral_storage"):
        if name in requests or name in limits:
            text = f"{name} {requests.get(name, 'unset')}"
            parts.append(text + (f" (limit {limits[name]})" if name in limits else ""))
    return ", ".join(parts) or "none"


def _plain(value: Any) -> str:
    """An override value as the policy file spells it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)
