# ruff: noqa: E501  (exact user-visible messages are kept on one line to be greppable)
"""Loading policy files: every problem located as file:line:col: yaml.path: message."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from rerund.core.model import Scope
from rerund.errors import PolicyError
from rerund.policy import load_policies

HEADER = b"apiVersion: rerund/v1\n"

BAD_FILES = [
    (
        "unknown-key",
        HEADER + b"policies:\n  - name: a\n    matchh: {}\n",
        [
            "4:5: policies[0].matchh: unknown key 'matchh'; did you mean 'match'? "
            "allowed keys: name, match, retry, description"
        ],
    ),
    (
        # issue 28.8: `name` (removed from retry) was listed as allowed there, then refused
        "unknown-retry-key-lists-only-the-keys-that-are-allowed",
        HEADER + b"policies:\n  - name: a\n    retry: {max_attemps: 2}\n",
        [
            "4:13: policies[0].retry.max_attemps: unknown key 'max_attemps'; did you mean 'max_attempts'? "
            "allowed keys: resources, task_version, queue, interruptible, service_account, overwrite_cache, "
            "annotations, max_action_concurrency, force_rerun_actions, scope, max_attempts, backoff, env, labels, "
            "inputs, escalate, budget, give_up_below, max_wait"
        ],
    ),
    (
        "unknown-top-level-key",
        HEADER + b"polices: []\n",
        [
            "2:1: polices: unknown key 'polices'; did you mean 'policies'? allowed keys: apiVersion, defaults, budgets, incidents, policies, reproductions"
        ],
    ),
    (
        "wrong-types",
        HEADER + b"policies:\n  - name: a\n    retry: {max_attempts: three, backoff: {initial: 30}}\n",
        [
            "4:27: policies[0].retry.max_attempts: expected a whole number, got 'three'",
            "4:53: policies[0].retry.backoff.initial: invalid duration 30: use a number with a unit ms, s, m, h "
            "or d, e.g. 30s, 10m, 1h, 1d or 1h30m",
        ],
    ),
    (
        "bad-duration",
        HEADER + b"budgets: {global: {max_reruns: 5, per: 1 hour}}\n",
        [
            "2:40: budgets.global.per: invalid duration '1 hour': use a number with a unit ms, s, m, h or d, "
            "e.g. 30s, 10m, 1h, 1d or 1h30m"
        ],
    ),
    (
        "unquoted-env-value",
        HEADER + b"policies:\n  - name: a\n    retry: {env: {FLYTE_RETRY: true}}\n",
        [
            "4:32: policies[0].retry.env.FLYTE_RETRY: expected a string, got true; quote the value in YAML, e.g. 'true'"
        ],
    ),
    (
        "reserved-label",
        HEADER + b"policies:\n  - name: a\n    retry: {labels: {rerund-root: x}}\n",
        [
            "4:21: policies[0].retry.labels: label 'rerund-root' is set by rerund itself; choose a key not starting "
            "with 'rerund-'"
        ],
    ),
    (
        "backreference",
        HEADER + b"policies:\n  - name: a\n    match: {error: {patterns: ['(a)\\1']}}\n",
        [
            "4:32: policies[0].match.error.patterns[0]: invalid RE2 pattern '(a)\\\\1': invalid escape sequence: \\1 "
            "(RE2 has no backreferences or lookaround; rewrite the pattern without them)"
        ],
    ),
    (
        "lookahead",
        HEADER + b"policies:\n  - name: a\n    match: {error: {exclude: ['(?=x)y']}}\n",
        [
            "4:31: policies[0].match.error.exclude[0]: invalid RE2 pattern '(?=x)y': invalid perl operator: (?= "
            "(RE2 has no backreferences or lookaround; rewrite the pattern without them)"
        ],
    ),
    (
        "unbalanced-pattern",
        HEADER + b"policies:\n  - name: a\n    match: {error: {patterns: ['[']}}\n",
        ["4:32: policies[0].match.error.patterns[0]: invalid RE2 pattern '[': missing ]: ["],
    ),
    (
        "bad-enums-and-empty-list",
        HEADER
        + b"policies:\n  - name: a\n    match: {phases: [RUNNING], error: {kinds: [OOPS], patterns: []}}\n",
        [
            "4:22: policies[0].match.phases[0]: 'RUNNING' is not allowed; use 'FAILED', 'TIMED_OUT' or 'ABORTED'",
            "4:48: policies[0].match.error.kinds[0]: 'OOPS' is not allowed; use 'USER', 'SYSTEM' or 'UNSPECIFIED'",
            "4:65: policies[0].match.error.patterns: empty list; list at least one value or omit the key to "
            "match any value",
        ],
    ),
    (
        "duplicate-names",
        HEADER + b"policies:\n  - name: a\n  - name: a\n",
        [
            "4:11: policies[1].name: duplicate policy name 'a', first defined at {file}:3:5; policy names must be unique"
        ],
    ),
    (
        "shadowed-by-catch-all",
        HEADER + b"policies:\n  - name: all\n  - name: later\n    match: {projects: [ml]}\n",
        [
            "4:11: policies[1].name: policy 'later' is unreachable: earlier policy 'all' ({file}:3:5) matches every "
            "failure it would match; move it before 'all' or narrow 'all'"
        ],
    ),
    (
        "bad-names",
        HEADER + b"policies:\n  - name: Bad_Name\n  - name: global\n",
        [
            "3:11: policies[0].name: invalid policy name 'Bad_Name': use 1-63 lowercase letters, digits, '-', "
            "'_' or '.', starting and ending with a letter or digit",
            "4:11: policies[1].name: policy name 'global' is reserved for the global budget; choose another name",
        ],
    ),
    (
        "missing-name",
        HEADER + b"policies:\n  - match: {projects: [ml]}\n",
        ["3:5: policies[0].name: missing required key 'name'"],
    ),
    (
        "a name template, removed from the language",
        HEADER + b"policies:\n  - name: a\n    retry: {name: '{root}-x-{attempt}'}\n",
        [
            "4:19: policies[0].retry.name: 'name' (a rerun name template) is no longer a policy key: every "
            "rerun is named <root>-retry-<attempt> (e.g. abc123-retry-1), a function of the lineage attempt "
            "only, so that no restart, reload or replica with other policies can create a second rerun for "
            "one attempt; remove this key"
        ],
    ),
    (
        "a name template in the defaults",
        HEADER + b"defaults: {name: '{root}-x-{attempt}'}\npolicies:\n  - name: a\n",
        [
            "2:18: defaults.name: 'name' (a rerun name template) is no longer a policy key: every "
            "rerun is named <root>-retry-<attempt> (e.g. abc123-retry-1), a function of the lineage attempt "
            "only, so that no restart, reload or replica with other policies can create a second rerun for "
            "one attempt; remove this key"
        ],
    ),
    (
        "backoff-max-below-initial",
        HEADER + b"policies:\n  - name: a\n    retry: {backoff: {initial: 1m, max: 10s}}\n",
        [
            "4:22: policies[0].retry.backoff: backoff max 10s is shorter than initial 1m; raise max or lower initial"
        ],
    ),
    (
        "retry-not-a-mapping",
        HEADER + b"policies:\n  - name: a\n    retry: maybe\n",
        ["4:12: policies[0].retry: expected a mapping, got 'maybe'"],
    ),
    (
        "escalation-keys",
        HEADER + b"policies:\n  - name: a\n    retry: {escalate: {0: {env: {}}, 2: {foo: 1}}}\n",
        [
            "4:27: policies[0].retry.escalate[0]: must be >= 1, got 0",
            "4:42: policies[0].retry.escalate[2].foo: unknown key 'foo'; allowed keys: env, labels, inputs, "
            "queue, interruptible, service_account, overwrite_cache, annotations, max_action_concurrency, "
            "force_rerun_actions, resources, task_version",
        ],
    ),
    (
        "budget-values",
        HEADER + b"budgets: {global: {max_reruns: 0, per: 1h}, other: {}}\n",
        [
            "2:32: budgets.global.max_reruns: must be >= 1, got 0",
            "2:45: budgets.other: unknown key 'other'; allowed keys: global",
        ],
    ),
    (
        "wrong-api-version",
        b"apiVersion: rerund/v2\n",
        ["1:13: apiVersion: unsupported apiVersion 'rerund/v2'; this rerund reads 'rerund/v1'"],
    ),
    ("missing-api-version", b"policies: []\n", ["1:1: apiVersion: missing required key 'apiVersion'"]),
    (
        "malformed-yaml",
        HEADER + b"policies: [\n",
        ["3:1: invalid YAML: while parsing a flow node did not find expected node content"],
    ),
    (
        "two-documents",
        HEADER + b"---\n" + HEADER,
        ["2:1: invalid YAML: expected one YAML document, found several (remove the extra '---')"],
    ),
    ("duplicate-key", HEADER + HEADER, ["2:1: apiVersion: duplicate key 'apiVersion'; keep one"]),
    (
        "not-utf8",
        HEADER + b"policies:\n  - name: caf\xe9\n",
        ["3:14: byte 0xe9 is not valid UTF-8; save the file as UTF-8"],
    ),
    (
        "python-tag",
        b"policies: !!python/object:os.system {}\n",
        [
            "1:11: invalid YAML: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object:os.system' (only plain YAML is accepted: no !tags)"
        ],
    ),
    ("a-list", b"- a\n- b\n", ["1:1: expected a mapping with apiVersion, defaults, budgets, policies"]),
    ("empty", b"", ["1:1: empty policy file; it needs at least 'apiVersion: rerund/v1'"]),
]


@pytest.mark.parametrize(("content", "expected"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_every_problem_is_reported_with_file_line_column_and_path(tmp_path, content, expected):
    path = tmp_path / "policy.yaml"
    path.write_bytes(content)
    with pytest.raises(PolicyError) as caught:
        load_policies([path])
    got = [str(p) for p in caught.value.problems]
    assert got == [f"{path}:" + e.replace("{file}", str(path)) for e in expected]
    assert str(caught.value) == "\n".join(got)


def test_problems_of_several_files_are_all_reported(tmp_path):
    (tmp_path / "a.yaml").write_bytes(HEADER + b"policies: [{name: x, matchh: {}}]\n")
    (tmp_path / "b.yaml").write_bytes(HEADER + b"policies: [{name: y, retry: {max_attempts: -1}}]\n")
    with pytest.raises(PolicyError) as caught:
        load_policies([tmp_path])
    assert [(Path(p.file).name, p.path) for p in caught.value.problems] == [
        ("a.yaml", "policies[0].matchh"),
        ("b.yaml", "policies[0].retry.max_attempts"),
    ]


def test_a_duplicate_name_across_files_points_at_the_first_definition(tmp_path):
    (tmp_path / "10-a.yaml").write_bytes(HEADER + b"policies: [{name: x, match: {projects: [a]}}]\n")
    (tmp_path / "20-b.yaml").write_bytes(HEADER + b"policies: [{name: x, match: {projects: [b]}}]\n")
    with pytest.raises(
        PolicyError,
        match=r"20-b.yaml:2:19: policies\[0\].name: duplicate policy name 'x', "
        r"first defined at .*10-a.yaml:2:12",
    ):
        load_policies([tmp_path])


def test_the_global_budget_may_be_defined_in_one_file_only(tmp_path):
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_bytes(HEADER + b"budgets: {global: {max_reruns: 1, per: 1h}}\n")
    with pytest.raises(
        PolicyError,
        match=r"b.yaml:2:19: budgets.global: the global budget is already defined at "
        r".*a.yaml:2:19; define it in one file only",
    ):
        load_policies([tmp_path])


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: d / "missing.yaml", r"missing.yaml:1:1: no such file or directory; check the path"),
        (lambda d: d, r":1:1: no \*.yaml or \*.yml policy files in this directory"),
    ],
    ids=["missing-file", "empty-directory"],
)
def test_a_path_without_policies_is_an_error(tmp_path, setup, message):
    with pytest.raises(PolicyError, match=message):
        load_policies([setup(tmp_path)])


def test_a_directory_is_read_in_file_name_order_and_not_recursively(tmp_path):
    (tmp_path / "20-second.yaml").write_bytes(
        HEADER + b"policies: [{name: second, match: {projects: [b]}}]\n"
    )
    (tmp_path / "10-first.yaml").write_bytes(HEADER + b"policies: [{name: first, match: {projects: [a]}}]\n")
    (tmp_path / "notes.txt").write_text("not a policy")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "broken.yaml").write_text("this: is: not: valid")
    ps = load_policies(str(tmp_path))
    assert ps.names() == ["first", "second"]


def test_defaults_merge_under_each_policy_of_their_file(tmp_path):
    (tmp_path / "a.yaml").write_bytes(
        HEADER
        + b"defaults: {max_attempts: 5, scope: recover, backoff: {initial: 1s, jitter: 0}}\n"
        + b"policies:\n  - name: a\n    match: {projects: [w]}\n    retry: {backoff: {factor: 3}}\n  - name: b\n    match: {projects: [x]}\n"
        + b"    retry: {max_attempts: 1, scope: run}\n"
    )
    (tmp_path / "b.yaml").write_bytes(HEADER + b"policies: [{name: c, match: {projects: [y]}}]\n")
    a, b, c = load_policies([tmp_path]).rules
    assert a.retry and b.retry and c.retry
    assert (a.retry.max_attempts, a.retry.scope, a.retry.backoff.factor) == (5, Scope.RECOVER, 3)
    assert (a.retry.backoff.initial, a.retry.backoff.max, a.retry.backoff.jitter) == (
        timedelta(seconds=1),
        timedelta(minutes=10),
        0,
    )
    assert (b.retry.max_attempts, b.retry.scope) == (1, Scope.RUN)
    assert (c.retry.max_attempts, c.retry.scope, c.retry.backoff.initial) == (
        3,
        Scope.RUN,
        timedelta(seconds=30),
    )


@pytest.mark.parametrize(
    ("earlier", "later", "unreachable"),
    [
        ("{}", "{projects: [ml]}", True),
        ("{projects: [ml, etl]}", "{projects: [ml], domains: [prod]}", True),
        ("{projects: [ml]}", "{projects: [ml, etl]}", False),
        ("{error: {kinds: [SYSTEM]}}", "{error: {kinds: [SYSTEM], patterns: [x]}}", True),
        ("{error: {exclude: [x]}}", "{projects: [ml]}", False),
        ("{error: {exclude: [x]}}", "{error: {exclude: [x, y]}}", True),
        ("{}", "{phases: [ABORTED]}", False),
        ("{phases: [FAILED, TIMED_OUT, ABORTED]}", "{phases: [ABORTED]}", True),
        ("{labels: {team: ml}}", "{labels: {team: ml, tier: gold}}", True),
        ("{labels: {team: ml, tier: gold}}", "{labels: {team: ml}}", False),
        ("{tasks: ['train.*']}", "{tasks: ['train.fit']}", False),
    ],
    ids=[
        "catch-all",
        "wider-projects",
        "narrower-earlier",
        "same-kinds-plus-pattern",
        "exclude-narrows-earlier",
        "more-excludes-later",
        "aborted-not-in-default-phases",
        "all-phases",
        "more-labels-later",
        "more-labels-earlier",
        "globs-compare-as-written",
    ],
)
def test_a_policy_shadowed_by_an_earlier_one_is_reported(tmp_path, earlier, later, unreachable):
    path = tmp_path / "p.yaml"
    path.write_text(
        f"apiVersion: rerund/v1\npolicies:\n  - name: early\n    match: {earlier}\n"
        f"  - name: late\n    match: {later}\n"
    )
    if unreachable:
        with pytest.raises(PolicyError, match="policy 'late' is unreachable: earlier policy 'early'"):
            load_policies([path])
    else:
        assert load_policies([path]).names() == ["early", "late"]


def test_the_shipped_policies_load(tmp_path):
    root = Path(__file__).resolve().parents[2] / "policies"
    assert load_policies([root]).names() == ["never-retry-bad-input", "transient-network"]
    assert len(load_policies([root / "examples"])) >= 2
