# ruff: noqa: E501  (exact user-visible messages are kept on one line to be greppable)
"""``explain``'s line for a policy, pinned for every selector held and failed: the trace is
what an operator reads to find out why a policy did or did not match."""

from __future__ import annotations

from typing import Any

import pytest

from rerund.core.decide import decide, explain

OOM = {"kind": "USER", "code": "OOMKilled", "message": "out of memory"}
GPU_FAULT = {
    "kind": "SYSTEM",
    "code": "X",
    "message": "m",
    "gpu_fault": {"code": 79, "severity": "CRITICAL", "kind": "XID"},
}
NAMED_GPU_FAULT = {
    "kind": "SYSTEM",
    "code": "X",
    "message": "m",
    "gpu_fault": {"code": 79, "name": "GPU has fallen off the bus", "severity": "CRITICAL", "kind": "XID"},
}

TRACES: list[tuple[str, dict[str, Any], str]] = [
    (
        "projects: [ml, etl]",
        {},
        "matches: projects: 'ml' is listed; phases: FAILED is in [FAILED, TIMED_OUT]",
    ),
    (
        "projects: [etl, dev]",
        {},
        "does not match: projects: 'ml' is not in [dev, etl]; phases: FAILED is in [FAILED, TIMED_OUT]",
    ),
    (
        "domains: [production]",
        {},
        "matches: domains: 'production' is listed; phases: FAILED is in [FAILED, TIMED_OUT]",
    ),
    (
        "domains: [staging]",
        {},
        "does not match: domains: 'production' is not in [staging]; phases: FAILED is in [FAILED, TIMED_OUT]",
    ),
    (
        "tasks: ['etl.*', 'train.f?t']",
        {},
        "matches: tasks: 'train.fit' matches 'train.f?t'; phases: FAILED is in [FAILED, TIMED_OUT]",
    ),
    (
        "tasks: ['train', 'x.*']",
        {},
        "does not match: tasks: 'train.fit' matches none of ['train', 'x.*']; phases: FAILED is in [FAILED, TIMED_OUT]",
    ),
    (
        "action_tasks: ['*.load']",
        {"action": "a3", "action_task": "etl.load"},
        "matches: action_tasks: 'etl.load' matches '*.load'; phases: FAILED is in [FAILED, TIMED_OUT]",
    ),
    (
        "action_tasks: ['*.load']",
        {},
        "does not match: action_tasks: 'train.fit' matches none of ['*.load']; phases: FAILED is in [FAILED, TIMED_OUT]",
    ),
    ("labels: {team: ml}", {}, "matches: labels: team=ml present; phases: FAILED is in [FAILED, TIMED_OUT]"),
    (
        "labels: {team: ml, tier: gold}",
        {},
        "does not match: labels: missing tier=gold; phases: FAILED is in [FAILED, TIMED_OUT]",
    ),
    ("phases: [TIMED_OUT]", {"phase": "TIMED_OUT"}, "matches: phases: TIMED_OUT is in [TIMED_OUT]"),
    (
        "phases: [TIMED_OUT, FAILED]",
        {"phase": "ABORTED"},
        "does not match: phases: ABORTED is not in [FAILED, TIMED_OUT] (ABORTED must be listed to match: a human aborted it)",
    ),
    (
        "",
        {"phase": "ABORTED"},
        "does not match: phases: ABORTED is not in [FAILED, TIMED_OUT] (ABORTED must be listed to match: a human aborted it)",
    ),
    (
        "error: {kinds: [SYSTEM]}",
        {},
        "matches: phases: FAILED is in [FAILED, TIMED_OUT]; error.kinds: SYSTEM is listed",
    ),
    (
        "error: {kinds: [USER, UNSPECIFIED]}",
        {},
        "does not match: phases: FAILED is in [FAILED, TIMED_OUT]; error.kinds: SYSTEM is not in [UNSPECIFIED, USER]",
    ),
    (
        "error: {codes: [ConnectionResetError]}",
        {},
        "matches: phases: FAILED is in [FAILED, TIMED_OUT]; error.codes: 'ConnectionResetError' is listed",
    ),
    (
        "error: {codes: [b, a]}",
        {},
        "does not match: phases: FAILED is in [FAILED, TIMED_OUT]; error.codes: 'ConnectionResetError' is not in ['a', 'b']",
    ),
    (
        "error: {classes: [system]}",
        {},
        "matches: phases: FAILED is in [FAILED, TIMED_OUT]; error.classes: the failure is system",
    ),
    (
        "error: {classes: [oom, user]}",
        {},
        "does not match: phases: FAILED is in [FAILED, TIMED_OUT]; error.classes: the failure is of no taxonomy class, not any of [oom, user]",
    ),
    (
        "error: {classes: [oom]}",
        {"error": OOM},
        "matches: phases: FAILED is in [FAILED, TIMED_OUT]; error.classes: the failure is oom",
    ),
    (
        "error: {classes: [system]}",
        {"error": OOM},
        "does not match: phases: FAILED is in [FAILED, TIMED_OUT]; error.classes: the failure is oom, not any of [system]",
    ),
    (
        "error: {gpu_fault: {codes: [48, 79]}}",
        {"error": NAMED_GPU_FAULT},
        "matches: phases: FAILED is in [FAILED, TIMED_OUT]; error.gpu_fault: XID 79 (GPU has fallen off the bus), severity CRITICAL is selected",
    ),
    (
        "error: {gpu_fault: {codes: [48]}}",
        {"error": GPU_FAULT},
        "does not match: phases: FAILED is in [FAILED, TIMED_OUT]; error.gpu_fault: code 79 is not in [48]",
    ),
    (
        "error: {gpu_fault: {severities: [WARN, USER]}}",
        {"error": GPU_FAULT},
        "does not match: phases: FAILED is in [FAILED, TIMED_OUT]; error.gpu_fault: severity CRITICAL is not in [USER, WARN]",
    ),
    (
        "error: {gpu_fault: {kinds: [SXID]}}",
        {"error": GPU_FAULT},
        "does not match: phases: FAILED is in [FAILED, TIMED_OUT]; error.gpu_fault: kind XID is not in [SXID]",
    ),
    (
        "error: {gpu_fault: {kinds: [XID]}}",
        {},
        "does not match: phases: FAILED is in [FAILED, TIMED_OUT]; error.gpu_fault: the error carries no GPU fault",
    ),
    (
        "error: {patterns: ['nope', 'peer$']}",
        {},
        "matches: phases: FAILED is in [FAILED, TIMED_OUT]; error.patterns: 'peer$' found in the message",
    ),
    (
        "error: {patterns: ['nope', '^reset']}",
        {},
        "does not match: phases: FAILED is in [FAILED, TIMED_OUT]; error.patterns: none of ['nope', '^reset'] found in the message",
    ),
    (
        "error: {patterns: ['reset'], exclude: ['x', 'peer']}",
        {},
        "does not match: phases: FAILED is in [FAILED, TIMED_OUT]; error.patterns: 'reset' found in the message; error.exclude: 'peer' found in the message vetoes this policy",
    ),
    (
        "error: {patterns: ['reset'], exclude: ['denied']}",
        {},
        "matches: phases: FAILED is in [FAILED, TIMED_OUT]; error.patterns: 'reset' found in the message; error.exclude: no excluded pattern found",
    ),
]


@pytest.mark.parametrize(
    ("selector", "overrides", "line"),
    TRACES,
    ids=[f"{i}-{s[:40] or 'catch-all'}" for i, (s, _, _) in enumerate(TRACES)],
)
def test_explain_says_which_selectors_held_and_why(policies, make_failure, selector, overrides, line):
    ps = policies(f"policies: [{{name: p, match: {{{selector}}}}}]\n")
    failure = make_failure(**overrides)
    result = explain(failure, ps, make_failure().failed_at)
    assert result.trace[0] == f"policy 'p' ({ps.rules[0].origin}) {line}"
    assert (result.decision.policy == "p") is line.startswith("matches")
    assert result.decision == decide(failure, ps, make_failure().failed_at)
