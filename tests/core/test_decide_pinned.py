"""The decisions of 3,000 varied failures under a varied policy set, pinned as one digest taken
on the code before issue 24's speedups (b4e41df): every reason, name, label, due time,
fingerprint and budget defer is as it was (each decision's JSON and its repr: every field). A
speedup of ``decide`` that changes any decision fails here."""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rerund.core.decide import decide, explain
from rerund.core.model import Failure
from rerund.policy import load_policies

POLICIES = """\
apiVersion: rerund/v1
budgets: {global: {max_reruns: 5, per: 1h}}
policies:
  - name: repro-safe
    match: {labels: {team: ml}, error: {kinds: [SYSTEM], classes: [oom]}}
    retry:
      scope: run
      max_attempts: 3
      backoff: {initial: 10s, factor: 3, max: 5m, jitter: 0}
      env: {MEM: high}
      labels: {retried: "yes"}
      queue: big
      interruptible: false
      escalate:
        2: {env: {MEM: higher}, queue: bigger}
  - name: fit
    match: {tasks: ['train.*'], error: {kinds: [SYSTEM], patterns: ['boom']}}
    retry: {scope: relaunch, task_version: newer, max_attempts: 3, max_wait: 1h}
  - name: bad-input
    match: {error: {kinds: [USER], patterns: ['ValueError|TypeError']}}
    retry: false
  - name: net
    match: {error: {kinds: [SYSTEM], patterns: ['(?i)reset', '50[0-4]'], exclude: ['denied']}}
    retry: {scope: failed_action, max_attempts: 4, budget: {max_reruns: 3, per: 10m}}
  - name: timeouts
    match: {phases: [TIMED_OUT]}
    retry: {scope: recover, max_attempts: 2, backoff: {initial: 1h, factor: 1, max: 1h, jitter: 0}}
  - name: etl
    match: {projects: [etl], tasks: ['etl.*']}
    retry: {max_attempts: 5, backoff: {initial: 1m, factor: 2, max: 1h, jitter: 0.3}}
  - name: codes
    match: {error: {codes: [RetriesExhausted|OOMKilled, ConnectionResetError]}}
    retry: {max_attempts: 2, backoff: {initial: 1h, factor: 1, max: 1h, jitter: 0}}
"""
# sha256 of the decisions' JSON (``_decisions``), taken on b4e41df.
PINNED = "0e1f7e966e9a2c65f4852962b53a88aba1c6c7cc4bbdac20b98f688adb653a49"
T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def _failures(n: int) -> list[dict[str, Any]]:
    rng = random.Random(24)
    out = []
    for i in range(n):
        labels: dict[str, str] = {}
        if rng.random() < 0.3:
            labels["team"] = rng.choice(["ml", "data"])
        if rng.random() < 0.3:
            labels["rerund-root"] = f"root-{i % 50}"
            labels["rerund-attempt"] = rng.choice(["1", "2", "3", "7", "x", "0"])
        if rng.random() < 0.05:
            labels["rerund-repro"] = "nightly"
        if rng.random() < 0.05:
            labels["rerund-canaries"] = "1"
        out.append(
            {
                "run": f"r{i:05d}" + rng.choice(["", "-x", "-retry-1"]),
                "root": labels.get("rerund-root", ""),
                "attempt": rng.choice([0, 0, 1, 2, 3, 5]),
                "project": rng.choice(["ml", "etl", ""]),
                "domain": rng.choice(["prod", "dev"]),
                "task": rng.choice(["etl.load", "train.fit", ""]),
                "labels": labels,
                "phase": rng.choice(["FAILED", "FAILED", "TIMED_OUT", "ABORTED"]),
                "action": rng.choice(["a0", "a1", "a7"]),
                "error": {
                    "kind": rng.choice(["USER", "SYSTEM", "UNSPECIFIED"]),
                    "code": rng.choice(
                        [
                            "",
                            "OOMKilled",
                            "RetriesExhausted|OOMKilled",
                            "ConnectionResetError",
                            "NonRecoverableError",
                        ]
                    ),
                    "message": rng.choice(
                        ["ValueError: x", "Connection reset", "HTTP 503", "access denied 503", "", "boom 42"]
                    ),
                },
                "failed_at": T0 - timedelta(seconds=rng.randrange(0, 7200)),
                "task_version": rng.choice(["v1", "v2", ""]),
                "latest_version": rng.choice([None, "v1", "v2"]),
                "budget_used": {k: rng.randrange(0, 7) for k in rng.sample(["global", "net", "etl"], 2)},
                "budget_oldest": {"global": T0 - timedelta(minutes=rng.randrange(0, 60))},
            }
        )
    return out


def _decisions(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "p.yaml"
    path.write_text(POLICIES)
    policies = load_policies([path])
    out = []
    for data in _failures(3000):
        failure = Failure.model_validate(data)
        decision = decide(failure, policies, T0)
        assert explain(failure, policies, T0).decision == decision
        out.append({**decision.to_json(), "repr": repr(decision)})  # every field, root and budget too
    return out


def test_the_decisions_of_three_thousand_failures_are_those_before_the_speedups(tmp_path: Path) -> None:
    decisions = _decisions(tmp_path)
    kinds = {d["decision"] for d in decisions}
    assert kinds == {"rerun", "defer", "give_up", "ignore"}  # every kind is exercised
    text = json.dumps(decisions, sort_keys=True, default=str)
    assert hashlib.sha256(text.encode()).hexdigest() == PINNED
