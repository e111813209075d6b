"""Leader election and fencing on a real PostgreSQL: two replicas (two engines, as two processes
would have) compete for the lead; exactly one leads; the leader's session going away (terminated,
or the server stopped) makes it step down and the other take over; a stale leader's fenced write
is refused."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from postgres_support import PostgresServer
from rerund.adapters.sqlstate.leadership import PostgresLeadership, SoleLeader, postgres_engine
from rerund.adapters.sqlstate.ledger import PostgresLedger
from rerund.adapters.sqlstate.outbox import SqlOutbox
from rerund.core.records import RerunIssue
from rerund.core.runs import RunRef
from rerund.errors import FencedError, LedgerError, StateUnavailableError
from rerund.runtime.settings import Settings

from .support import migrated, terminate_leader


def _replica(pg_url: str, name: str) -> tuple[PostgresLeadership, Engine]:
    engine = postgres_engine(migrated(pg_url))
    return PostgresLeadership(engine, identity=name), engine


def test_exactly_one_of_two_replicas_leads(pg_url: str) -> None:
    a, _ = _replica(pg_url, "a:1")
    b, _ = _replica(pg_url, "b:2")
    try:
        assert a.acquire() is True
        assert b.acquire() is False
        assert (a.term, b.term) == (1, None)
        assert a.held() is True
        assert b.leader() == ("a:1", 1)
        with pytest.raises(FencedError, match=r"replica b:2 may not write as the leader: it does not lead"):
            b.confirm()
        a.confirm()  # the leader's fenced check passes
    finally:
        a.close()
        b.close()


def test_a_terminated_leader_session_hands_the_lead_to_the_other_replica(pg_url: str) -> None:
    a, _ = _replica(pg_url, "a:1")
    b, _ = _replica(pg_url, "b:2")
    try:
        assert a.acquire()
        assert not b.acquire()
        assert terminate_leader(pg_url) == 1
        assert b.acquire() is True  # the lock went with the session
        assert b.term == 2
        assert a.held() is False  # the old leader notices, and steps down for good
        assert a.acquire() is False
        assert b.leader() == ("b:2", 2)
    finally:
        a.close()
        b.close()


def test_a_stale_leaders_fenced_write_is_refused(pg_url: str) -> None:
    a, _ = _replica(pg_url, "a:1")
    b, _ = _replica(pg_url, "b:2")
    try:
        assert a.acquire()
        terminate_leader(pg_url)
        assert b.acquire()
        # ``a`` has not checked yet: it still believes it leads in term 1.
        assert a.term == 1
        with pytest.raises(
            FencedError,
            match=r"replica a:1 may not write as the leader: it led in term 1, the state records term 2 "
            r"of b:2; the write is refused",
        ):
            a.confirm()
        b.confirm()
    finally:
        a.close()
        b.close()


T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


def _issue(n: int) -> RerunIssue:
    return RerunIssue(RunRef("ml", "prod", f"r{n}"), f"r{n}-retry-1", f"r{n}", 1, "p", "run", "created")


@pytest.mark.parametrize("grouped", [False, True], ids=["one-write", "group-commit"])
def test_a_stale_leader_cannot_record_an_issue_or_put_an_event_before_it_noticed(
    pg_url: str, grouped: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The term is checked inside the write's own transaction: a leader whose term another
    replica took over has its issue record (at once, or in its group's flush) and its outbox put
    refused, though it has not checked its lead since."""
    a, a_engine = _replica(pg_url, "a:1")
    b, b_engine = _replica(pg_url, "b:2")
    fenced: list[FencedError] = []
    ledger = PostgresLedger(pg_url)
    ledger.fence_writes(a.fence, on_fenced=fenced.append)
    flushes: list[Callable[[], None]] = []
    if grouped:
        ledger.group_commits(flushes.append)
    outbox = SqlOutbox(a_engine, fence=a.fence, identity="a:1", term=lambda: a.term)
    try:
        assert a.acquire()
        ledger.record_issue(_issue(1), now=T0)  # leading: written
        assert outbox.put("e1", {"n": 1}, now=T0) is True
        for flush in flushes:
            flush()
        terminate_leader(pg_url)
        assert b.acquire()
        assert a.term == 1  # ``a`` has not noticed

        if grouped:
            assert ledger.record_issue(_issue(2), now=T0) is True  # decided new; written at the flush
            ledger.flush()  # from a timer: the refusal is logged, the group is not written
            assert re.search(
                r"replica a:1 may not write as the leader: it led in term 1, the state records term 2 "
                r"of b:2; the write is refused and this replica stops acting \(the 1 rows recorded "
                r"since the last write are not written\)",
                caplog.text,
            )
        else:
            with pytest.raises(
                LedgerError,
                match=r"replica a:1 may not write as the leader: it led in term 1, the state records "
                r"term 2 of b:2; the write is refused",
            ):
                ledger.record_issue(_issue(2), now=T0)
        with pytest.raises(FencedError, match=r"replica a:1 may not write as the leader: it led in term 1"):
            outbox.put("e2", {"n": 2}, now=T0)

        assert [i["target"] for i in ledger.issues()] == ["r1-retry-1"]
        assert [r["key"] for r in SqlOutbox(b_engine).rows()] == ["e1"]
        assert len(fenced) == 1
    finally:
        ledger.close()
        a.close()
        b.close()


