"""Pure lineage functions: the failure read from facts, the request built from a decision, the
budget counts, and the notice of an exhausted lineage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rerund.core.decide import decide
from rerund.core.lineage import (
    BudgetCounter,
    BudgetRows,
    attempt_of,
    budget_counts,
    claimed_lineage,
    exhausted_notice,
    failure_from,
    lineage_names,
    policy_budgets,
    rerun_request,
    unvouched,
    vouches,
)
from rerund.core.model import ErrorInfo, GiveUp, Rerun
from rerund.core.runs import FailureFacts, RunRef, RunSummary

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
ERROR = ErrorInfo(kind="SYSTEM", code="ConnectionResetError", message="Connection reset by peer")


def facts(labels: dict[str, str] | None = None, action: str = "a0", name: str = "abc123") -> FailureFacts:
    return FailureFacts(
        summary=RunSummary(RunRef("ml", "production", name), "FAILED", task="train.fit", ended_at=T0),
        labels=labels or {},
        action=action,
        action_task="train.fit",
        error=ERROR,
        failed_at=T0,
    )


@pytest.mark.parametrize(
    ("labels", "attempt"),
    [({}, 0), ({"rerund-attempt": "2"}, 2), ({"rerund-attempt": "-3"}, 0), ({"rerund-attempt": "x"}, 0)],
    ids=["original", "second-rerun", "negative", "not-a-number"],
)
def test_the_attempt_is_the_label_or_zero(labels, attempt):
    assert attempt_of(labels) == attempt


def test_a_failure_from_facts_takes_its_root_and_attempt_from_the_lineage_labels():
    f = failure_from(facts({"rerund-root": "orig", "rerund-attempt": "1"}), {"global": 2}, {"global": T0})
    assert (f.run, f.root, f.attempt, f.project, f.domain, f.task) == (
        "abc123",
        "orig",
        1,
        "ml",
        "production",
        "train.fit",
    )
    assert (f.budget_used, f.budget_oldest) == ({"global": 2}, {"global": T0})
    assert failure_from(facts()).root == "abc123"  # an original run is its own root


@pytest.mark.parametrize(
    ("scope", "failing_action", "action", "recover"),
    [
        ("run", "a3", "a0", False),
        ("failed_action", "a3", "a3", False),
        ("failed_action", "a0", "a0", False),
        ("recover", "a3", "a0", True),
    ],
    ids=["run", "failed-action", "failed-action-at-root", "recover"],
)
def test_the_request_reruns_the_action_its_scope_names(policies, scope, failing_action, action, recover):
    ps = policies(f"policies:\n  - name: any\n    retry: {{scope: {scope}, backoff: {{initial: 0s}}}}\n")
    f = facts({"rerund-root": "orig", "rerund-attempt": "1"}, action=failing_action)
    decision = decide(failure_from(f), ps, T0)
    assert isinstance(decision, Rerun)
    req = rerun_request(f, decision)
    assert (req.source, req.name, req.action, req.recover) == (f.summary.ref, decision.name, action, recover)
    assert {k: req.labels[k] for k in ("rerund-root", "rerund-attempt", "rerund-policy")} == {
        "rerund-root": "orig",
        "rerund-attempt": "2",
        "rerund-policy": "any",
    }


def test_budgets_count_the_reruns_in_their_window_the_global_one_every_policy():
    budgets = {"global": timedelta(hours=1), "oom": timedelta(minutes=10)}
    reruns = [
        ("oom", T0 - timedelta(minutes=5)),
        ("oom", T0 - timedelta(minutes=30)),  # outside the oom window, inside the global one
        ("net", T0 - timedelta(minutes=2)),
        ("net", T0 - timedelta(hours=2)),  # outside both
        ("oom", None),  # being created now
    ]
    used, oldest = budget_counts(reruns, budgets, T0)
    assert used == {"global": 4, "oom": 2}
    assert oldest == {"global": T0 - timedelta(minutes=30), "oom": T0 - timedelta(minutes=5)}
    assert policy_budgets(budgets) == {"oom": timedelta(minutes=10)}


_POLICY = st.sampled_from([None, "oom", "net", "global"])
_CREATED = st.one_of(st.none(), st.integers(-7200, 600).map(lambda s: T0 + timedelta(seconds=s)))
_BUDGETS = st.dictionaries(
    st.sampled_from(["global", "oom", "net", "other"]),
    st.integers(-60, 7200).map(lambda s: timedelta(seconds=s)),
)


@given(st.lists(st.tuples(_POLICY, _CREATED), max_size=40), _BUDGETS, st.integers(-600, 600))
def test_sorted_budget_rows_count_exactly_what_a_scan_counts(reruns, budgets, offset):
    """``BudgetRows`` (sorted once per change of the reruns index, a binary search per
    decision) answers what ``budget_counts`` (a scan per decision) answers."""
    now = T0 + timedelta(seconds=offset)
    assert BudgetRows(reruns).counts(budgets, now) == budget_counts(reruns, budgets, now)


_ENTRY = st.sampled_from(["a", "b", "c", "d", "e", "f"])
_GROUP = st.sampled_from([None, None, ("ml/p", "root", 1), ("ml/p", "root", 2)])
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _ENTRY, _GROUP, st.tuples(_POLICY, _CREATED)),
        st.tuples(st.just("discard"), _ENTRY, st.none(), st.none()),
    ),
    max_size=40,
)


@given(_OPS, _BUDGETS, st.integers(-600, 600))
def test_a_budget_counter_kept_as_reruns_come_and_go_counts_what_a_scan_counts(ops, budgets, offset):
    """``BudgetCounter`` (changed one rerun at a time) answers what ``budget_counts`` answers
    over the rows it holds: each entry once, the copies of one group once, as the earliest."""
    counter = BudgetCounter()
    entries = {}
    for op, entry, group, row in ops:
        if op == "put":
            counter.put(entry, row, group)
            entries[entry] = (group, row)
        else:
            counter.discard(entry)
            entries.pop(entry, None)
    rows = [row for group, row in entries.values() if group is None]
    for group in {g for g, _ in entries.values() if g is not None}:
        copies = [row for g, row in entries.values() if g == group]
        rows.append(min(copies, key=lambda r: (r[1] is None, r[1] or T0 - timedelta(days=999), r[0] or "")))
    now = T0 + timedelta(seconds=offset)
    assert counter.counts(budgets, now) == budget_counts(rows, budgets, now)
    assert len(counter) == len(rows)


def test_the_lineage_lists_the_root_then_its_reruns_by_attempt():
    members = [("r-2", "orig", 2), ("other", "x", 1), ("r-1", "orig", 1), ("orig", "orig", None)]
    assert lineage_names("orig", "r-3", members) == ["orig", "r-1", "r-2", "r-3"]
    assert lineage_names("orig", "r-2", members) == ["orig", "r-1", "r-2"]


def test_the_exhausted_notice_names_the_lineage_the_reason_and_the_error():
    f = facts({"rerund-root": "orig", "rerund-attempt": "3"}, name="r-3")
    decision = GiveUp(policy="net", attempt=4, reason="gives up", source_run="r-3", root="orig")
    notice = exhausted_notice(
        f, failure_from(f), decision, lineage=["orig", "r-3"], console_url="http://c/r-3", now=T0
    )
    assert notice == {
        "text": "rerund: lineage 'orig' exhausted — gives up",
        "event": "lineage_exhausted",
        "run": "r-3",
        "project": "ml",
        "domain": "production",
        "root": "orig",
        "lineage": ["orig", "r-3"],
        "policy": "net",
        "attempt": 4,  # the attempt refused, as history and /decisions say
        "reruns_issued": 3,
        "reason": "gives up",
        "error": {"kind": "SYSTEM", "code": "ConnectionResetError", "message": "Connection reset by peer"},
        "console_url": "http://c/r-3",
        "decided_at": "2026-11-24T10:00:00Z",
    }


# -- who vouches for lineage labels (issue 22.2) ------------------------------------------------


def _r(name: str, project: str = "ml") -> RunRef:
    return RunRef(project, "prod", name)


@pytest.mark.parametrize(
    ("claim", "relation", "parent", "vouched"),
    [
        (("x", 1), _r("x"), None, True),
        (("x", 1), None, None, False),
        (("x", 1), _r("y"), None, False),
        (("x", 1), _r("x", project="other"), None, False),
        (("x", 2), _r("x-retry-1"), ("x", 1), True),
        (("x", 2), _r("x-retry-1"), ("x", 2), True),
        (("x", 2), _r("x-retry-1"), ("x", 3), False),
        (("x", 2), _r("x-retry-1"), ("y", 1), False),
        (("x", 2), _r("x-retry-1"), None, False),
        (("x", 2), _r("x"), None, False),
        (("x", 1), _r("x-retry-1"), ("x", 1), True),
        (("x", 1), _r("r"), None, False),
    ],
    ids=[
        "first-attempt-reruns-the-root",
        "no-relation-a-fresh-run",
        "first-attempt-reruns-another-run",
        "relation-to-another-project",
        "reruns-the-previous-attempt",
        "a-copy-of-the-same-attempt",
        "reruns-a-later-attempt",
        "reruns-another-lineage",
        "reruns-a-run-nobody-vouches-for",
        "skips-attempts",
        "a-copy-of-a-first-rerun",
        "its-own-relation",
    ],
)
def test_a_relation_vouches_for_lineage_labels_only_when_it_names_the_previous_run(
    claim, relation, parent, vouched
) -> None:
    ref = _r("r")
    assert vouches(ref, claim, relation, parent) is vouched


@pytest.mark.parametrize(
    ("labels", "claim"),
    [
        ({}, None),
        ({"rerund-root": "x", "rerund-attempt": "2"}, ("x", 2)),
        ({"rerund-root": "x"}, None),
        ({"rerund-root": "x", "rerund-attempt": "0"}, None),
        ({"rerund-root": "x", "rerund-attempt": "99999"}, None),
        ({"rerund-root": "x", "rerund-attempt": "1", "rerund-repro": "c"}, None),
    ],
    ids=["original", "rerun", "no-attempt", "attempt-0", "beyond-max", "reproduction"],
)
def test_the_claim_of_lineage_labels(labels, claim) -> None:
    assert claimed_lineage(labels) == claim


def test_unvouched_facts_lose_the_lineage_labels_and_keep_the_others() -> None:
    forged = facts({"rerund-root": "x", "rerund-attempt": "2", "rerund-policy": "p", "team": "ml"})

    plain = unvouched(forged)

    assert dict(plain.labels) == {"team": "ml"}
    assert failure_from(plain).root == "abc123" and failure_from(plain).attempt == 0
