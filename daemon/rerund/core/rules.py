"""Compiled policies (``Rule``s) and the matching of a failure against them.

The policy loader (``rerund.policy``) turns YAML into these frozen values once; the decision
core then matches every failure against them without I/O. Matching is built for speed:

- every error pattern of every policy is compiled once into one RE2 set (``re2.Set``), so a
  message is scanned in ONE linear pass whatever the number of patterns, and the result (the
  ids of the patterns that matched) is reused by every policy during that decision;
- a policy that has ``patterns`` can only match when one of its patterns matched, so the fast
  path visits only those policies plus the ones without patterns, in policy order;
- RE2 runs in time linear in the message: catastrophic-backtracking patterns cannot hang us.

Matching semantics (the same for ``decide`` and ``explain``): inside ``match`` every given
selector must hold; inside a list any element may; ``patterns`` are searched anywhere in the
message; ``exclude`` vetoes the policy when any of its patterns matches; ``phases`` defaults
to FAILED and TIMED_OUT.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import re2

from rerund.core.backoff import Backoff
from rerund.core.incidents import IncidentRule
from rerund.core.model import Failure, Phase, RunOverrides, Scope, TaskVersionRule
from rerund.core.repro import ReproCheck
from rerund.core.resources import ResourceRules
from rerund.core.taxonomy import classify, evidence

__all__ = [
    "DEFAULT_PHASES",
    "GLOBAL_BUDGET",
    "SELECTORS",
    "Budget",
    "Escalation",
    "GiveUpBelow",
    "GpuFaultMatch",
    "MatchSpec",
    "NeverRetry",
    "Origin",
    "PatternSet",
    "PolicySet",
    "RetryPlan",
    "Rule",
    "Selector",
    "compile_pattern_error",
    "subsumes",
]

DEFAULT_PHASES: frozenset[Phase] = frozenset({Phase.FAILED, Phase.TIMED_OUT})
DEFAULT_MAX_WAIT = timedelta(days=1)  # task_version: newer waits at most this long by default
GLOBAL_BUDGET = "global"  # the name of the budget every rerun counts against (``budget:`` at the top)
_PHASE_ORDER = (Phase.FAILED, Phase.TIMED_OUT, Phase.ABORTED)
_SET_MAX_MEM = 64 << 20  # a cap for RE2's lazily built DFA, not an allocation


def _re2_options() -> Any:
    options = re2.Options()
    options.max_mem = _SET_MAX_MEM
    options.log_errors = False
    return options


def compile_pattern_error(pattern: str) -> str | None:
    """Why RE2 refuses ``pattern`` (None when it compiles). Pure: no logging to stderr."""
    try:
        re2.compile(pattern, _re2_options())
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        hint = ""
        if "perl operator" in detail or "escape sequence: \\1" in detail or re.search(r"\\[1-9]", detail):
            hint = " (RE2 has no backreferences or lookaround; rewrite the pattern without them)"
        elif "\\Z" in detail:
            hint = " (RE2 spells end-of-text \\z)"
        return f"{detail or 'invalid pattern'}{hint}"
    return None


@dataclass(frozen=True)
class Origin:
    """Where a policy was defined: ``file:line:column``."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Budget:
    """At most ``max_reruns`` reruns in any sliding window of length ``per``."""

    max_reruns: int
    per: timedelta


@dataclass(frozen=True)
class Escalation:
    """Overrides applied from attempt ``at`` on (merged over the policy's own values)."""

    at: int
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)
    run: RunOverrides = field(default_factory=RunOverrides)
    resources: ResourceRules = field(default_factory=ResourceRules)
    task_version: TaskVersionRule | None = None


def merge_overrides(base: RunOverrides, step: RunOverrides) -> RunOverrides:
    """``step`` over ``base``: a value ``step`` sets wins, annotations merge, a non-empty
    ``force_rerun_actions`` replaces."""
    values = base.model_dump()
    for key, value in step.model_dump().items():
        if key == "annotations":
            values[key] = {**base.annotations, **step.annotations}
        elif key == "force_rerun_actions":
            if value:
                values[key] = value
        elif value is not None:
            values[key] = value
    return RunOverrides.model_validate(values)


@dataclass(frozen=True)
class GiveUpBelow:
    """``retry.give_up_below``: give up when, over ``window``, at least ``min_reruns`` reruns
    of the failure's fingerprint ended and fewer than ``recovery_rate`` of them succeeded."""

    recovery_rate: float
    min_reruns: int
    window: timedelta


