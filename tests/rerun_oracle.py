"""The reliability oracle: what the policies owe every lineage, checked against the control
plane's own state.

Given the sandbox's runs (``SandboxHandle.runs()``: names, labels, env, inputs, phases,
relation, actions) and the policies in force, ``audit`` walks every lineage from its original
run: while the current run failed, the pure decision core says what that failure is owed; a
``rerun`` names exactly one run (deterministic name), which must exist with the decided scope,
labels, env and inputs, and the walk continues from it. A rerun owed but absent is *missed*;
a rerun on the control plane that no walk accounts for — a second run for the same
(root, attempt), a rerun of a failure owed nothing — is a *duplicate*. The sandbox's own lineage
bookkeeping (the run-spec relation, independent of rerund's labels) is cross-checked too, so a
rerun created without rerund's labels cannot hide.

Identity is the control plane's, not the labels' (issue 22): a run is a rerun only when it has a
relation (anyone can write ``rerund-*`` labels on a fresh run: such a run is an original of its
own), and a rerun owed under a name another run holds is looked for under the attempt's salted
names (``rerund.core.names``), in order, as the daemon walks them.

The oracle trusts the decision core only for *which* rerun a failure is owed (the core has its
own table-driven and property tests); whether the daemon issued it — once, with the right
content — is what the oracle checks. Budgets are ignored by ``audit``; ``budget_row`` reads an
audit under a global budget that caps what is owed right now.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rerund.core.decide import decide
from rerund.core.model import Decision, ErrorInfo, Failure, Phase
from rerund.core.names import MAX_SALT, rerun_name
from rerund.core.rules import PolicySet

FAILED = {"FAILED", "TIMED_OUT", "ABORTED"}
TERMINAL = FAILED | {"SUCCEEDED", "RECOVERED"}
ROOT_LABEL, ATTEMPT_LABEL, POLICY_LABEL = "rerund-root", "rerund-attempt", "rerund-policy"
CANARIES_LABEL = "rerund-canaries"


@dataclass
class Lineage:
    """One lineage: its original run, the reruns owed (in order) and what the control plane has."""

    root: str
    owed: list[Decision] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    final: str = ""  # decision kind that ended the walk: ignore | give_up | succeeded | missing
    final_phase: str = ""


@dataclass
class Audit:
    """The whole control plane, lineage by lineage."""

    lineages: dict[str, Lineage]
    failures: int  # original runs that failed
    stray: list[str] = field(default_factory=list)  # reruns whose lineage root does not exist

    @property
    def owed(self) -> int:
        return sum(len(x.owed) for x in self.lineages.values())

    @property
    def issued(self) -> int:
        return sum(len(x.issued) for x in self.lineages.values())

    @property
    def missed(self) -> int:
        return sum(len(x.missed) for x in self.lineages.values())

    @property
    def duplicates(self) -> int:
        return sum(len(x.duplicates) for x in self.lineages.values()) + len(self.stray)

    @property
    def wrong(self) -> list[str]:
        return [w for x in self.lineages.values() for w in x.wrong]

    def count(self, final: str) -> int:
        return sum(1 for x in self.lineages.values() if x.final == final and x.owed)

    def problems(self, limit: int = 20) -> str:
        """A readable summary of what is wrong (empty when exact)."""
        lines = []
        for x in self.lineages.values():
            for what, items in (("missed", x.missed), ("duplicate", x.duplicates), ("wrong", x.wrong)):
                lines += [f"lineage {x.root}: {what} {i}" for i in items]
        lines += [f"stray rerun {s}" for s in self.stray]
        more = f"\n... and {len(lines) - limit} more" if len(lines) > limit else ""
        return "\n".join(lines[:limit]) + more

    def exact(self) -> bool:
        return self.missed == 0 and self.duplicates == 0 and not self.wrong

    def row(self) -> dict[str, int]:
        return {
            "failures": self.failures,
            "owed": self.owed,
            "issued": self.issued,
            "duplicates": self.duplicates,
            "missed": self.missed,
        }


def failure_of(run: Mapping[str, Any], root: str, attempt: int) -> Failure:
    """The failure the daemon reads from a failed run: the first failed child action (else the
    root action a0) and the run's error."""
    failed_children = [a for a in run["actions"] if a["parent"] and a["phase"] in FAILED]
    action = failed_children[0] if failed_children else None
    err = run.get("served_error") or run.get("error") or {}  # what the daemon reads
    return Failure(
        run=run["name"],
        root=root,
        attempt=attempt,
        project=run["project"],
        domain=run["domain"],
        task=run["task"],
        labels=dict(run["labels"]),
        phase=Phase(run["phase"]),
        action=action["name"] if action else "a0",
        action_task=action["task"] if action else run["task"],
        error=ErrorInfo(
            kind=err.get("kind", "UNSPECIFIED") or "UNSPECIFIED",
            code=err.get("code", ""),
            message=err.get("message", ""),
        ),
        failed_at=datetime.fromisoformat(run["updated_at"]).astimezone(UTC),
    )


