"""A leader partitioned from PostgreSQL without dying (issue 25): its connections go through a
TCP proxy (``tcp_proxy``) that is black-holed (nothing passes, nothing is refused) or cut
(reset). PostgreSQL must free the leader's advisory lock by itself within a bounded time so
another replica can take over; the partitioned leader, once it hears from the database again,
has lost the lead and its fenced writes are refused.

The black hole is the hard case: from PostgreSQL's side the proxy's socket stays up and answers
TCP keepalives (as PgBouncer or a cloud SQL proxy in front of the database would), so only a
server-side timeout on the lock's session can end it. The daemon-level scenario (the leader
exits 3, a follower takes over mid-storm, 0 duplicates, 0 missed) is in
tests/reliability/test_reliability_leadership.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from rerund.adapters.sqlstate.leadership import PostgresLeadership, postgres_engine
from rerund.errors import FencedError
from rerund.runtime.leader import EXIT_LOST_LEAD, Lead
from rerund.runtime.metrics import Metrics
from tcp_proxy import TcpProxy, proxied_url, tcp_proxy

from .support import migrated


@pytest.fixture
def proxy(pg_url: str) -> Iterator[TcpProxy]:
    with tcp_proxy(pg_url) as p:
        yield p


def _take_over(follower: PostgresLeadership, timeout: float) -> float:
    """Seconds until ``follower`` got the lead (trying every 0.5 s, as a replica does every 1 s);
    fails after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if follower.acquire():
            return time.monotonic() - start
        time.sleep(0.5)
    pytest.fail(f"the follower did not get the lead within {timeout:.0f}s: PostgreSQL still holds the "
                "partitioned leader's lock")  # fmt: skip


@pytest.mark.parametrize("partition", ["blackhole", "cut"])
def test_a_partitioned_leaders_lock_goes_to_a_follower_and_its_writes_are_fenced(
    pg_url: str, proxy: TcpProxy, partition: str
) -> None:
    migrated(pg_url)
    a = PostgresLeadership(postgres_engine(proxied_url(pg_url, proxy)), identity="a:1")
    b = PostgresLeadership(postgres_engine(pg_url), identity="b:2")
    try:
        assert a.acquire() is True
        a.confirm()
        assert b.acquire() is False
        getattr(proxy, partition)()
        took = _take_over(b, timeout=60)
        print(f"\n{partition}: the follower led {took:.1f}s after the partition")
        assert b.term == 2
        proxy.heal()
        # Back on the network, the old leader learns it lost: its lock's session was ended.
        assert a.held() is False
        with pytest.raises(FencedError, match=r"replica a:1 may not write as the leader: it does not lead"):
            a.confirm()
        assert b.held() is True
        assert b.leader() == ("b:2", 2)
    finally:
        proxy.heal()
        a.close()
        b.close()


@pytest.mark.parametrize("stuck", ["in-a-worker-thread", "on-the-event-loop"])
def test_a_black_holed_leader_that_cannot_confirm_its_lead_exits_3_at_once(
    pg_url: str, proxy: TcpProxy, stuck: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No error ever comes back from a black hole: the lead's check hangs in its worker thread,
    or the event loop itself hangs in a database call (the recorder writes the ledger from the
    loop). Either way the watchdog ends the process with 3 (here: records the status, and the
    process's end is the black hole's end for it: the proxy heals)."""
    migrated(pg_url)
    engine = postgres_engine(proxied_url(pg_url, proxy))
    leadership = PostgresLeadership(engine, identity="a:1")
    registry = CollectorRegistry()
    exits: list[int] = []

    def exit_process(status: int) -> None:
        exits.append(status)
        proxy.heal()

    lead = Lead(
        leadership, Metrics(registry), shared=True, check_interval=0.1, exit_process=exit_process,
        unproven_exit_s=2.0,
    )  # fmt: skip

    async def scenario() -> None:
        stopping = asyncio.Event()
        assert await lead.campaign(stopping)
        keeper = asyncio.create_task(lead.keep(stopping))
        await asyncio.sleep(0.5)  # a few good checks
        proxy.blackhole()
        if stuck == "on-the-event-loop":
            with engine.connect() as conn:
                while not exits:
                    conn.execute(text("SELECT 1"))  # blocks the loop until the "process ends"
        deadline = time.monotonic() + 30
        while not exits and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stopping.set()
        await keeper

    caplog.set_level(logging.ERROR, logger="rerund.leadership")
    try:
        asyncio.run(scenario())
    finally:
        proxy.heal()
        leadership.close()
    assert exits == [EXIT_LOST_LEAD]
    assert registry.get_sample_value("rerund_leader") == 0.0
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("this replica (a:1) exits with status 3 at once: it could not confirm its lead for ")
        and "limit 2s): the state database does not answer, or its own event loop is stuck" in m
        for m in messages
    ), messages


def test_a_black_holed_follower_says_it_cannot_reach_the_database_and_takes_over_once_healed(
    pg_url: str, proxy: TcpProxy
) -> None:
    """A follower's try of the lock that never comes back must not leave it "ready, following"
    forever: after the check's timeout ``/readyz`` says the database did not answer; the try
    still pending is waited for (not started again), and once the network heals it takes over."""
    migrated(pg_url)
    leader = PostgresLeadership(postgres_engine(pg_url), identity="a:1")
    follower = PostgresLeadership(postgres_engine(proxied_url(pg_url, proxy)), identity="b:2")
    lead = Lead(follower, Metrics(CollectorRegistry()), shared=True, retry_interval=0.1)
    seen: list[tuple[bool, str] | None] = []

    async def scenario() -> bool:
        stopping = asyncio.Event()
        campaign = asyncio.create_task(lead.campaign(stopping))
        await asyncio.sleep(1.0)  # following: the leader holds the lock
        seen.append(lead.ready())
        proxy.blackhole()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (lead.ready() or (True, ""))[0]:
            await asyncio.sleep(0.1)
        seen.append(lead.ready())
        leader.release()  # the lock is free, but the follower cannot hear it yet
        await asyncio.sleep(1.0)
        assert not lead.leading
        proxy.heal()
        return await asyncio.wait_for(campaign, 30)

    try:
        assert leader.acquire()
        assert asyncio.run(scenario()) is True
        assert follower.term == 2
    finally:
        proxy.heal()
        leader.close()
        follower.close()
    assert seen[0] == (True, "follower: a:1 leads (term 1); this replica takes over when its lock goes")
    assert seen[1] is not None and seen[1][0] is False
    assert seen[1][1].startswith(
        "the state database cannot be reached (trying the leader lock: no answer within"
    )
