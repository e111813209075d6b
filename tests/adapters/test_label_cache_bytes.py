"""The adapter's label cache (open-source Flyte: each run's labels and relation, read once per
run to find reruns) is bounded in bytes: against the real sandbox's ``oss`` profile, what it
holds stays within its byte budget and ``rerund_cache_bytes{cache="labels"}`` says so, and a
run whose labels were evicted is read again, listed as before — a smaller cache costs reads,
never a rerun missed or counted twice."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from adapter_support import connected, rpc_delta
from rerund.adapters.flyte.control_plane import FlyteControlPlane
from rerund.core.runs import RunRef
from rerund.runtime.metrics import Metrics
from rerund.sandbox.profiles import OSS
from rerund.sandbox.testing import SandboxHandle, start_sandbox

pytestmark = pytest.mark.e2e

WORKLOAD = {"tasks": {"ok": {"behaviour": ["succeed"], "duration": "0.1s"}}}


@pytest.fixture(scope="module")
def sb() -> Iterator[SandboxHandle]:
    with start_sandbox(WORKLOAD, time_scale=0.5, profile=OSS.with_error_delay(0)) as handle:
        yield handle


def _since() -> datetime:
    return datetime.now(UTC) - timedelta(minutes=5)


def _labels(i: int) -> dict[str, str]:
    return {"rerund-root": f"root-{i:04d}", "rerund-attempt": "1", "rerund-policy": "p", "team": "ml"}


async def _listed(cp: FlyteControlPlane, sb: SandboxHandle) -> list[tuple[str, dict[str, str]]]:
    runs = await cp.list_reruns(sb.project, sb.domain, since=_since())
    return sorted((r.ref.name, dict(r.labels)) for r in runs)


def test_the_label_cache_stays_within_its_byte_budget_and_the_metric_says_what_it_holds(
    sb: SandboxHandle,
) -> None:
    names = [n for i in range(12) for n in sb.launch("ok", labels=_labels(i))]
    sb.wait_idle()
    cp = connected(sb, backend="oss")
    registry = CollectorRegistry()
    Metrics(registry).track_caches(cp.caches)
    cache: Any = cp._labels

    async def list_twice() -> list[tuple[str, dict[str, str]]]:
        await _listed(cp, sb)
        cache.budget = 5 * (cache.held // len(cache))  # room for about five runs' labels
        cache.shrink()
        return await _listed(cp, sb)

    listed = asyncio.run(list_twice())

    assert {n for n, _ in listed} >= set(names)
    assert 0 < cache.held <= cache.budget
    assert len(cache) < len(names)  # runs were evicted to stay within the budget ...
    assert registry.get_sample_value("rerund_cache_bytes", {"cache": "labels"}) == cache.held


def test_a_run_whose_labels_were_evicted_is_read_again_and_listed_as_before(sb: SandboxHandle) -> None:
    names = [n for i in range(6) for n in sb.launch("ok", labels=_labels(100 + i))]
    sb.wait_idle()
    cp = connected(sb, backend="oss")
    cache: Any = cp._labels

    async def list_evict_list() -> tuple[Any, ...]:
        first = await _listed(cp, sb)
        cache.budget = 0  # evict every run's labels
        cache.shrink()
        emptied = len(cache)
        cache.budget = 1 << 20
        before = sb.request_counts()
        return first, emptied, before, await _listed(cp, sb)

    first, emptied, before, again = asyncio.run(list_evict_list())

    assert emptied == 0
    assert again == first and {n for n, _ in again} >= set(names)  # the same reruns, same labels
    assert rpc_delta(sb, before)["GetRunDetails"] == len(sb.runs())  # each run's labels read again


def test_on_union_no_labels_are_kept_its_listings_carry_them() -> None:
    with start_sandbox(WORKLOAD, time_scale=0.5) as union:
        names = [n for i in range(3) for n in union.launch("ok", labels=_labels(200 + i))]
        union.wait_idle()
        cp = connected(union)

        async def list_and_read() -> list[tuple[str, dict[str, str]]]:
            listed = await _listed(cp, union)  # finds Union (label filters taken)
            for name in names:
                await cp.get_run(RunRef(union.project, union.domain, name))
            return listed

        listed = asyncio.run(list_and_read())

    assert cp.backend == "union"
    assert {n for n, _ in listed} >= set(names)
    cache: Any = cp._labels
    assert (len(cache), cache.held) == (0, 0)
