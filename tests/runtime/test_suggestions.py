"""What ``rerund suggest`` gathers, one call against the in-memory control plane: reruns found
by their relation (made by hand) and by rerund's labels, chains counted for their first run,
each rerun once, and reruns that failed again not counted as failures of their own."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from rerund.core.model import ErrorInfo
from rerund.runtime.suggestions import gather_failures
from runtime.fake_control_plane import T0, Clock, FakeControlPlane

SLOW = ErrorInfo(kind="SYSTEM", code="SlowDown", message="503 SlowDown")


def _gather(cp: FakeControlPlane) -> dict[str, tuple[int, int, int, list[str]]]:
    seen = asyncio.run(gather_failures(cp, [(cp.project, cp.domain)], since=T0 - timedelta(hours=1)))
    return {s.example.task: (s.failures, s.reruns, s.recovered, s.runs) for s in seen}


def test_a_chain_of_reruns_by_hand_counts_each_rerun_once_for_the_first_run() -> None:
    cp = FakeControlPlane(Clock(T0 + timedelta(minutes=10)))
    cp.add_failed("x", task="etl.load", error=SLOW, at=T0)
    cp.add_failed("x-by-hand", task="etl.load", error=SLOW, at=T0 + timedelta(minutes=1), rerun_of="x")
    cp.add_failed(
        "x-again", task="etl.load", phase="SUCCEEDED", at=T0 + timedelta(minutes=2), rerun_of="x-by-hand"
    )

    assert _gather(cp) == {"etl.load": (1, 2, 1, ["x"])}


def test_a_rerun_by_rerund_listed_by_label_and_by_relation_counts_once() -> None:
    cp = FakeControlPlane(Clock(T0 + timedelta(minutes=10)))
    cp.add_failed("y", task="etl.load", error=SLOW, at=T0)
    labels = {"rerund-root": "y", "rerund-attempt": "1", "rerund-policy": "p"}
    cp.add_failed("y-retry-1", task="etl.load", phase="SUCCEEDED", labels=labels, rerun_of="y")

    assert _gather(cp) == {"etl.load": (1, 1, 1, ["y"])}


def test_a_rerun_of_a_run_older_than_the_window_is_no_failure_of_its_own() -> None:
    cp = FakeControlPlane(Clock(T0 + timedelta(minutes=10)))
    cp.add_failed("old", task="etl.load", error=SLOW, at=T0 - timedelta(days=2))
    cp.add_failed("old-by-hand", task="etl.load", error=SLOW, at=T0, rerun_of="old")
    cp.add_failed("fresh", task="report.render", error=SLOW, at=T0)

    assert _gather(cp) == {"report.render": (1, 0, 0, ["fresh"])}