def _check_content(d: Decision, run: Mapping[str, Any], source: str) -> list[str]:
    """Differences between the decided rerun ``d`` and the run the control plane has."""
    wrong = []
    name = run["name"]
    rel = run.get("relation") or {}
    if rel.get("run") != source:
        wrong.append(f"{name}: relation names {rel.get('run')!r}, expected the failed run {source!r}")
    want_type = "RECOVER" if d.scope is not None and d.scope.value == "recover" else "RERUN"
    if rel.get("type") != want_type:
        wrong.append(f"{name}: relation type {rel.get('type')!r}, expected {want_type}")
    want_action = d.action or "a0"
    if run.get("action_name") != want_action:
        wrong.append(f"{name}: reran action {run.get('action_name')!r}, expected {want_action!r}")
    for what, want, got in (
        ("label", d.labels, run["labels"]),
        ("env", d.env, run["envs"]),
        ("input", d.inputs, run["inputs"]),
    ):
        for k, v in want.items():
            if what == "label" and k == CANARIES_LABEL and got.get(k) == str(int(v) + 1):
                continue  # the rerun went out as an incident's canary: the breaker counted it
            if got.get(k) != v:
                wrong.append(f"{name}: {what} {k}={got.get(k)!r}, expected {v!r}")
    return wrong


def audit(
    runs: Sequence[Mapping[str, Any]],
    policies: PolicySet,
    *,
    now: datetime | None = None,
    planted: frozenset[str] = frozenset(),
) -> Audit:
    """Compare what ``policies`` owe every lineage with the reruns in ``runs`` (see the module
    docstring). Budgets are not applied: see ``budget_row``. ``planted`` runs (a scenario's
    squatters and forgeries) hold their names but are nobody's lineage: never audited."""
    now = now or datetime.now(UTC)
    by_name = {r["name"]: r for r in runs}
    originals = [r for r in runs if not r.get("relation") and r["name"] not in planted]
    reruns_of: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in runs:
        if r.get("relation") and r["name"] not in planted:
            root = r["labels"].get(ROOT_LABEL) or _sandbox_root(r, by_name)
            reruns_of[root].append(r)
    lineages: dict[str, Lineage] = {}
    accounted: set[str] = set()
    failures = 0
    for r0 in originals:
        x = Lineage(root=r0["name"])
        lineages[x.root] = x
        if r0["phase"] in FAILED:
            failures += 1
        cur, attempt = r0, 0
        while True:
            x.final_phase = cur["phase"]
            if cur["phase"] not in FAILED:
                x.final = "succeeded" if cur["phase"] == "SUCCEEDED" else cur["phase"].lower()
                break
            d = decide(failure_of(cur, x.root, attempt), policies, now)
            if d.decision != "rerun":
                x.final = d.decision
                break
            assert d.name is not None and d.attempt is not None
            x.owed.append(d)
            nxt = _owed_rerun(by_name, x.root, d.attempt, cur["name"])
            if nxt is None:
                x.missed.append(f"{d.name} (attempt {d.attempt} of {cur['name']})")
                x.final = "missing"
                break
            x.issued.append(nxt["name"])
            accounted.add(nxt["name"])
            x.wrong += _check_content(d, nxt, cur["name"])
            cur, attempt = nxt, attempt + 1
        for r in reruns_of.get(x.root, []):
            if r["name"] not in accounted:
                labels = r["labels"]
                x.duplicates.append(
                    f"{r['name']} (attempt {labels.get(ATTEMPT_LABEL)!r}, "
                    f"policy {labels.get(POLICY_LABEL)!r}, from {(r.get('relation') or {}).get('run')!r})"
                )
    stray = [r["name"] for root, rs in reruns_of.items() if root not in lineages for r in rs]
    return Audit(lineages=lineages, failures=failures, stray=stray)


def _owed_rerun(
    by_name: Mapping[str, Mapping[str, Any]], root: str, attempt: int, source: str
) -> Mapping[str, Any] | None:
    """The rerun of (root, attempt) from run ``source``: under the attempt's first name not held
    by another run (a run that is not this lineage's rerun of ``source``), or None (missed)."""
    for salt in range(MAX_SALT + 1):
        run = by_name.get(rerun_name(root=root, attempt=attempt, salt=salt))
        if run is None:
            return None
        labels = run["labels"]
        ours = (
            labels.get(ROOT_LABEL) == root
            and labels.get(ATTEMPT_LABEL) == str(attempt)
            and (run.get("relation") or {}).get("run") == source
        )
        if ours:
            return run
    return None


def budget_row(result: Audit, budget: int) -> dict[str, int]:
    """The results row of a scenario under a global budget: only ``min(budget, owed)`` reruns
    are owed in the window; owed reruns beyond it are deferred (not missed), and reruns beyond
    the budget count as duplicates."""
    allowed = min(budget, result.owed)
    return {
        "failures": result.failures,
        "owed": allowed,
        "issued": result.issued,
        "duplicates": result.duplicates + max(0, result.issued - budget),
        "missed": max(0, allowed - result.issued),
    }


def _sandbox_root(run: Mapping[str, Any], by_name: Mapping[str, Mapping[str, Any]]) -> str:
    """The original run of a lineage by following relations (for runs without rerund labels)."""
    seen = set()
    cur = run
    while cur.get("relation") and cur["name"] not in seen:
        seen.add(cur["name"])
        nxt = by_name.get(cur["relation"]["run"])
        if nxt is None:
            return str(cur["relation"]["run"])
        cur = nxt
    return str(cur["name"])


def reruns(runs: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The runs rerund created (they carry the lineage labels and a relation)."""
    return [r for r in runs if ROOT_LABEL in r["labels"] and r.get("relation")]
