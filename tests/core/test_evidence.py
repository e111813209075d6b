"""Evidence from history (``retry.give_up_below``): a fingerprint whose reruns never recover
is given up on, with the evidence in the reason and the explain trace; too few reruns, or a
good enough rate, rerun as before; without history nothing changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rerund.core.decide import decide, explain
from rerund.core.fingerprints import failure_fingerprint
from rerund.core.model import ErrorInfo, Failure, GiveUp, Rerun

T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
POLICY = """
policies:
  - name: hopeless-or-not
    retry:
      max_attempts: 3
      give_up_below: {recovery_rate: 0.1, min_reruns: 10, window: 7d}
"""


def failure(evidence: dict[str, tuple[int, int]]) -> Failure:
    return Failure(
        run="r1",
        task="etl.load",
        error=ErrorInfo(kind="USER", code="KeyError", message="KeyError: 'customer_id'"),
        failed_at=T0,
        evidence=evidence,
    )


def test_a_fingerprint_that_never_recovers_is_given_up_with_the_evidence(policies) -> None:
    f = failure({"7d": (14, 0)})
    fp = failure_fingerprint(f)
    decision = decide(f, policies(POLICY), T0)
    assert isinstance(decision, GiveUp)
    assert decision.reason == (
        f"policy 'hopeless-or-not' gives up on run 'r1': reruns of fingerprint {fp} recovered 0 of 14 "
        "in 7d, below recovery_rate=0.1, min_reruns=10 (give_up_below)"
    )
    trace = explain(f, policies(POLICY), T0).trace
    assert (
        f"give_up_below: reruns of fingerprint {fp} recovered 0 of 14 in 7d: "
        "below recovery_rate=0.1, min_reruns=10" in trace
    )


@pytest.mark.parametrize(
    ("evidence", "why"),
    [
        ({"7d": (9, 0)}, "fewer than min_reruns=10, rerun"),
        ({"7d": (20, 2)}, "at or above recovery_rate=0.1, min_reruns=10, rerun"),
        ({}, "no history of fingerprint"),
        ({"1d": (50, 0)}, "no history of fingerprint"),  # another window's counts do not apply
    ],
    ids=["too-few-reruns", "rate-reached", "no-ledger", "other-window"],
)
def test_without_enough_evidence_of_hopelessness_the_policy_reruns(policies, evidence, why) -> None:
    f = failure(evidence)
    assert isinstance(decide(f, policies(POLICY), T0), Rerun)
    assert any(why in line for line in explain(f, policies(POLICY), T0).trace)
