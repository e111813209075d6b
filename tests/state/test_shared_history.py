"""History in one place: with a shared (PostgreSQL) state, ``/decisions`` and the operator
page list the decisions in the shared ledger on every replica, followers too; with a file
state ``/decisions`` stays this process's own list, from memory."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from postgres_support import PostgresServer
from rerund.adapters.sqlstate.ledger import PostgresLedger
from rerund.core.model import GiveUp, Ignore
from rerund.core.times import iso
from rerund.runtime.reconcile import public_decision

from .support import T0, follower, get


def _record_as_the_leader_does(pg_url: str) -> list[dict[str, Any]]:
    """Two decisions in the shared ledger, as the leading replica records them; returned as
    the leader's own ``/decisions`` lists them from memory (newest first)."""
    ledger = PostgresLedger(pg_url)
    listed: list[dict[str, Any]] = []
    try:
        gave_up = GiveUp(
            reason="lineage exhausted", source_run="train-7", root="train-1", policy="p", attempt=2
        )
        ignored = Ignore(reason="no policy matches", source_run="eval-3", root="eval-3")
        for at, run, root, decision in (
            (T0, "train-7", "train-1", gave_up),
            (T0 + timedelta(seconds=1), "eval-3", "eval-3", ignored),
        ):
            body = public_decision(decision)
            assert ledger.record_decision(
                project="ml", domain="prod", run=run, root=root, decision=body, now=at
            )
            entry = {"at": iso(at), "project": "ml", "domain": "prod", "run": run, "root": root}
            listed.insert(0, {**entry, **body})
    finally:
        ledger.close()
    return listed


def test_a_follower_lists_the_decisions_of_the_shared_ledger_on_decisions_and_its_page(
    tmp_path: Path, pg_url: str
) -> None:
    with follower(tmp_path, pg_url) as (port, _):
        listed = _record_as_the_leader_does(pg_url)
        ready = get(port, "/readyz")
        decisions = get(port, "/decisions")
        newest = get(port, "/decisions?limit=1")
        page = get(port, "/")
    assert ready is not None and "follower" in ready[1]
    assert decisions is not None and decisions[0] == 200, decisions
    body = json.loads(decisions[1])
    z = lambda at: at.isoformat().replace("+00:00", "Z")  # noqa: E731
    assert [(d["run"], d["root"], d["decision"], d["at"]) for d in body["decisions"]] == [
        ("eval-3", "eval-3", "ignore", z(T0 + timedelta(seconds=1))),  # newest first
        ("train-7", "train-1", "give_up", z(T0)),
    ]
    assert body["decisions"] == listed  # as the leader lists its own from memory (a file state's)
    assert set(body) == {"decisions", "pending", "settings", "notes"}
    # what is owed is the leader's memory, not the ledger's: a follower says so, not "nothing"
    assert body["pending"] is None
    assert re.fullmatch(
        r"pending is null: this replica \(.+:\d+\) follows; the work still owed is held in the memory "
        r"of the leader: read its /decisions",
        body["notes"][0],
    ), body["notes"]
    assert newest is not None and [d["run"] for d in json.loads(newest[1])["decisions"]] == ["eval-3"]
    assert page is not None and page[0] == 200 and "train-7" in page[1] and "eval-3" in page[1]


def test_a_shared_ledger_that_cannot_be_read_leaves_decisions_with_this_replicas_own_and_a_note(
    tmp_path: Path, postgres: PostgresServer, pg_url: str
) -> None:
    with follower(tmp_path, pg_url) as (port, _):
        _record_as_the_leader_does(pg_url)
        postgres.stop()
        try:
            decisions = get(port, "/decisions")
        finally:
            postgres.start()
    assert decisions is not None and decisions[0] == 200, decisions
    body = json.loads(decisions[1])
    assert body["decisions"] == []  # this follower decided nothing itself
    note, pending_note = body["notes"]
    assert pending_note.startswith("pending is null: this replica")
    assert note.startswith("the shared ledger cannot be read (ledger postgresql://")
    assert note.endswith(
        "); these are this replica's own recent decisions, from memory "
        "(/readyz says whether the state database answers)"
    )
    assert postgres.password not in note
