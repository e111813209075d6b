"""The outbox: each event key is delivered once — across a restart (SQLite file state), across two
replicas and a failover (PostgreSQL) — and a failed send is retried by whoever leads. Real
databases, the real webhook notifier, a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from rerund.adapters.ledger import Ledger
from rerund.adapters.sqlstate.leadership import PostgresLeadership, postgres_engine
from rerund.adapters.sqlstate.outbox import SqlOutbox, sqlite_engine
from rerund.adapters.webhook import WebhookNotifier
from rerund.core.outbox import exhausted_key, mismatch_key
from rerund.errors import FencedError
from rerund.runtime.metrics import Metrics
from rerund.runtime.outbox import OutboxSender

from .support import Receiver, migrated, terminate_leader

T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


_METRICS: dict[CollectorRegistry, Metrics] = {}


def _sender(outbox: SqlOutbox, url: str, now: list[datetime], registry: CollectorRegistry) -> OutboxSender:
    """A sender as the daemon builds it; one ``Metrics`` per registry (one per replica)."""
    if registry not in _METRICS:
        _METRICS[registry] = Metrics(registry)
    metrics = _METRICS[registry]
    notifier = WebhookNotifier(url, timeout=2.0, retries=0)
    return OutboxSender(outbox, notifier, metrics=metrics, clock=lambda: now[0])


def _sent(registry: CollectorRegistry, result: str = "sent") -> float:
    return registry.get_sample_value("rerund_notifications_total", {"result": result}) or 0.0


def test_an_event_put_again_after_a_restart_is_not_sent_again_on_a_file_state(
    tmp_path: Path, receiver: Receiver
) -> None:
    db = tmp_path / "rerund.db"
    key = exhausted_key("p", "d", "abc123")
    now = [T0]
    first = SqlOutbox(sqlite_engine(db))
    assert first.put(key, {"text": "lineage abc123 exhausted"}, now=T0) is True
    assert first.put(key, {"text": "lineage abc123 exhausted"}, now=T0) is False
    registry = CollectorRegistry()
    assert asyncio.run(_sender(first, receiver.url, now, registry).send_due()) == 1
    first.close()

    restarted = SqlOutbox(sqlite_engine(db))  # the same file after a restart
    assert restarted.put(key, {"text": "lineage abc123 exhausted"}, now=T0 + timedelta(minutes=1)) is False
    now[0] = T0 + timedelta(minutes=1)
    assert asyncio.run(_sender(restarted, receiver.url, now, CollectorRegistry()).send_due()) == 0
    assert receiver.per_key() == {key: 1}
    assert receiver.received[0]["event_id"] == key
    assert _sent(registry) == 1.0
    assert restarted.pending() == 0


def _replica(pg_url: str, name: str) -> tuple[PostgresLeadership, SqlOutbox]:
    engine = postgres_engine(migrated(pg_url))
    lead = PostgresLeadership(engine, identity=name)
    return lead, SqlOutbox(engine, fence=lead.fence, identity=name, term=lambda: lead.term)


def test_two_replicas_and_a_failover_send_each_event_once(pg_url: str, receiver: Receiver) -> None:
    (lead_a, box_a), (lead_b, box_b) = _replica(pg_url, "a:1"), _replica(pg_url, "b:2")
    now = [T0]
    reg_a, reg_b = CollectorRegistry(), CollectorRegistry()
    keys = [exhausted_key("p", "d", f"root{i}") for i in range(3)]
    try:
        assert lead_a.acquire() and not lead_b.acquire()
        # The leader puts the events; the follower may not (its put is fenced).
        assert [box_a.put(k, {"n": k}, now=T0) for k in keys] == [True, True, True]
        with pytest.raises(FencedError, match=r"replica b:2 may not write as the leader: it does not lead"):
            box_b.put(keys[0], {"n": keys[0]}, now=T0)
        # The follower's sender may not send: its claim is fenced.
        with pytest.raises(FencedError, match=r"replica b:2 may not write as the leader: it does not lead"):
            asyncio.run(_sender(box_b, receiver.url, now, reg_b).send_due())
        assert asyncio.run(_sender(box_a, receiver.url, now, reg_a).send_due()) == 3

        # Failover: the new leader puts the same events again and one new one.
        terminate_leader(pg_url)
        assert lead_b.acquire()
        repro = mismatch_key("nightly", "2026-12-05T08:00:00+00:00")
        assert [box_b.put(k, {"n": k}, now=T0) for k in [*keys, repro]] == [False, False, False, True]
        now[0] = T0 + timedelta(seconds=1)
        assert asyncio.run(_sender(box_b, receiver.url, now, reg_b).send_due()) == 1
        # The stale leader, not told yet, can neither put an event nor send one.
        with pytest.raises(FencedError, match=r"replica a:1 may not write as the leader: it led in term 1"):
            box_a.put("late:a", {"n": "a"}, now=now[0])
        assert box_b.put("late:x", {"n": "x"}, now=now[0]) is True  # due: the stale sender's claim is fenced
        with pytest.raises(FencedError, match=r"replica a:1 may not write as the leader: it led in term 1"):
            asyncio.run(_sender(box_a, receiver.url, now, reg_a).send_due())
        assert receiver.per_key() == {**dict.fromkeys(keys, 1), repro: 1}
        assert (_sent(reg_a), _sent(reg_b)) == (3.0, 1.0)
    finally:
        lead_a.close()
        lead_b.close()


def test_a_failed_send_is_retried_by_the_next_leader(pg_url: str) -> None:
    receiver = Receiver(fail_first=1)
    (lead_a, box_a), (lead_b, box_b) = _replica(pg_url, "a:1"), _replica(pg_url, "b:2")
    now = [T0]
    reg_a, reg_b = CollectorRegistry(), CollectorRegistry()
    key = exhausted_key("p", "d", "abc")
    try:
        assert lead_a.acquire()
        box_a.put(key, {"text": "exhausted"}, now=T0)
        assert asyncio.run(_sender(box_a, receiver.url, now, reg_a).send_due()) == 0
        assert _sent(reg_a, "failed") == 1.0
        [row] = box_a.rows()
        assert row["attempts"] == 1 and row["delivered_at"] is None
        assert "HTTP 500" in row["last_error"]
        lead_a.release()  # a clean handover
        assert lead_b.acquire()
        # Not before its retry time ...
        assert asyncio.run(_sender(box_b, receiver.url, now, reg_b).send_due()) == 0
        # ... then once.
        now[0] = T0 + timedelta(seconds=6)
        assert asyncio.run(_sender(box_b, receiver.url, now, reg_b).send_due()) == 1
        now[0] = T0 + timedelta(minutes=30)
        assert asyncio.run(_sender(box_b, receiver.url, now, reg_b).send_due()) == 0
        assert receiver.per_key() == {key: 1}
        assert box_b.pending() == 0
    finally:
        receiver.close()
        lead_a.close()
        lead_b.close()


def test_delivered_events_older_than_the_retention_are_pruned_and_pending_ones_kept(tmp_path: Path) -> None:
    box = SqlOutbox(sqlite_engine(tmp_path / "rerund.db"))
    box.put("a", {"n": 1}, now=T0)
    box.put("b", {"n": 2}, now=T0)
    assert box.claim("a", now=T0, until=T0 + timedelta(minutes=2))
    box.delivered("a", now=T0)
    assert box.prune(T0 + timedelta(days=1)) == 1
    assert [r["key"] for r in box.rows()] == ["b"]
    assert box.pending() == 1


def test_an_event_put_with_a_clock_ahead_of_the_senders_is_due_at_once(tmp_path: Path) -> None:
    """The putter's time (a decision's, off the control plane's answers) may run ahead of the
    sender's clock: a fresh event is due at once, not at the next poll; a failed one waits for
    its retry time."""
    outbox = SqlOutbox(sqlite_engine(tmp_path / "rerund.db"))
    now = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
    assert outbox.put("incident-close:x", {"text": "closed"}, now=now + timedelta(seconds=2))
    assert [i.key for i in outbox.due(now)] == ["incident-close:x"]
    assert outbox.claim("incident-close:x", now=now, until=now + timedelta(minutes=2))
    assert outbox.due(now) == []  # claimed: its lease runs
    outbox.failed("incident-close:x", "503", retry_at=now + timedelta(seconds=5), now=now)
    assert outbox.due(now + timedelta(seconds=4)) == []
    assert [i.key for i in outbox.due(now + timedelta(seconds=5))] == ["incident-close:x"]


def test_the_first_uses_of_a_file_outbox_from_two_threads_both_find_the_table(tmp_path: Path) -> None:
    import threading

    for attempt in range(20):
        outbox = SqlOutbox(sqlite_engine(tmp_path / f"r{attempt}.db"))
        errors: list[BaseException] = []
        start = threading.Barrier(3)

        def use(outbox: SqlOutbox = outbox, errors: list[BaseException] = errors) -> None:
            start.wait()
            try:
                outbox.pending()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=use) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []


@pytest.mark.parametrize("backend", ["file", "postgresql"])
def test_a_clean_stop_sends_the_events_put_just_before_it(
    tmp_path: Path, backend: str, receiver: Receiver, request: pytest.FixtureRequest
) -> None:
    """The stop sequence sends what is due once more, within its deadline, before the lead is
    released: an event put just before the stop (the sender waiting for its next poll) is
    delivered before ``run`` returns."""
    from rerund.app import App

    from .support import FOLLOWER_POLICIES, Clock, FakeControlPlane, daemon_settings

    if backend == "postgresql":
        state = migrated(request.getfixturevalue("pg_url"))
        outbox = SqlOutbox(postgres_engine(state))
    else:
        state = str(tmp_path / "rerund.db")
        Ledger(Path(state)).close()  # the daemon's file, as a previous run left it
        outbox = SqlOutbox(sqlite_engine(Path(state)))
    settings = daemon_settings(
        tmp_path, FOLLOWER_POLICIES, http="off", state=state, notify={"webhook": receiver.url, "retries": 0}
    )
    app = App(settings, control_plane=FakeControlPlane(Clock(T0)), clock=Clock(T0), install_signals=False)
    outbox.put("first", {"n": 0}, now=T0)  # sent by the sender's first pass

    async def scenario() -> int:
        run = asyncio.create_task(app.run())
        for _ in range(300):
            if receiver.per_key()["first"] or run.done():
                break
            await asyncio.sleep(0.05)
        assert receiver.per_key()["first"] == 1
        await asyncio.to_thread(outbox.put, "just-before-the-stop", {"n": 1}, now=T0)
        app.request_stop()
        return await run

    try:
        assert asyncio.run(scenario()) == 0
        assert receiver.per_key() == {"first": 1, "just-before-the-stop": 1}
        assert [r["delivered_at"] is not None for r in outbox.rows()] == [True, True]
    finally:
        outbox.close()
