"""The adapter's read cache (the reads ``read_failure`` keeps for the SDK's rerun path) is bounded
in bytes, not in runs: against the real sandbox serving 5 MB error messages, what it holds stays
under its byte budget, the held bytes it reports are what it holds, and a rerun from a slimmed
read still carries the source run's spec."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from adapter_support import connected
from rerund.adapters.flyte.control_plane import FlyteControlPlane
from rerund.core.runs import RerunRequest, RunRef
from rerund.runtime.metrics import Metrics
from rerund.sandbox.testing import SandboxHandle, start_sandbox

pytestmark = pytest.mark.e2e

FIVE_MB = 5 * 1024 * 1024
WORKLOAD = {
    "tasks": {
        "dump.frame": {
            "duration": "0.1s",
            "behaviour": ["fail", "succeed"],
            "error": {
                "kind": "SYSTEM",
                "code": "MemoryError",
                "message": "MemoryError: while printing a dataframe of 10^7 rows",
                "message_bytes": FIVE_MB,
            },
        },
    }
}


@pytest.fixture(scope="module")
def sb() -> Iterator[SandboxHandle]:
    with start_sandbox(WORKLOAD, time_scale=0.5) as handle:
        yield handle


def _held(cp: FlyteControlPlane) -> int:
    """The bytes of every answer the cache holds (kept serialized), counted here independently."""
    reads: dict[Any, dict[Any, tuple[Any, bytes]]] = cp._reads
    return sum(len(data) for kept in reads.values() for _, data in kept.values())


def test_reads_of_failures_with_5_mb_messages_hold_far_less_than_the_messages(sb: SandboxHandle) -> None:
    names = sb.launch("dump.frame", count=12)
    sb.wait_idle()
    cp = connected(sb)
    registry = CollectorRegistry()
    Metrics(registry).track_held_bytes(lambda: float(cp.read_cache_bytes), lambda: 0.0)

    async def read_all() -> list[Any]:
        summaries = [await cp.get_run(RunRef(sb.project, sb.domain, n)) for n in names]
        return [await cp.read_failure(s) for s in summaries]

    facts = asyncio.run(read_all())

    assert all(len(f.error.message) < 5000 and "truncated: 5242880 bytes" in f.error.message for f in facts)
    assert len(cp._reads) == 12  # every run's reads are kept for its rerun ...
    held = _held(cp)
    assert held < 12 * 64 * 1024, held  # ... without the messages (12 x 5 MB before)
    assert cp.read_cache_bytes == held
    assert registry.get_sample_value("rerund_read_cache_bytes") == held


def test_the_cache_drops_the_oldest_runs_past_its_byte_budget_and_says_what_it_holds(
    sb: SandboxHandle,
) -> None:
    names = sb.launch("dump.frame", count=6)
    sb.wait_idle()
    cp = connected(sb)

    async def read(name: str) -> None:
        await cp.read_failure(await cp.get_run(RunRef(sb.project, sb.domain, name)))

    asyncio.run(read(names[0]))
    one_run = cp.read_cache_bytes
    cp.read_cache_budget = 3 * one_run + one_run // 2  # room for three runs' reads
    for name in names[1:]:
        asyncio.run(read(name))

    assert [ref.name for ref in cp._reads] == names[-3:]
    assert cp.read_cache_bytes == _held(cp) <= cp.read_cache_budget


def test_a_rerun_made_from_a_slimmed_read_is_a_rerun_of_the_source_with_no_read_again(
    sb: SandboxHandle,
) -> None:
    [name] = sb.launch("dump.frame")
    sb.wait_idle()
    cp = connected(sb)
    src = RunRef(sb.project, sb.domain, name)

    async def read_and_rerun() -> tuple[RunRef, int]:
        facts = await cp.read_failure(await cp.get_run(src))
        before = sb.request_counts().get("GetRunDetails", 0)
        request = RerunRequest(source=src, name=f"{name}-r1", labels={"team": "ml"}, source_spec=facts.spec)
        ref = await cp.create_rerun(request)
        return ref, sb.request_counts().get("GetRunDetails", 0) - before

    ref, reads_again = asyncio.run(read_and_rerun())
    snap = sb.wait_for(ref.name)

    assert snap["relation"]["type"] == "RERUN" and snap["phase"] == "SUCCEEDED"
    assert reads_again == 0  # the SDK's GetRunDetails of the source was answered by the kept read
    assert cp.read_cache_bytes == _held(cp) == 0  # taken by the rerun


def test_the_read_keys_of_one_run_share_their_strings() -> None:
    # The read cache keeps two or three keys a run; each string read off a request message is a
    # new object, so before, a run's keys held its project, domain and name two or three times.
    from flyteidl2.common import identifier_pb2
    from flyteidl2.workflow import run_service_pb2

    from rerund.adapters.flyte.tuning import read_key

    run_id = identifier_pb2.RunIdentifier(org="o", project="ml", domain="prod", name="a-run-" + "x" * 20)
    details = read_key("GetRunDetails", run_service_pb2.GetRunDetailsRequest(run_id=run_id))
    action = identifier_pb2.ActionIdentifier(run=run_id, name="a3")
    action_details = read_key("GetActionDetails", run_service_pb2.GetActionDetailsRequest(action_id=action))
    assert details is not None and action_details is not None
    assert details[1:4] == action_details[1:4] == ("ml", "prod", "a-run-" + "x" * 20)
    assert all(a is b for a, b in zip(details[1:4], action_details[1:4], strict=True))
