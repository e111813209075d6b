"""The reruns an incident holds, as the page and ``rerund status`` show them (issue 27): each held
lineage's reason was written at its own decision ("holding 1 reruns", then 2, then 3 in one
pass), so side by side they disagreed. A held lineage's ``why`` now says the incident's current
count, read from the incident (the ledger's record, saved after the pass), not the stale
reason; the rest of the reason (the policy, the rerun, the time) is the recorded one."""

from __future__ import annotations

from datetime import timedelta
from html.parser import HTMLParser

from core.test_incidents import RULE, T0, failure, opened, rerun_of
from rerund.core.incidents import Breaker, Held, IncidentRecord
from rerund.core.status import compute_status
from rerund.core.times import iso
from rerund.runtime.page import PageView, render_page


def _held_rows(breaker: Breaker, roots: list[str]) -> list[dict]:
    """One pass: a rerun of each of ``roots`` held by the open incident, as the ledger records it."""
    rows = []
    for i, root in enumerate(roots):
        now = T0 + timedelta(seconds=5)
        held = breaker.gate(rerun_of(failure(root), now), f"p/d/{root}", f"p/d/{root}-retry-1", now)
        assert isinstance(held, Held)
        body = held.to_json()
        rows.append(
            {"id": i, "at": iso(now), "project": "p", "domain": "d", "run": root, "root": root, **body}
        )
    return rows


def _text(html: str) -> str:
    class Text(HTMLParser):
        parts: list[str] = []

        def handle_data(self, data: str) -> None:
            self.parts.append(data)

    parser = Text()
    parser.parts = []
    parser.feed(html)
    return "".join(parser.parts)


def test_every_held_lineage_shows_the_incidents_current_held_count_not_the_one_at_its_decision() -> None:
    breaker = Breaker(RULE)
    fp = opened(breaker)
    rows = _held_rows(breaker, ["ra", "rb", "rc"])
    assert [r["reason"].split(": ", 1)[1].split(",")[0] for r in rows] == [
        "holding 1 reruns",
        "holding 2 reruns",
        "holding 3 reruns",
    ]  # the recorded reasons, each true when written
    [record] = breaker.take_dirty()  # what the pass saves
    assert record.held == 3

    status = compute_status(now=T0 + timedelta(seconds=6), decisions=rows, incidents=[record])

    whys = {s.root: s.why for s in status.in_flight}
    assert set(whys) == {"ra", "rb", "rc"}
    for root, why in whys.items():
        assert why.startswith(f"incident {fp} open since {iso(record.opened_at)}: holding 3 reruns now"), why
        assert "holding 1 reruns" not in why and "holding 2 reruns" not in why
        assert f"reruns run {root!r} as '{root}-retry-1' when the incident closes" in why
    assert all("holding 3 reruns now" in s["why"] for s in status.to_json()["in_flight"])  # --format json

    page = _text(
        render_page(
            PageView(
                status=status,
                ready=True,
                ready_reason="ok",
                last_sync=T0,
                settings={},
                policies=["any"],
                decisions=rows,
                scopes=["p/d"],
            )
        )
    )
    assert page.count("holding 3 reruns now") == 3
    assert "holding 1 reruns" not in page.split("Recent decisions")[0]  # the lineages' section


def test_a_held_lineage_whose_incident_closed_says_so_instead_of_a_count() -> None:
    breaker = Breaker(RULE)
    fp = opened(breaker)
    rows = _held_rows(breaker, ["ra"])
    [record] = breaker.take_dirty()
    closed = IncidentRecord(
        **{**record.__dict__, "state": "closed", "closed_at": T0 + timedelta(seconds=40), "held": 0}
    )

    [state] = compute_status(now=T0 + timedelta(seconds=41), decisions=rows, incidents=[closed]).in_flight

    assert state.why.startswith(
        f"incident {fp} closed at 2026-12-05T08:00:40Z: its held reruns are released; policy 'any'"
    ), state.why
