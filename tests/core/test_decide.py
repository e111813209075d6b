"""The pure decision core: every rule of the semantics, table-driven, plus invariants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rerund.core.decide import decide, explain
from rerund.core.fingerprints import failure_fingerprint
from rerund.core.names import is_valid_name
from rerund.core.rules import NeverRetry

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)

CATCH_ALL = """
policies:
  - name: any
    retry: {backoff: {initial: 10s, factor: 2, max: 1m, jitter: 0}}
"""


# --- selectors: each one holds or fails on its own -------------------------------------------

SELECTOR_CASES = [
    ("projects: [ml, etl]", {}, True),
    ("projects: [etl]", {}, False),
    ("domains: [production]", {}, True),
    ("domains: [staging]", {}, False),
    ("tasks: ['train.*']", {}, True),
    ("tasks: ['etl.*', 'train.f?t']", {}, True),
    ("tasks: ['train']", {}, False),
    ("action_tasks: ['*.load']", {"action": "a3", "action_task": "etl.load"}, True),
    ("action_tasks: ['*.load']", {}, False),  # action_task defaults to the run's task
    ("labels: {team: ml}", {}, True),
    ("labels: {team: ml, tier: gold}", {}, False),
    ("labels: {team: etl}", {}, False),
    ("phases: [TIMED_OUT]", {"phase": "TIMED_OUT"}, True),
    ("phases: [TIMED_OUT]", {}, False),
    ("error: {kinds: [SYSTEM]}", {}, True),
    ("error: {kinds: [USER, UNSPECIFIED]}", {}, False),
    ("error: {codes: [ConnectionResetError]}", {}, True),
    ("error: {codes: [connectionreseterror]}", {}, False),  # codes compare exactly
    ("error: {patterns: ['(?i)CONNECTION reset']}", {}, True),
    ("error: {patterns: ['reset by']}", {}, True),  # searched anywhere
    ("error: {patterns: ['^reset']}", {}, False),
    ("error: {patterns: ['nope', 'peer$']}", {}, True),  # any pattern may match
    ("error: {patterns: ['reset'], exclude: ['peer']}", {}, False),  # exclude vetoes
    ("error: {patterns: ['reset'], exclude: ['permission denied']}", {}, True),
    ("error: {exclude: ['peer']}", {}, False),
    ("", {"phase": "ABORTED"}, False),  # ABORTED only when listed
    ("phases: [ABORTED]", {"phase": "ABORTED"}, True),
    ("projects: [ml], error: {kinds: [USER]}", {}, False),  # every selector must hold
]


@pytest.mark.parametrize(
    ("selector", "overrides", "matches"),
    SELECTOR_CASES,
    ids=[
        f"{i}-{s[:40] or 'catch-all'}-{'hit' if m else 'miss'}" for i, (s, _, m) in enumerate(SELECTOR_CASES)
    ],
)
def test_each_selector_holds_or_fails_as_documented(policies, make_failure, selector, overrides, matches):
    ps = policies(f"policies: [{{name: p, match: {{{selector}}}}}]\n")
    d = decide(make_failure(**overrides), ps, T0)
    assert (d.policy == "p") is matches
    assert d.decision == ("rerun" if matches else "ignore")


def test_the_first_matching_policy_decides(policies, make_failure):
    ps = policies("""
        policies:
          - name: etl-only
            match: {projects: [etl]}
          - name: ml-first
            match: {projects: [ml], domains: [production]}
          - name: ml-second
            match: {projects: [ml]}
        """)
    assert decide(make_failure(), ps, T0).policy == "ml-first"


# --- the decision kinds and their reasons ---------------------------------------------------


def test_no_match_is_ignored_with_a_reason(policies, make_failure):
    ps = policies("policies: [{name: p, match: {projects: [etl]}}]\n")
    failure = make_failure()
    d = decide(failure, ps, T0)
    assert d.to_json() == {
        "decision": "ignore",
        "policy": None,
        "reason": "no policy matches run 'abc123' (1 tried): it is not rerun",
        "attempt": None,
        "scope": None,
        "source_run": "abc123",
        "action": None,
        "name": None,
        "env": {},
        "labels": {},
        "inputs": {},
        "overrides": {},
        "not_before": None,
        "fingerprint": failure_fingerprint(failure),
    }


def test_retry_false_is_ignored_naming_the_policy(policies, make_failure):
    ps = policies("policies: [{name: never, retry: false}]\n")
    d = decide(make_failure(), ps, T0)
    assert (d.decision, d.policy) == ("ignore", "never")
    assert d.reason == "policy 'never' never reruns run 'abc123' (retry: false)"
    [rule] = ps.rules
    assert rule.retry == NeverRetry()  # a closed value, not None


@pytest.mark.parametrize(
    ("attempt", "max_attempts", "decision"),
    [(0, 3, "rerun"), (2, 3, "rerun"), (3, 3, "give_up"), (7, 3, "give_up"), (0, 0, "give_up")],
    ids=["original", "last-allowed", "at-max", "beyond-max", "max-zero"],
)
def test_gives_up_once_attempts_reach_max_attempts(policies, make_failure, attempt, max_attempts, decision):
    ps = policies(f"policies: [{{name: oom, retry: {{max_attempts: {max_attempts}}}}}]\n")
    d = decide(make_failure(attempt=attempt, root="abc123"), ps, T0)
    assert d.decision == decision
    if decision == "give_up":
        assert d.reason == (
            f"policy 'oom' gives up on run 'abc123': attempt {attempt + 1} "
            f"would exceed max_attempts={max_attempts}"
        )
    else:
        assert d.attempt == attempt + 1


def test_a_rerun_is_due_after_the_backoff_delay(policies, make_failure):
    ps = policies(CATCH_ALL)
    d = decide(make_failure(root="root1", run="root1-retry-2", attempt=2), ps, T0)
    assert d.decision == "rerun"
    assert d.attempt == 3
    assert d.not_before == T0 + timedelta(seconds=40)  # min(10s * 2**2, 1m), no jitter
    assert d.name == "root1-retry-3"
    assert d.source_run == "root1-retry-2"
    assert d.reason == (
        "policy 'any' reruns run 'root1-retry-2' as 'root1-retry-3': attempt 3 of max_attempts=3, "
        "scope run, due at 2026-11-24T10:00:40Z after a 40s backoff; "
        "changes: none besides the lineage labels"
    )


def test_jitter_moves_the_due_time_within_the_band(policies, make_failure):
    ps = policies(
        "policies: [{name: p, retry: {backoff: {initial: 100s, factor: 1, max: 100s, jitter: 0.5}}}]\n"
    )
    due = {decide(make_failure(run=f"r{i}"), ps, T0).not_before for i in range(30)}
    assert all(T0 + timedelta(seconds=50) <= t <= T0 + timedelta(seconds=150) for t in due if t)
    assert len(due) > 1


@pytest.mark.parametrize(
    ("scope", "action", "want_scope", "want_action", "reason_part"),
    [
        ("failed_action", "a3", "failed_action", "a3", "scope failed_action (action 'a3')"),
        (
            "failed_action",
            "a0",
            "run",
            None,
            "scope run (the root action a0 failed), due at",
        ),
        ("run", "a3", "run", None, "scope run,"),
        ("recover", "a3", "recover", None, "scope recover,"),
    ],
    ids=["child-action", "root-falls-back", "run", "recover"],
)
def test_the_scope_decides_what_is_rerun(
    policies, make_failure, scope, action, want_scope, want_action, reason_part
):
    ps = policies(f"policies: [{{name: p, retry: {{scope: {scope}}}}}]\n")
    d = decide(make_failure(action=action), ps, T0)
    assert (d.scope.value if d.scope else None, d.action) == (want_scope, want_action)
    assert reason_part in d.reason


def test_env_labels_and_inputs_merge_defaults_policy_then_escalations(policies, make_failure):
    ps = policies("""
        defaults:
          env: {A: d, B: d}
          labels: {owner: platform}
          inputs: {batch_size: 64, lr: 0.1}
        policies:
          - name: oom
            retry:
              max_attempts: 5
              env: {B: p, C: p}
              inputs: {batch_size: 32}
              escalate:
                3: {inputs: {batch_size: 8}, env: {C: e3}}
                2: {inputs: {batch_size: 16}, labels: {size: big}}
        """)
    got = {}
    for attempt in range(4):
        d = decide(make_failure(root="abc123", attempt=attempt), ps, T0)
        got[attempt + 1] = (d.env, d.labels, d.inputs)
    assert got[1] == (
        {"A": "d", "B": "p", "C": "p"},
        {"owner": "platform", "rerund-root": "abc123", "rerund-attempt": "1", "rerund-policy": "oom"},
        {"batch_size": 32, "lr": 0.1},
    )
    assert got[2][2] == {"batch_size": 16, "lr": 0.1}
    assert got[2][1]["size"] == "big"
    assert got[3][0] == {"A": "d", "B": "p", "C": "e3"}
    assert got[3][2] == {"batch_size": 8, "lr": 0.1}
    assert got[4][2] == {"batch_size": 8, "lr": 0.1}  # escalations stay for later attempts


def test_a_failure_without_root_starts_its_own_lineage(policies, make_failure):
    d = decide(make_failure(run="first"), policies(CATCH_ALL), T0)
    assert d.labels["rerund-root"] == "first"
    assert d.name == "first-retry-1"


# --- budgets -------------------------------------------------------------------------------

BUDGETED = """
budgets:
  global: {max_reruns: 10, per: 1h}
