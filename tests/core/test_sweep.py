"""The pure plan of a sweep: the window, backoff lifted, max_attempts/budgets/names kept, one
rerun per (scope, root, attempt), skipped-and-why, and the invariants as properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rerund.core.decide import decide
from rerund.core.model import Failure
from rerund.core.sweep import Window, error_key, parse_time, parse_window, plan_sweep

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
WINDOW = Window(since=NOW - timedelta(hours=2), until=NOW)

OUTAGE = """
defaults:
  max_attempts: 2
  backoff: {initial: 1h, factor: 2, max: 2h, jitter: 0}
policies:
  - name: typo
    match: {error: {codes: [ImagePullBackOff], patterns: ['manifest unknown']}}
    retry: false
  - name: registry-outage
    match: {error: {codes: [ImagePullBackOff]}}
    retry: {scope: run, labels: {recovered-by: sweep}, env: {PULL: again}}
"""


def pull(
    run: str, minutes_ago: float = 30, message: str = "503 Service Unavailable", **kw: object
) -> Failure:
    data: dict[str, object] = {
        "run": run,
        "project": "ml",
        "domain": "production",
        "task": "train.fit",
        "error": {"kind": "SYSTEM", "code": "ImagePullBackOff", "message": message},
        "failed_at": NOW - timedelta(minutes=minutes_ago),
    }
    data.update(kw)
    return Failure.model_validate(data)


# --- the window ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "until", "start", "end"),
    [
        ("2h", None, NOW - timedelta(hours=2), NOW),
        ("1h30m", "30m", NOW - timedelta(minutes=90), NOW - timedelta(minutes=30)),
        ("3h", "2026-11-30T14:00:00Z", NOW - timedelta(hours=3), datetime(2026, 11, 30, 14, tzinfo=UTC)),
        ("3h", "2026-11-30T14:00:00", NOW - timedelta(hours=3), datetime(2026, 11, 30, 14, tzinfo=UTC)),
        ("3h", "2026-11-30T15:00:00+01:00", NOW - timedelta(hours=3), datetime(2026, 11, 30, 14, tzinfo=UTC)),
        ("1h", "2026-12-01T00:00:00Z", NOW - timedelta(hours=1), NOW),  # the future is cut to now
    ],
    ids=["since-only", "until-duration", "until-utc", "until-naive-is-utc", "until-offset", "until-future"],
)
def test_the_window_is_since_ago_to_until(
    since: str, until: str | None, start: datetime, end: datetime
) -> None:
    w = parse_window(since, until, NOW)
    assert (w.since, w.until) == (start, end)


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        (
            "2h",
            "3h",
            r"the sweep window ends before it starts: --until '3h' is 2026-11-30T12:00:00Z, before "
            r"the start 2026-11-30T13:00:00Z \(--since 2h\); give a later --until or a longer --since",
        ),
        ("1h", "2026-11-30T10:00:00Z", r"ends before it starts: --until '2026-11-30T10:00:00Z'"),
        ("2", None, r"--since: invalid duration '2': use a number with a unit ms, s, m, h or d"),
        ("0s", None, r"--since '0s' makes an empty window: give how far back to sweep, e.g. 2h"),
        ("2h", "yesterday", r"--until 'yesterday' is neither a time nor a duration: write an ISO-8601 time"),
    ],
    ids=["until-before-since", "until-time-before-since", "bare-number", "empty", "bad-until"],
)
def test_a_bad_window_says_what_to_write(since: str, until: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_window(since, until, NOW)


def test_a_naive_until_is_read_as_utc() -> None:
    assert parse_time("2026-11-30T09:30:00", NOW) == datetime(2026, 11, 30, 9, 30, tzinfo=UTC)


def test_the_window_reads_in_whole_seconds() -> None:
    w = Window(NOW - timedelta(hours=2, microseconds=5), NOW)
    assert w.describe() == "2026-11-30T12:59:59Z .. 2026-11-30T15:00:00Z (2h1s)"


# --- the plan --------------------------------------------------------------------------------


def test_backoff_does_not_apply_the_rerun_is_due_now(policies) -> None:
    ps = policies(OUTAGE)
    f = pull("r1", minutes_ago=1)
    daemon = decide(f, ps, NOW)
    assert daemon.not_before is not None and daemon.not_before > NOW  # the daemon would wait an hour

    plan = plan_sweep([f], ps, window=WINDOW, now=NOW)

    [item] = plan.reruns
    assert item.decision.not_before == NOW
    assert item.name == daemon.name == "r1-retry-1"
    assert item.decision.reason == (
        "sweep: policy 'registry-outage' reruns run 'r1' as 'r1-retry-1': attempt 1 of max_attempts=2, "
        "scope run, now (backoff does not apply after an outage)"
    )
    assert item.changes() == ["env PULL: set (value not shown)", "labels recovered-by: set to 'sweep'"]
    assert item.to_json()["decision"]["env"] == {"PULL": "***"}  # never the value
    assert item.decision.labels["rerund-root"] == "r1" and item.decision.labels["rerund-attempt"] == "1"


def test_the_preview_shows_no_env_value_no_secret_input_and_no_url_secret(policies) -> None:
    """Issue 22.3: ``sweep --format json`` shows a decision as every public output does."""
    ps = policies(OUTAGE.replace("env: {PULL: again}", "env: {PULL: again}, inputs: {token: s3cr3t, n: 2}"))
    f = pull("r1", message="pull from https://u:pw@registry.example/v2 failed")

    [item] = plan_sweep([f], ps, window=WINDOW, now=NOW).reruns
    shown = item.to_json()

    assert shown["decision"]["inputs"] == {"token": "***", "n": 2}
    assert shown["error"]["message"] == "pull from https://registry.example/... failed"
    assert "inputs token: set (value not shown)" in shown["changes"]
    for secret in ("s3cr3t", "again", "u:pw"):
        assert secret not in str(shown)


def test_failures_outside_the_window_are_left_out(policies) -> None:
    window = Window(NOW - timedelta(hours=1), NOW - timedelta(minutes=10))
    inside, early, late = pull("in", 30), pull("early", 61), pull("late", 5)

    plan = plan_sweep([late, inside, early], policies(OUTAGE), window=window, now=NOW)

    assert [r.failure.run for r in plan.reruns] == ["in"]
    assert plan.failures == 1


def test_what_is_skipped_says_why(policies) -> None:
    failures = [
        pull("typo", message="manifest unknown: train:v9"),
        pull("valueerror", error={"kind": "USER", "code": "ValueError", "message": "bad"}),
        pull("tired", root="orig", attempt=2, labels={"rerund-root": "orig", "rerund-attempt": "2"}),
        pull("check", labels={"rerund-repro": "nightly"}),
        pull("ok"),
    ]

    plan = plan_sweep(failures, policies(OUTAGE), window=WINDOW, now=NOW)

    kinds = {s.failure.run: s.kind for s in plan.skipped}
    assert kinds == {
        "typo": "not_retried",
        "valueerror": "no_match",
        "tired": "max_attempts",
        "check": "reproduction",
    }
    # a skip gives the core's own reason: the same sentence as `rerund explain` and the daemon
    ps = policies(OUTAGE)
    assert {s.failure.run: s.reason for s in plan.skipped} == {
        f.run: decide(f, ps, NOW).reason for f in failures if f.run != "ok"
    }
    assert {s.failure.run: s.decision.decision for s in plan.skipped} == {
        "typo": "ignore",
        "valueerror": "ignore",
        "tired": "give_up",
        "check": "ignore",
    }
    assert plan.skipped_counts() == {"max_attempts": 1, "not_retried": 1, "no_match": 1, "reproduction": 1}
    assert [r.failure.run for r in plan.reruns] == ["ok"]


def test_an_attempt_that_exists_is_already_issued_whatever_its_name(policies) -> None:
    existing = {("ml/production", "r1", 1): "r1-by-hand"}

    plan = plan_sweep([pull("r1"), pull("r2")], policies(OUTAGE), window=WINDOW, now=NOW, existing=existing)

    assert [r.failure.run for r in plan.reruns] == ["r2"]
    [skip] = plan.skipped
    assert skip.kind == "already_issued" and skip.existing == "r1-by-hand"
    assert skip.reason == (
        "run 'r1': attempt 1 of lineage 'r1' was already issued as 'r1-by-hand'; "
        "the sweep does not issue it again"
    )


def test_an_existing_attempt_in_another_scope_does_not_count(policies) -> None:
    existing = {("ml/staging", "r1", 1): "r1-retry-1"}
    plan = plan_sweep([pull("r1")], policies(OUTAGE), window=WINDOW, now=NOW, existing=existing)
    assert [r.name for r in plan.reruns] == ["r1-retry-1"]


def test_two_failures_of_one_lineage_at_one_attempt_get_one_rerun(policies) -> None:
    lineage = {"root": "orig", "attempt": 1, "labels": {"rerund-root": "orig", "rerund-attempt": "1"}}
    first, second = pull("orig-retry-1", 40, **lineage), pull("copy-of-retry-1", 20, **lineage)

    plan = plan_sweep([second, first], policies(OUTAGE), window=WINDOW, now=NOW)

    assert [(r.failure.run, r.name) for r in plan.reruns] == [("orig-retry-1", "orig-retry-2")]
    assert [f.run for f, _d in plan.decisions()] == ["orig-retry-1"]  # the duplicate is not recorded
    [dup] = plan.skipped
    assert dup.kind == "duplicate" and dup.existing == "orig-retry-2"
    assert "attempt 2 of lineage 'orig' is rerun once, as 'orig-retry-2'" in dup.reason


def test_a_budget_caps_the_sweep_counting_its_own_reruns(policies) -> None:
    ps = policies(OUTAGE + "budgets:\n  global: {max_reruns: 5, per: 1h}\n")
    failures = [pull(f"r{i}", minutes_ago=60 - i) for i in range(6)]

    plan = plan_sweep(
        failures,
        ps,
        window=WINDOW,
        now=NOW,
        budget_used={"global": 2},
        budget_oldest={"global": NOW - timedelta(minutes=50)},
    )

    assert [r.failure.run for r in plan.reruns] == ["r0", "r1", "r2"]  # the earliest failures first
    assert [s.kind for s in plan.skipped] == ["budget"] * 3
    first = plan.skipped[0]
    assert first.decision.decision == "defer" and first.decision.not_before == NOW + timedelta(minutes=10)
    assert first.reason == f"{first.decision.reason}; this sweep leaves it, a later sweep can rerun it"
    assert "2026-11-30T15:10:00Z" in first.reason  # when the oldest counted rerun leaves the window


def test_counts_are_grouped_by_policy_and_error(policies) -> None:
    ps = policies(
        OUTAGE
        + """
  - name: node-lost
    match: {error: {codes: [NodeLost]}}
    retry: {scope: recover}
