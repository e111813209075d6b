"""``rerund suggest``, purely: from real failures (and what their reruns did) to a starter
policy file and a ``rerund test`` case file, the evidence written as comments. It lives in
the policy layer because it writes policy YAML.

Failures are grouped by fingerprint (``rerund.core.fingerprints``); each group knows how many
reruns of its failures ended and how many succeeded (from the control plane's reruns and,
when there is one, the ledger). One policy per distinct match (task, error kind, error code:
two fingerprints that only a message tells apart share it, their evidence added up):

- reruns recovered at least half the time, or no rerun seen: rerun (``max_attempts: 3``),
  with a ``give_up_below`` so the daemon stops if history turns out otherwise;
- at least ``_MIN_HOPELESS`` reruns and fewer than ``_HOPELESS_RATE`` recovered:
  ``retry: false`` (never rerun what never recovered);
- in between: rerun, ``max_attempts: 2``, with the same ``give_up_below``.

Policies are ordered most specific first (a task and a code before a task alone), so none is
shadowed by another (``rerund check`` refuses unreachable policies). The case file holds one
case per fingerprint: its real failure (message redacted, control characters escaped) and
the decision the written policies give it (``case_file``; the shell decides them with the
file it wrote, so ``rerund test`` passes on what was written).

No I/O, no clock: the shell passes the failures and ``now``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import yaml

from rerund.core.durations import format_duration
from rerund.core.encode import for_terminal
from rerund.core.model import Failure
from rerund.core.redact import redact_message
from rerund.core.times import iso

__all__ = ["Seen", "Suggestion", "case_file", "suggest"]

_HOPELESS_RATE = 0.1
_MIN_HOPELESS = 3
_GOOD_RATE = 0.5
_MAX_EXAMPLE = 300


@dataclass
class Seen:
    """One fingerprint's failures: the first one seen (the example), how many there were, in
    which runs and tasks, and how many reruns of them ended (``reruns``) and succeeded."""

    fingerprint: str
    example: Failure
    failures: int = 0
    reruns: int = 0
    recovered: int = 0
    runs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Suggestion:
    """The two files ``rerund suggest`` writes (YAML text), how many policies it made and
    which policy each fingerprint's failures fall to."""

    policies: str
    cases: list[dict[str, Any]]
    policy_count: int
    fingerprints: int
    policy_of: dict[str, str] = field(default_factory=dict)  # fingerprint -> its policy's name


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:40].strip("-") or "x"


def _rate(recovered: int, reruns: int) -> str:
    return f"{recovered} of {reruns} ({recovered / reruns:.0%})" if reruns else "no rerun seen"


def _example(failure: Failure) -> str:
    return for_terminal(redact_message(failure.error.message))[:_MAX_EXAMPLE]


@dataclass
class _Policy:
    task: str
    kind: str
    code: str
    seen: list[Seen] = field(default_factory=list)

    @property
    def reruns(self) -> int:
        return sum(s.reruns for s in self.seen)

    @property
    def recovered(self) -> int:
        return sum(s.recovered for s in self.seen)

    @property
    def failures(self) -> int:
        return sum(s.failures for s in self.seen)

    def name(self, taken: set[str]) -> str:
        base = _slug("-".join(p for p in (self.task, self.code or self.kind.lower()) if p))
        name, n = base, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        taken.add(name)
        return name

    def verdict(self) -> str:
        reruns, recovered = self.reruns, self.recovered
        if reruns >= _MIN_HOPELESS and recovered < _HOPELESS_RATE * reruns:
            return "never"
        if reruns == 0 or recovered >= _GOOD_RATE * reruns:
            return "rerun"
        return "cautious"