policies:
  - name: net
    retry: {budget: {max_reruns: 2, per: 10m}}
"""


@pytest.mark.parametrize(
    ("used", "oldest", "decision", "not_before", "budget"),
    [
        ({}, {}, "rerun", None, None),
        ({"net": 1, "global": 9}, {}, "rerun", None, None),
        ({"net": 2}, {"net": T0 - timedelta(minutes=4)}, "defer", T0 + timedelta(minutes=6), "net"),
        ({"net": 2}, {}, "defer", T0 + timedelta(minutes=10), "net"),
        (
            {"global": 10},
            {"global": T0 - timedelta(minutes=45)},
            "defer",
            T0 + timedelta(minutes=15),
            "global",
        ),
        (
            {"global": 10, "net": 2},
            {"global": T0 - timedelta(minutes=45), "net": T0 - timedelta(minutes=1)},
            "defer",
            T0 + timedelta(minutes=15),
            "global",
        ),
        ({"net": 2}, {"net": T0 - timedelta(hours=2)}, "defer", T0, "net"),  # stale count: frees now
    ],
    ids=[
        "empty",
        "one-left",
        "policy-full",
        "policy-full-no-oldest",
        "global-full",
        "both-full-latest",
        "stale",
    ],
)
def test_an_exhausted_budget_defers_until_the_window_frees_a_slot(
    policies, make_failure, used, oldest, decision, not_before, budget
):
    d = decide(make_failure(budget_used=used, budget_oldest=oldest), policies(BUDGETED), T0)
    assert d.decision == decision
    if decision == "defer":
        assert d.not_before == not_before
        assert d.budget == budget
        assert d.attempt == 1
        assert f"budget {budget!r} has used {used[budget]} of" in d.reason
        assert d.reason.endswith(f"a slot frees at {not_before.isoformat().replace('+00:00', 'Z')}")


def test_policy_set_reports_the_budget_windows_to_count(policies):
    assert policies(BUDGETED).budgets() == {"global": timedelta(hours=1), "net": timedelta(minutes=10)}


# --- explain ----------------------------------------------------------------------------------


def test_explain_says_why_each_policy_did_or_did_not_match(policies, make_failure):
    ps = policies("""
        policies:
          - name: bad-input
            match: {error: {kinds: [USER], patterns: ['ValueError']}}
            retry: false
          - name: net
            match: {projects: [ml], error: {patterns: ['(?i)connection reset']}}
        """)
    result = explain(make_failure(), ps, T0)
    assert result.decision == decide(make_failure(), ps, T0)
    first, second = result.trace[0], result.trace[1]
    assert first.startswith("policy 'bad-input' (")
    assert (
        "does not match: phases: FAILED is in [FAILED, TIMED_OUT]; error.kinds: SYSTEM is not in [USER]"
        in first
    )
    assert "error.patterns: none of ['ValueError'] found in the message" in first
    assert "matches: projects: 'ml' is listed" in second
    assert "error.patterns: '(?i)connection reset' found in the message" in second
    assert any(line.startswith("backoff: base = min(30s * 2^0, 10m) = 30s") for line in result.trace)
    assert result.trace[-1].startswith("rerun as 'abc123-retry-1' at ")


# --- bad input never breaks the core ------------------------------------------------------


def test_a_ten_megabyte_message_is_decided(policies, make_failure):
    ps = policies("policies: [{name: p, match: {error: {patterns: ['needle at the end$']}}}]\n")
    message = "x" * (10 << 20) + " needle at the end"
    d = decide(make_failure(error={"kind": "SYSTEM", "message": message}), ps, T0)
    assert d.policy == "p"


def test_a_catastrophic_backtracking_pattern_runs_linearly(policies, make_failure):
    ps = policies("policies: [{name: p, match: {error: {patterns: ['^(a+)+$', '(x+x+)+y']}}}]\n")
    message = "a" * 100_000 + "!" + "x" * 100_000
    d = decide(make_failure(error={"kind": "SYSTEM", "message": message}), ps, T0)
    assert d.decision == "ignore"


def test_a_message_with_invalid_unicode_is_decided(policies, make_failure):
    ps = policies("policies: [{name: p, match: {error: {patterns: ['reset']}}}]\n")
    d = decide(make_failure(error={"kind": "SYSTEM", "message": "bad \udcff surrogate, reset"}), ps, T0)
    assert d.policy == "p"


# --- invariants ----------------------------------------------------------------------------

MIXED = """
defaults: {max_attempts: 3, backoff: {initial: 5s, factor: 3, max: 5m, jitter: 0.2}}
budgets: {global: {max_reruns: 5, per: 1h}}
policies:
  - name: bad-input
    match: {error: {kinds: [USER], patterns: ['ValueError|TypeError']}}
    retry: false
  - name: net
    match: {error: {kinds: [SYSTEM], patterns: ['(?i)reset', '50[0-4]'], exclude: ['denied']}}
    retry: {scope: failed_action, max_attempts: 4, budget: {max_reruns: 3, per: 10m}}
  - name: timeouts
    match: {phases: [TIMED_OUT]}
    retry: {scope: recover, max_attempts: 2}
  - name: etl
    match: {projects: [etl], tasks: ['etl.*']}