@dataclass(frozen=True)
class RetryPlan:
    """A policy's retry block after merging defaults < policy (every field known)."""

    scope: Scope
    max_attempts: int
    backoff: Backoff
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)
    escalate: tuple[Escalation, ...] = ()
    budget: Budget | None = None
    run: RunOverrides = field(default_factory=RunOverrides)
    resources: ResourceRules = field(default_factory=ResourceRules)
    task_version: TaskVersionRule = "same"
    max_wait: timedelta = DEFAULT_MAX_WAIT
    give_up_below: GiveUpBelow | None = None

    def relaunch_settings(self, attempt: int) -> tuple[ResourceRules, TaskVersionRule]:
        """Resource rules and task-version rule of relaunch ``attempt``: policy < escalation
        steps with at <= attempt (a step's rule for a resource replaces the policy's)."""
        resources, version = self.resources, self.task_version
        for step in sorted(self.escalate, key=lambda s: s.at):
            if step.at <= attempt:
                resources = resources.merged(step.resources)
                version = step.task_version or version
        return resources, version

    def overrides(self, attempt: int) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
        """env, labels, inputs for rerun ``attempt``: policy < escalation steps with at <= attempt."""
        env, labels, inputs = dict(self.env), dict(self.labels), dict(self.inputs)
        for step in sorted(self.escalate, key=lambda s: s.at):
            if step.at <= attempt:
                env.update(step.env)
                labels.update(step.labels)
                inputs.update(step.inputs)
        return env, labels, inputs

    def run_overrides(self, attempt: int) -> RunOverrides:
        """RunSpec overrides for rerun ``attempt``: policy < escalation steps with at <= attempt."""
        out = self.run
        for step in sorted(self.escalate, key=lambda s: s.at):
            if step.at <= attempt:
                out = merge_overrides(out, step.run)
        return out


@dataclass(frozen=True)
class GpuFaultMatch:
    """``match.error.gpu_fault``: the error carries an ``ErrorInfo.gpu_fault`` whose code,
    severity and kind are each among the given ones (None = any)."""

    codes: frozenset[int] | None = None
    severities: frozenset[str] | None = None
    kinds: frozenset[str] | None = None


@dataclass(frozen=True)
class MatchSpec:
    """The selectors of one policy; ``None`` = not given (matches anything)."""

    projects: frozenset[str] | None = None
    domains: frozenset[str] | None = None
    tasks: tuple[str, ...] | None = None
    action_tasks: tuple[str, ...] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    phases: frozenset[Phase] = DEFAULT_PHASES
    kinds: frozenset[str] | None = None
    codes: frozenset[str] | None = None
    patterns: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    classes: frozenset[str] | None = None
    gpu_fault: GpuFaultMatch | None = None


def _covers_gpu(earlier: GpuFaultMatch | None, later: GpuFaultMatch | None) -> bool:
    if earlier is None:
        return True
    if later is None:
        return False
    return (
        _covers_any(earlier.codes, later.codes)
        and _covers(earlier.severities, later.severities)
        and _covers(earlier.kinds, later.kinds)
    )


def _covers_any(earlier: Iterable[int] | None, later: Iterable[int] | None) -> bool:
    if earlier is None:
        return True
    if later is None:
        return False
    return set(later) <= set(earlier)


def _covers(earlier: Iterable[str] | None, later: Iterable[str] | None) -> bool:
    """An any-of selector ``earlier`` holds whenever ``later`` holds."""
    if earlier is None:
        return True
    if later is None:
        return False
    return set(later) <= set(earlier)


def subsumes(earlier: MatchSpec, later: MatchSpec) -> bool:
    """True when every failure ``later`` matches is also matched by ``earlier``.

    Sound, not complete: it compares selector values as sets (a glob or pattern covers only
    itself), so a ``True`` is always right and makes ``later`` unreachable behind ``earlier``.
    """
    return (
        _covers(earlier.projects, later.projects)
        and _covers(earlier.domains, later.domains)
        and _covers(earlier.tasks, later.tasks)
        and _covers(earlier.action_tasks, later.action_tasks)
        and set(earlier.labels.items()) <= set(later.labels.items())
        and later.phases <= earlier.phases
        and _covers(earlier.kinds, later.kinds)
        and _covers(earlier.codes, later.codes)
        and _covers(earlier.patterns, later.patterns)
        and set(earlier.exclude or ()) <= set(later.exclude or ())
        and _covers(earlier.classes, later.classes)
        and _covers_gpu(earlier.gpu_fault, later.gpu_fault)
    )