def test_a_stopped_database_makes_the_leader_step_down_and_another_lead_when_it_returns(
    pg_url: str, postgres: object
) -> None:
    from postgres_support import PostgresServer

    assert isinstance(postgres, PostgresServer)
    a, _ = _replica(pg_url, "a:1")
    b, _ = _replica(pg_url, "b:2")
    try:
        assert a.acquire()
        assert not b.acquire()
        postgres.stop()
        try:
            assert a.held() is False
            with pytest.raises(StateUnavailableError, match=r"the state database cannot be reached \(trying"):
                b.acquire()
        finally:
            postgres.start()
        assert b.acquire() is True
        assert b.term == 2
        assert a.acquire() is False
    finally:
        a.close()
        b.close()


def test_a_file_state_has_one_replica_which_always_leads() -> None:
    sole = SoleLeader("here:1")
    assert sole.acquire() and sole.held() and sole.term == 0
    assert sole.leader() == ("here:1", 0)
    sole.confirm()


def test_releasing_the_lead_lets_a_follower_take_it(pg_url: str) -> None:
    a, _ = _replica(pg_url, "a:1")
    b, _ = _replica(pg_url, "b:2")
    try:
        assert a.acquire()
        a.release()
        assert b.acquire()
        assert b.term == 2
    finally:
        a.close()
        b.close()


def test_replicas_starting_together_create_the_tables_once_and_one_leads(pg_url: str) -> None:
    import threading

    replicas = [_replica(pg_url, f"r{i}:1")[0] for i in range(4)]
    results: dict[int, bool | Exception] = {}

    def start(i: int) -> None:
        try:
            results[i] = replicas[i].acquire()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=start, args=(i,)) for i in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results.values(), key=str) == [False, False, False, True], results
    finally:
        for r in replicas:
            r.close()


def test_the_password_only_in_the_state_password_file_serves_the_leadership_and_the_outbox(
    postgres: PostgresServer, pg_url: str, pg_password_file: Path
) -> None:
    """The daemon's engine for the leadership and the outbox takes ``state_password_file``'s
    password, as its ledger does (``Settings.state_password``): a URL without one still leads
    and puts events; without the file the same URL is refused."""
    url = migrated(pg_url).replace(f":{postgres.password}@", "@")
    settings = Settings(state=url, state_password_file=pg_password_file)
    engine = postgres_engine(str(settings.state), settings.state_password())
    lead = PostgresLeadership(engine, identity="a:1")
    box = SqlOutbox(engine, fence=lead.fence, identity="a:1", term=lambda: lead.term)
    try:
        assert lead.acquire()
        assert box.put("exhausted:p/d/r", {"n": 1}, now=datetime(2026, 12, 5, tzinfo=UTC))
        assert box.claim(
            "exhausted:p/d/r",
            now=datetime(2026, 12, 5, 0, 1, tzinfo=UTC),
            until=datetime(2026, 12, 5, 1, tzinfo=UTC),
        )
        assert lead.leader() == ("a:1", 1)
    finally:
        lead.close()

    no_password = PostgresLeadership(postgres_engine(url), identity="b:2")
    with pytest.raises(
        StateUnavailableError,
        match=r"the state database cannot be reached \(trying the leader lock: .*password",
    ):
        no_password.acquire()
    no_password.close()


def test_creates_fenced_at_once_share_one_term_check_and_a_takeover_stops_them_all(pg_url: str) -> None:
    """``Lead.fence`` before each rerun's create: the creates waiting at the same time share one
    check of the term (begun after each of them asked), not one transaction each; once another
    replica took over, every one of them is stopped and the refusal is counted once."""
    import asyncio

    from prometheus_client import CollectorRegistry
    from sqlalchemy import event

    from rerund.runtime.leader import Lead
    from rerund.runtime.metrics import Metrics
    from rerund.runtime.reconcile.issuer import Stopped

    a, a_engine = _replica(pg_url, "a:1")
    b, _ = _replica(pg_url, "b:2")
    checks: list[str] = []
    event.listen(
        a_engine,
        "before_cursor_execute",
        lambda conn, cursor, statement, *rest: checks.append(statement) if "FOR SHARE" in statement else None,
    )
    registry = CollectorRegistry()

    async def scenario() -> list[BaseException | None]:
        lead = Lead(a, Metrics(registry), shared=True)
        assert await lead.campaign(asyncio.Event())
        await asyncio.gather(*(lead.fence() for _ in range(20)))
        terminate_leader(pg_url)
        assert await asyncio.to_thread(b.acquire)
        return await asyncio.gather(*(lead.fence() for _ in range(20)), return_exceptions=True)

    try:
        stopped = asyncio.run(scenario())
    finally:
        a.close()
        b.close()
    assert len(checks) == 2, checks  # one for the first 20 creates, one for the next 20
    assert [type(s) for s in stopped] == [Stopped] * 20
    assert registry.get_sample_value("rerund_fenced_writes_total") == 1.0