"""

failures = st.fixed_dictionaries(
    {
        "run": st.from_regex(r"\A[a-z][a-z0-9-]{0,40}[a-z0-9]\Z"),
        "attempt": st.integers(min_value=0, max_value=10),
        "project": st.sampled_from(["ml", "etl", ""]),
        "task": st.sampled_from(["etl.load", "train.fit", ""]),
        "phase": st.sampled_from(["FAILED", "TIMED_OUT", "ABORTED"]),
        "action": st.sampled_from(["a0", "a1", "a7"]),
        "error": st.fixed_dictionaries(
            {
                "kind": st.sampled_from(["USER", "SYSTEM", "UNSPECIFIED"]),
                "message": st.sampled_from(
                    ["ValueError: x", "Connection reset", "HTTP 503", "access denied 503", "", "boom"]
                ),
            }
        ),
        "failed_at": st.datetimes(
            min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
        ),
        "budget_used": st.dictionaries(st.sampled_from(["global", "net"]), st.integers(0, 6)),
    }
)


def _loaded(tmp_path_factory, name: str, text: str):
    """A ``PolicySet`` loaded from ``text`` (a policy file without its apiVersion line)."""
    from rerund.policy import load_policies

    path = tmp_path_factory.mktemp(name) / "p.yaml"
    path.write_text("apiVersion: rerund/v1\n" + text)
    return load_policies([path])


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    return _loaded(tmp_path_factory, "mixed", MIXED)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(data=failures)
def test_decide_and_explain_always_agree_and_are_deterministic(mixed, data):
    from rerund.core.model import Failure

    f = Failure.model_validate(data)
    now = f.failed_at + timedelta(seconds=1)
    d = decide(f, mixed, now)
    assert d == decide(Failure.model_validate(data), mixed, now)
    assert explain(f, mixed, now).decision == d


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(data=failures)
def test_reruns_never_exceed_max_attempts_and_carry_valid_names(mixed, data):
    from rerund.core.model import Failure

    f = Failure.model_validate(data)
    d = decide(f, mixed, f.failed_at)
    if d.decision in ("rerun", "defer"):
        rule = next(r for r in mixed.rules if r.name == d.policy)
        assert rule.retry is not None
        assert d.attempt is not None
        assert 1 <= d.attempt <= rule.retry.max_attempts
        assert d.name is not None and is_valid_name(d.name)
        assert d.labels["rerund-attempt"] == str(d.attempt)
    if d.decision == "rerun":
        assert d.not_before is not None and d.not_before >= f.failed_at


# --- forged lineage labels (issue 11.7) ------------------------------------------------------

FORGED_ATTEMPTS = {
    "2^63": "9223372036854775808",
    "10,000 digits": "9" * 10_000,
    "above the largest max_attempts": "1001",
    "negative": "-1",
    "not a number": "three",
    "unicode digits": "٣",
    "empty": "",
}


@pytest.mark.parametrize("label", FORGED_ATTEMPTS.values(), ids=list(FORGED_ATTEMPTS))
def test_a_forged_attempt_label_is_ignored_with_the_label_in_the_reason(policies, make_failure, label):
    ps = policies(CATCH_ALL)
    failure = make_failure(labels={"rerund-root": "abc", "rerund-attempt": label})

    d = decide(failure, ps, T0)

    assert d.decision == "ignore"
    assert d.reason.startswith("run 'abc123' has label rerund-attempt=")
    assert d.reason.endswith(
        "which rerund never writes (a whole number 0..1000): a forged or damaged lineage is not rerun"
    )
    assert len(d.reason) < 200
    assert explain(failure, ps, T0).decision == d


@pytest.mark.parametrize(("label", "attempt"), [("0", 0), ("3", 3), ("1000", 1000)])
def test_the_attempt_labels_rerund_writes_are_read(label, attempt):
    from rerund.core.lineage import parse_attempt

    assert parse_attempt({"rerund-attempt": label}) == attempt
    assert parse_attempt({}) == 0


EVERY_SELECTOR = """
policies:
  - name: labelled
    match: {labels: {team: ml}, projects: [ml], domains: [production, staging]}
    retry: false
  - name: tasks
    match: {tasks: ['etl.*'], action_tasks: ['etl.*'], phases: [FAILED, ABORTED]}
    retry: false
  - name: errors
    match: {error: {kinds: [SYSTEM], codes: [X], classes: [oom, system], gpu_fault: {codes: [79]}}}
    retry: false
  - name: messages
    match: {error: {patterns: ['reset'], exclude: ['denied']}}
    retry: false
  - name: anything
    match: {}
    retry: false
"""


@pytest.fixture(scope="module")
def every_selector(tmp_path_factory):
    return _loaded(tmp_path_factory, "every", EVERY_SELECTOR)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=300)
@given(data=failures, labels=st.dictionaries(st.sampled_from(["team", "tier"]), st.sampled_from(["ml", "x"])))
def test_a_selector_a_policy_does_not_give_holds_for_every_failure_so_the_fast_path_skips_it(
    mixed, every_selector, data, labels
):
    # ``decide`` checks only the selectors a rule gives (``Selector.given``); ``explain`` checks
    # every one. Skipping is sound only if a selector not given never says no: checked here for
    # every rule and selector of two policy sets, and the first match agrees with the trace's.
    from rerund.core.model import Failure
    from rerund.core.rules import SELECTORS

    f = Failure.model_validate({**data, "labels": labels})
    for policy_set in (mixed, every_selector):
        matched = policy_set.pattern_set.scan(f.error.message)
        for compiled in policy_set._compiled:
            for selector in SELECTORS:
                assert selector.given(compiled) or selector.holds(compiled, f, matched) is None
        assert policy_set.first_match(f) == policy_set.first_match(f, [])