def suggest(seen: Sequence[Seen], *, now: datetime, since: timedelta, scopes: Sequence[str]) -> Suggestion:
    """The starter policy file and case file for ``seen`` (pure). ``policies:`` of the case
    file is ``suggested.yaml`` (the two are written side by side)."""
    groups: dict[tuple[str, str, str], _Policy] = {}
    for s in sorted(seen, key=lambda s: (-s.failures, s.fingerprint)):
        e = s.example
        key = (e.task, e.error.kind, e.error.code)
        groups.setdefault(key, _Policy(*key)).seen.append(s)
    # Most specific first: with a code before without (a policy without a code would match
    # every failure of its task and kind, shadowing the ones with a code after it).
    ordered = sorted(groups.values(), key=lambda p: (p.task == "", p.code == "", p.task, p.kind, p.code))
    window = format_duration(since)
    total = sum(s.failures for s in seen)
    lines = [
        f"# Suggested by `rerund suggest --since {window}` at {iso(now)} from {total} failure(s)",
        f"# of {len(seen)} fingerprint(s) in {', '.join(scopes) or 'no scope'}.",
        "# A starting point: review every policy, then `rerund check` and `rerund test` (the case",
        "# file next to this one holds the real failures). Evidence: reruns seen in the window",
        "# (the control plane's reruns, and the ledger's when there was one) and how many recovered.",
        "apiVersion: rerund/v1",
        "defaults:",
        "  backoff: {initial: 30s, factor: 2, max: 10m, jitter: 0.2}",
        "incidents:  # the outage breaker: many failures of one fingerprint hold their reruns",
        "  open: {failures: 10, within: 1m}",
        "  probe_every: 30s",
        "policies:",
    ]
    taken: set[str] = set()
    names: dict[str, str] = {}
    for p in ordered:
        name = p.name(taken)
        verdict = p.verdict()
        lines.append("")
        lines.append(
            f"  # {p.failures} failure(s), {len(p.seen)} fingerprint(s); reruns recovered "
            f"{_rate(p.recovered, p.reruns)}"
        )
        for s in p.seen[:5]:
            lines.append(
                f"  #   {s.fingerprint}: {s.failures} failure(s), reruns recovered "
                f"{_rate(s.recovered, s.reruns)}; e.g. {_example(s.example)}"
            )
            names[s.fingerprint] = name
        for s in p.seen[5:]:
            names[s.fingerprint] = name
        error: dict[str, Any] = {"kinds": [p.kind]}
        if p.code:
            error["codes"] = [p.code]
        match = {"tasks": [p.task] if p.task else None, "error": error}
        entry: dict[str, Any] = {"name": name, "match": {k: v for k, v in match.items() if v is not None}}
        if verdict == "never":
            lines.append("  # never recovered on rerun: not rerun (a person should look at these)")
            entry["retry"] = False
        else:
            attempts = 3 if verdict == "rerun" else 2
            if verdict == "cautious":
                lines.append("  # recovered sometimes: fewer attempts, and history decides")
            entry["retry"] = {
                "max_attempts": attempts,
                "give_up_below": {"recovery_rate": _HOPELESS_RATE, "min_reruns": 10, "window": "7d"},
            }
        body = yaml.safe_dump([entry], sort_keys=False, default_flow_style=None, width=100)
        lines += ["  " + line for line in body.rstrip("\n").splitlines()]
    if not ordered:
        lines[-1] = "policies: []  # no failure in the window"
    policies_text = "\n".join(lines) + "\n"
    return Suggestion(
        policies=policies_text,
        cases=_cases(seen, names),
        policy_count=len(ordered),
        fingerprints=len(seen),
        policy_of=names,
    )


def _cases(seen: Sequence[Seen], names: dict[str, str]) -> list[dict[str, Any]]:
    """One case per fingerprint: its real failure (message redacted), named after its policy;
    the expectations are the shell's (``case_file``), from the written policies."""
    cases = []
    for s in sorted(seen, key=lambda s: (-s.failures, s.fingerprint)):
        e = s.example
        failure: dict[str, Any] = {
            "run": e.run,
            "project": e.project,
            "domain": e.domain,
            "task": e.task,
            "phase": e.phase.value,
            "error": {"kind": e.error.kind, "code": e.error.code, "message": _example(e)},
            "failed_at": iso(e.failed_at),
        }
        if e.action not in ("", "a0"):
            failure["action"] = e.action
            failure["action_task"] = e.action_task
        name = f"fingerprint {s.fingerprint} ({s.failures} failure(s)), policy {names[s.fingerprint]}"
        cases.append({"name": name, "failure": failure})
    return cases


def case_file(cases: Sequence[dict[str, Any]], expectations: Sequence[dict[str, Any]], now: datetime) -> str:
    """The ``rerund test`` file of ``cases`` with their ``expectations`` (YAML text)."""
    header = (
        "# Real failures seen by `rerund suggest` (messages redacted), one per fingerprint, and the\n"
        "# decision the suggested policies give each today. Edit the policies and these together.\n"
    )
    body = [{**c, "expect": e} for c, e in zip(cases, expectations, strict=True)]
    doc = {"policies": "suggested.yaml", "now": iso(now), "cases": body}
    return header + yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True)
