"""Failure storms for the end-to-end and reliability tests: a workload, its policies and a way to
launch N failures at once.

Per 10 failures: 6 fail once (one rerun each), 2 fail twice (two reruns), 1 is a bad input
(never rerun) and 1 always fails (three reruns, then the lineage is exhausted) — 13 reruns owed
per 10 failures, and every kind of decision in every storm.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from rerund.sandbox.testing import SandboxHandle

_SYSTEM = {"kind": "SYSTEM", "code": "ConnectionResetError", "message": "ConnectionResetError: peer reset"}

STORM_WORKLOAD: dict[str, Any] = {
    "tasks": {
        "storm.flaky": {"duration": "0.1s", "behaviour": ["fail", "succeed"], "error": _SYSTEM},
        "storm.twice": {"duration": "0.1s", "behaviour": ["fail", "fail", "succeed"], "error": _SYSTEM},
        "storm.bad": {
            "duration": "0.1s",
            "behaviour": ["fail"],
            "error": {"kind": "USER", "code": "ValueError", "message": "ValueError: bad input"},
        },
        "storm.dead": {
            "duration": "0.1s",
            "behaviour": ["fail"],
            "error": {"kind": "SYSTEM", "code": "TimeoutError", "message": "TimeoutError: timed out"},
        },
    }
}

STORM_MIX = (("storm.flaky", 6), ("storm.twice", 2), ("storm.bad", 1), ("storm.dead", 1))


def storm_policies(budget: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Policies for the storm workload (short backoff; ``budget`` as the global budget)."""
    doc: dict[str, Any] = {
        "apiVersion": "rerund/v1",
        "defaults": {
            "max_attempts": 3,
            "backoff": {"initial": "50ms", "factor": 2, "max": "400ms", "jitter": 0.2},
        },
        "policies": [
            {
                "name": "never-retry-bad-input",
                "match": {"error": {"kinds": ["USER"]}},
                "retry": False,
            },
            {
                "name": "storm-transient",
                "match": {"tasks": ["storm.*"], "error": {"kinds": ["SYSTEM"]}},
                "retry": {"scope": "run", "labels": {"retried-by": "rerund"}},
            },
        ],
    }
    if budget is not None:
        doc["budgets"] = {"global": dict(budget)}
    return doc


def write_policies(path: Path, doc: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(doc), sort_keys=False))
    return path


def owed_reruns(failures: int) -> int:
    """Reruns the storm policies owe ``failures`` storm failures (launched by ``launch_storm``)."""
    per = {"storm.flaky": 1, "storm.twice": 2, "storm.bad": 0, "storm.dead": 3}
    return sum(per[task] * n for task, n in _counts(failures).items())


def _counts(failures: int) -> dict[str, int]:
    out = {task: failures // 10 * k for task, k in STORM_MIX}
    rest = failures % 10
    for task, k in STORM_MIX:
        take = min(k, rest)
        out[task] += take
        rest -= take
    return out


def launch_storm(
    sb: SandboxHandle, failures: int, *, waves: int = 1, between: Callable[[int], None] | None = None
) -> list[str]:
    """Launch ``failures`` storm runs (the mix above) in ``waves`` waves; ``between(i)`` is
    called after wave ``i`` (e.g. to kill a daemon). Returns the run names."""
    names: list[str] = []
    counts = _counts(failures)
    for w in range(waves):
        for task, n in counts.items():
            share = n // waves + (1 if w < n % waves else 0)
            if share:
                names += sb.launch(task=task, count=share)
        if between is not None:
            between(w)
    return names