"""
    )
    lost = {"error": {"kind": "SYSTEM", "code": "NodeLost", "message": "node gone"}}
    failures = [pull("a"), pull("b"), pull("c", **lost), pull("d", error={"kind": "SYSTEM", "message": ""})]

    plan = plan_sweep(failures, ps, window=WINDOW, now=NOW)

    assert [(g.policy, g.error, g.count) for g in plan.groups()] == [
        ("registry-outage", "SYSTEM ImagePullBackOff", 2),
        ("node-lost", "SYSTEM NodeLost", 1),
    ]
    assert error_key(failures[3]) == "SYSTEM no error message"


def test_the_json_plan_names_every_rerun_and_every_skip(policies) -> None:
    plan = plan_sweep(
        [pull("r1"), pull("typo", message="manifest unknown")], policies(OUTAGE), window=WINDOW, now=NOW
    )

    body = plan.to_json()

    assert body["window"] == {"since": "2026-11-30T13:00:00Z", "until": "2026-11-30T15:00:00Z"}
    assert [r["decision"]["name"] for r in body["reruns"]] == ["r1-retry-1"]
    assert body["reruns"][0]["decision"]["not_before"] == "2026-11-30T15:00:00Z"
    assert body["groups"] == [{"policy": "registry-outage", "error": "SYSTEM ImagePullBackOff", "count": 1}]
    assert body["skipped_counts"] == {"not_retried": 1}
    assert body["skipped"][0]["run"] == "typo"
    assert [d.decision for _f, d in plan.decisions()] == ["rerun", "ignore"]


# --- invariants --------------------------------------------------------------------------------

_runs = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),  # lineage root
        st.integers(min_value=0, max_value=3),  # attempt of the failed run
        st.integers(min_value=-30, max_value=200),  # minutes ago
        st.sampled_from(["ImagePullBackOff", "ValueError"]),
    ),
    max_size=25,
)


@given(runs=_runs, existing=st.sets(st.tuples(st.sampled_from(["a", "b"]), st.integers(1, 3)), max_size=4))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_failure_in_the_window_appears_once_and_no_attempt_twice(policies_ps, runs, existing) -> None:
    failures = [
        pull(
            f"{root}-x{i}",
            minutes_ago=ago,
            root=root,
            attempt=attempt,
            labels={"rerund-root": root, "rerund-attempt": str(attempt)} if attempt else {},
            error={"kind": "SYSTEM", "code": code, "message": "m"},
        )
        for i, (root, attempt, ago, code) in enumerate(runs)
    ]
    table = {("ml/production", root, attempt): f"{root}-old-{attempt}" for root, attempt in existing}

    plan = plan_sweep(failures, policies_ps, window=WINDOW, now=NOW, existing=table)

    inside = sorted(f.run for f in failures if WINDOW.contains(f.failed_at))
    assert sorted([r.failure.run for r in plan.reruns] + [s.failure.run for s in plan.skipped]) == inside
    keys = [(r.scope_key, r.failure.root, r.attempt) for r in plan.reruns]
    assert len(keys) == len(set(keys))
    assert not set(keys) & set(table)
    assert all(r.attempt <= 2 and r.decision.not_before == NOW for r in plan.reruns)
    assert plan == plan_sweep(list(reversed(failures)), policies_ps, window=WINDOW, now=NOW, existing=table)


@pytest.fixture(scope="module")
def policies_ps(tmp_path_factory):
    from rerund.policy import load_policies

    path = tmp_path_factory.mktemp("sweep") / "outage.yaml"
    path.write_text("apiVersion: rerund/v1\n" + OUTAGE)
    return load_policies([path])


@pytest.mark.parametrize(
    ("finished", "phase"),
    [(None, "ABORTED"), ("FAILED", "FAILED"), ("TIMED_OUT", "TIMED_OUT"), ("SUCCEEDED", None)],
    ids=["a-real-abort", "aborted-after-failing", "aborted-after-timing-out", "aborted-after-succeeding"],
)
def test_a_run_aborted_after_it_finished_is_decided_as_what_it_was(finished, phase) -> None:
    from rerund.core.lineage import decided_as
    from rerund.core.model import ErrorInfo
    from rerund.core.runs import FailureFacts, RunRef, RunSummary

    facts = FailureFacts(
        summary=RunSummary(RunRef("ml", "production", "r1"), "ABORTED"),
        labels={},
        action="a0",
        action_task="t",
        error=ErrorInfo(),
        failed_at=NOW,
        finished_phase=finished,
    )

    decided = decided_as(facts)

    assert (decided.summary.phase if decided is not None else None) == phase


def test_a_failure_waiting_for_a_fix_is_skipped_and_relaunched_once_the_fix_is_deployed(policies) -> None:
    ps = policies(
        """
policies:
  - name: wait-for-fix
    match: {labels: {wait-for-fix: "true"}, error: {kinds: [USER]}}
    retry: {scope: relaunch, task_version: newer, max_wait: 1d, max_attempts: 1}
"""
    )
    bug = {"kind": "USER", "code": "KeyError", "message": "KeyError: 'revenue'"}
    waiting = pull(
        "report1", labels={"wait-for-fix": "true"}, error=bug, task_version="v7", latest_version="v7"
    )
    fixed = waiting.model_copy(update={"run": "report2", "root": "report2", "latest_version": "v8"})

    plan = plan_sweep([waiting, fixed], ps, window=WINDOW, now=NOW)

    [skip] = plan.skipped
    assert (skip.failure.run, skip.kind) == ("report1", "waiting_for_fix")
    assert skip.reason == decide(waiting, ps, NOW).reason
    [relaunch] = plan.reruns
    assert relaunch.failure.run == "report2" and relaunch.decision.scope.value == "relaunch"
    assert relaunch.decision.not_before == NOW