@dataclass(frozen=True)
class NeverRetry:
    """The plan of a policy with ``retry: false``: a matching failure is never rerun."""


@dataclass(frozen=True)
class Rule:
    """One compiled policy: what it matches, and its retry plan (``NeverRetry`` for ``retry: false``)."""

    name: str
    origin: Origin
    match: MatchSpec
    retry: RetryPlan | NeverRetry


class PatternSet:
    """All distinct patterns of a policy set, scanned in one RE2 pass per message.

    ``scan(message)`` returns the ids (indices into ``patterns``) of every pattern found
    anywhere in the message. Very large sets that RE2 cannot compile as one program are split
    into a few shards (each still one linear pass).
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns: tuple[str, ...] = tuple(patterns)
        self._shards: list[tuple[int, Any]] = []
        if self.patterns:
            self._build(0, len(self.patterns))

    def _build(self, start: int, stop: int) -> None:
        shard = re2.Set.SearchSet(_re2_options())
        for pattern in self.patterns[start:stop]:
            shard.Add(pattern)
        try:
            shard.Compile()
        except re2.error:
            if stop - start <= 1:
                raise
            mid = (start + stop) // 2
            self._build(start, mid)
            self._build(mid, stop)
            return
        self._shards.append((start, shard))

    def scan(self, message: str) -> frozenset[int]:
        """Ids of the patterns that match somewhere in ``message`` (one pass per shard)."""
        if not self._shards:
            return frozenset()
        data = message.encode("utf-8", "replace")
        found: set[int] = set()
        for offset, shard in self._shards:
            hits = shard.Match(data)
            if hits:
                found.update(offset + i for i in hits)
        return frozenset(found)


_GlobMatcher = Callable[[str], "re.Match[str] | None"]


def _glob(pattern: str) -> _GlobMatcher:
    return re.compile(fnmatch.translate(pattern)).match


@dataclass(frozen=True)
class _CompiledRule:
    rule: Rule
    tasks: tuple[_GlobMatcher, ...] | None
    action_tasks: tuple[_GlobMatcher, ...] | None
    pattern_ids: tuple[int, ...] | None  # the ids of ``match.patterns``, in their order
    exclude_ids: tuple[int, ...] | None  # the ids of ``match.exclude``, in their order


@dataclass(frozen=True)
class Selector:
    """One selector of ``match`` (the ``MatchSpec`` field ``field``) as a pair of functions of
    (compiled rule, failure, ids of the patterns found in its message):

    - ``holds``: whether it holds; None when the policy does not give it (it matches anything);
    - ``explain``: the line ``explain`` shows for it, given what ``holds`` said (only called
      when explaining: the fast path never formats a reason);
    - ``given``: whether the policy gives it (a function of the rule alone): when False,
      ``holds`` is None for every failure, so the fast path skips it (``PolicySet``).
    """

    field: str
    holds: Callable[[_CompiledRule, Failure, frozenset[int]], bool | None]
    explain: Callable[[_CompiledRule, Failure, frozenset[int], bool], str]
    given: Callable[[_CompiledRule], bool] = lambda c: True


def _fmt(values: Iterable[str]) -> str:
    return "[" + ", ".join(values) + "]"


def _q(text: str) -> str:
    """Quote a pattern or glob as written in YAML (no doubled backslashes)."""
    return f"'{text}'"


def _listed(
    field_: str,
    label: str,
    value: Callable[[Failure], str],
    *,
    quote: bool = True,
    quote_each: bool = False,
) -> Selector:
    """An any-of selector of plain values (``projects``, ``error.kinds``, ...)."""
    show: Callable[[str], str] = repr if quote else str
    each: Callable[[str], str] = repr if quote_each else str

    def allowed(c: _CompiledRule) -> frozenset[str] | None:
        found: frozenset[str] | None = getattr(c.rule.match, field_)
        return found

    def holds(c: _CompiledRule, f: Failure, matched: frozenset[int]) -> bool | None:
        given = allowed(c)
        return None if given is None else value(f) in given

    def explain(c: _CompiledRule, f: Failure, matched: frozenset[int], held: bool) -> str:
        if held:
            return f"{label}: {show(value(f))} is listed"
        return f"{label}: {show(value(f))} is not in {_fmt(each(v) for v in sorted(allowed(c) or ()))}"

    return Selector(field_, holds, explain, lambda c: allowed(c) is not None)


def _globbed(field_: str, label: str, value: Callable[[Failure], str]) -> Selector:
    """An any-of selector of globs (``tasks``, ``action_tasks``)."""

    def parts(c: _CompiledRule) -> tuple[tuple[str, ...] | None, tuple[_GlobMatcher, ...] | None]:
        return getattr(c.rule.match, field_), getattr(c, field_)

    def holds(c: _CompiledRule, f: Failure, matched: frozenset[int]) -> bool | None:
        globs, matchers = parts(c)
        if globs is None or matchers is None:
            return None
        v = value(f)
        return any(m(v) for m in matchers)

    def explain(c: _CompiledRule, f: Failure, matched: frozenset[int], held: bool) -> str:
        globs, matchers = parts(c)
        v = value(f)
        if held:
            hit = next(g for g, m in zip(globs or (), matchers or (), strict=True) if m(v))
            return f"{label}: {v!r} matches {_q(hit)}"
        return f"{label}: {v!r} matches none of {_fmt(_q(g) for g in globs or ())}"

    def given(c: _CompiledRule) -> bool:
        globs, matchers = parts(c)
        return globs is not None and matchers is not None

    return Selector(field_, holds, explain, given)


def _labels_hold(c: _CompiledRule, f: Failure, matched: frozenset[int]) -> bool | None:
    wanted = c.rule.match.labels
    return all(f.labels.get(k) == v for k, v in wanted.items()) if wanted else None


def _labels_explain(c: _CompiledRule, f: Failure, matched: frozenset[int], held: bool) -> str:
    wanted = c.rule.match.labels
    if held:
        return "labels: " + ", ".join(f"{k}={v}" for k, v in wanted.items()) + " present"
    missing = {k: v for k, v in wanted.items() if f.labels.get(k) != v}
    return "labels: missing " + ", ".join(f"{k}={v}" for k, v in missing.items())


def _phases_hold(c: _CompiledRule, f: Failure, matched: frozenset[int]) -> bool | None:
    return f.phase in c.rule.match.phases


def _phases_explain(c: _CompiledRule, f: Failure, matched: frozenset[int], held: bool) -> str:
    phases = _fmt(p.value for p in _PHASE_ORDER if p in c.rule.match.phases)
    if held:
        return f"phases: {f.phase.value} is in {phases}"
    aborted = " (ABORTED must be listed to match: a human aborted it)" if f.phase == Phase.ABORTED else ""
    return f"phases: {f.phase.value} is not in {phases}{aborted}"


def _classes_hold(c: _CompiledRule, f: Failure, matched: frozenset[int]) -> bool | None:
    wanted = c.rule.match.classes
    return None if wanted is None else not wanted.isdisjoint(classify(f.error, f.phase))


def _classes_explain(c: _CompiledRule, f: Failure, matched: frozenset[int], held: bool) -> str:
    wanted = c.rule.match.classes or frozenset()
    found = classify(f.error, f.phase)
    if held:
        return f"error.classes: the failure is {_with_evidence(sorted(wanted & found), f)}"
    shown = sorted(found - {"user", "system"})
    return (
        f"error.classes: the failure is {', '.join(shown) if shown else 'of no taxonomy class'}, "
        f"not any of {_fmt(sorted(wanted))}"
    )


def _gpu_selectors(
    g: GpuFaultMatch, failure: Failure
) -> tuple[tuple[str, object, Collection[Any] | None], ...]:
    fault = failure.error.gpu_fault
    assert fault is not None
    return (
        ("code", fault.code, g.codes),
        ("severity", fault.severity, g.severities),
        ("kind", fault.kind, g.kinds),
    )


def _gpu_hold(c: _CompiledRule, f: Failure, matched: frozenset[int]) -> bool | None:
    g = c.rule.match.gpu_fault
    if g is None:
        return None
    if f.error.gpu_fault is None:
        return False
    return all(allowed is None or value in allowed for _, value, allowed in _gpu_selectors(g, f))


def _gpu_explain(c: _CompiledRule, f: Failure, matched: frozenset[int], held: bool) -> str:
    g, fault = c.rule.match.gpu_fault, f.error.gpu_fault
    if g is None or fault is None:
        return "error.gpu_fault: the error carries no GPU fault"
    for label, value, allowed in _gpu_selectors(g, f):
        if allowed is not None and value not in allowed:
            return f"error.gpu_fault: {label} {value} is not in {_fmt(str(v) for v in sorted(allowed))}"
    text = (
        f"{fault.kind} {fault.code}"
        + (f" ({fault.name})" if fault.name else "")
        + f", severity {fault.severity}"
    )
    return f"error.gpu_fault: {text} is selected"


def _found(
    patterns: tuple[str, ...] | None, ids: tuple[int, ...] | None, matched: frozenset[int]
) -> list[str]:
    """The patterns (of ``patterns``, whose ids are ``ids``) found in the message."""
    return [p for p, i in zip(patterns or (), ids or (), strict=True) if i in matched]


def _patterns_hold(c: _CompiledRule, f: Failure, matched: frozenset[int]) -> bool | None:
    ids = c.pattern_ids
    return None if ids is None else not matched.isdisjoint(ids)


def _patterns_explain(c: _CompiledRule, f: Failure, matched: frozenset[int], held: bool) -> str:
    patterns = c.rule.match.patterns
    if held:
        return f"error.patterns: {_q(_found(patterns, c.pattern_ids, matched)[0])} found in the message"
    return "error.patterns: none of " + _fmt(_q(p) for p in patterns or ()) + " found in the message"


def _exclude_hold(c: _CompiledRule, f: Failure, matched: frozenset[int]) -> bool | None:
    ids = c.exclude_ids
    return None if ids is None else matched.isdisjoint(ids)


def _exclude_explain(c: _CompiledRule, f: Failure, matched: frozenset[int], held: bool) -> str:
    if held:
        return "error.exclude: no excluded pattern found"
    vetoes = _found(c.rule.match.exclude, c.exclude_ids, matched)
    return f"error.exclude: {_q(vetoes[0])} found in the message vetoes this policy"


# Every selector of ``match``, in the order they are checked and explained. Inside ``match``
# every given selector must hold (``PolicySet.first_match``).
SELECTORS: tuple[Selector, ...] = (
    _listed("projects", "projects", lambda f: f.project),
    _listed("domains", "domains", lambda f: f.domain),
    _globbed("tasks", "tasks", lambda f: f.task),
    _globbed("action_tasks", "action_tasks", lambda f: f.action_task),
    Selector("labels", _labels_hold, _labels_explain, lambda c: bool(c.rule.match.labels)),
    Selector("phases", _phases_hold, _phases_explain),
    _listed("kinds", "error.kinds", lambda f: f.error.kind, quote=False),
    _listed("codes", "error.codes", lambda f: f.error.code, quote_each=True),
    Selector("classes", _classes_hold, _classes_explain, lambda c: c.rule.match.classes is not None),
    Selector("gpu_fault", _gpu_hold, _gpu_explain, lambda c: c.rule.match.gpu_fault is not None),
    Selector("patterns", _patterns_hold, _patterns_explain, lambda c: c.pattern_ids is not None),
    Selector("exclude", _exclude_hold, _exclude_explain, lambda c: c.exclude_ids is not None),
)


class PolicySet:
    """Compiled policies, in order, plus the global budget.

    Built by ``rerund.policy.load_policies`` (or directly from ``Rule``s in tests); immutable
    after construction and safe to share between threads (RE2 sets are thread-safe).
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        global_budget: Budget | None = None,
        sources: Sequence[str] = (),
        reproductions: Sequence[ReproCheck] = (),
        incidents: IncidentRule | None = None,
    ) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.global_budget = global_budget
        # The outage breaker's settings (``incidents:``; None: off), ``rerund.core.incidents``.
        self.incidents = incidents
        self.sources: tuple[str, ...] = tuple(sources)
        # Scheduled reproduction checks (``reproductions:``), in file order.
        self.reproductions: tuple[ReproCheck, ...] = tuple(reproductions)
        index: dict[str, int] = {}
        for rule in self.rules:
            for pattern in (rule.match.patterns or ()) + (rule.match.exclude or ()):
                index.setdefault(pattern, len(index))
        self._index = index
        self.pattern_set = PatternSet(list(index))
        compiled: list[_CompiledRule] = []
        always: list[int] = []
        by_pattern: dict[int, list[int]] = {}
        for position, rule in enumerate(self.rules):
            m = rule.match
            ids = None if m.patterns is None else tuple(index[p] for p in m.patterns)
            compiled.append(
                _CompiledRule(
                    rule=rule,
                    tasks=None if m.tasks is None else tuple(_glob(g) for g in m.tasks),
                    action_tasks=None if m.action_tasks is None else tuple(_glob(g) for g in m.action_tasks),
                    pattern_ids=ids,
                    exclude_ids=None if m.exclude is None else tuple(index[p] for p in m.exclude),
                )
            )
            if ids is None:
                always.append(position)
            else:
                for i in ids:
                    by_pattern.setdefault(i, []).append(position)
        self._compiled = tuple(compiled)
        # Per rule, the selectors it gives (the others hold for every failure): the fast path's.
        self._given = tuple(tuple(s for s in SELECTORS if s.given(c)) for c in compiled)
        self._always = tuple(always)
        self._by_pattern = {i: tuple(v) for i, v in by_pattern.items()}

    def __len__(self) -> int:
        return len(self.rules)

    def names(self) -> list[str]:
        """Policy names in evaluation order."""
        return [r.name for r in self.rules]

    def decides_like(self, other: PolicySet) -> bool:
        """True when ``other`` decides every failure as this set does: the same rules (name,
        match, retry) in the same order, the same global budget and incident settings. Where a
        rule is written (``origin``) and the reproduction checks do not decide failures, so a
        reload that changed only those (a comment, a moved line) decides nothing again. No side
        effects."""
        return (
            self.global_budget == other.global_budget
            and self.incidents == other.incidents
            and len(self.rules) == len(other.rules)
            and all(
                (a.name, a.match, a.retry) == (b.name, b.match, b.retry)
                for a, b in zip(self.rules, other.rules, strict=True)
            )
        )

    def budgets(self) -> dict[str, timedelta]:
        """Budget name (``global`` or a policy name) -> the window the daemon counts reruns in."""
        out: dict[str, timedelta] = {}
        if self.global_budget is not None:
            out[GLOBAL_BUDGET] = self.global_budget.per
        for rule in self.rules:
            if isinstance(rule.retry, RetryPlan) and rule.retry.budget is not None:
                out[rule.name] = rule.retry.budget.per
        return out

    def evidence_windows(self) -> set[timedelta]:
        """The windows of every ``give_up_below`` (what the daemon counts a fingerprint's
        reruns and recoveries over, ``Failure.evidence``)."""
        return {
            r.retry.give_up_below.window
            for r in self.rules
            if isinstance(r.retry, RetryPlan) and r.retry.give_up_below is not None
        }

    def first_match(self, failure: Failure, trace: list[str] | None = None) -> Rule | None:
        """The first rule (in order) whose match holds for ``failure``, or None.

        With ``trace`` (a list to append to), every rule up to the first match is evaluated
        fully and one line per rule says which selectors held or failed and why; without it
        only rules that can match are visited (same result, tested as a property).
        """
        matched = self.pattern_set.scan(failure.error.message)
        if trace is None:
            candidates = set(self._always)
            for i in matched:
                candidates.update(self._by_pattern.get(i, ()))
            for position in sorted(candidates):
                if self._given_hold(self._compiled[position], self._given[position], failure, matched):
                    return self.rules[position]
            return None
        for compiled in self._compiled:
            notes: list[str] = []
            held = self._holds(compiled, failure, matched, notes)
            rule = compiled.rule
            verdict = "matches" if held else "does not match"
            trace.append(f"policy {rule.name!r} ({rule.origin}) {verdict}: " + "; ".join(notes))
            if held:
                return rule
        return None

    @staticmethod
    def _given_hold(
        c: _CompiledRule, selectors: tuple[Selector, ...], failure: Failure, matched: frozenset[int]
    ) -> bool:
        """Every selector of ``selectors`` (those ``c`` gives) holds; the first that fails ends
        the check (``_holds`` without notes, over only the selectors that can say no)."""
        for selector in selectors:
            held = selector.holds(c, failure, matched)
            if held is not None and not held:
                return False
        return True

    @staticmethod
    def _holds(c: _CompiledRule, failure: Failure, matched: frozenset[int], notes: list[str]) -> bool:
        """Every selector of ``c`` holds for ``failure``: each given selector is checked and
        explained in ``notes`` (the trace's; the fast path is ``_given_hold``)."""
        ok = True
        for selector in SELECTORS:
            held = selector.holds(c, failure, matched)
            if held is None:
                continue
            notes.append(selector.explain(c, failure, matched, held))
            ok = ok and held
        return ok


def _with_evidence(classes: Sequence[str], failure: Failure) -> str:
    """``oom (from the message (no code): 'Reason [OOMKilled]')``: a class read from the
    executor's message form says so (``taxonomy.evidence``); a class read from the code or the
    kind is shown plain, as before."""
    why = evidence(failure.error, failure.phase)
    return ", ".join(
        f"{c} (from {why[c]})" if why.get(c, "").startswith("the message") else c for c in classes
    )
