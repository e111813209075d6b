"""The operator page at ``/`` on the daemon's HTTP endpoint: one server-rendered HTML page.

What an operator asks on a normal day, answered without a terminal: is the daemon healthy,
which lineages are in flight and when is their next rerun due (and why), what was decided
recently and why (searchable by run name: ``/?run=NAME``), why would run X be rerun now
(``/?explain=NAME``: the live explanation, the same words as ``rerund explain``), which
budgets are in use, and did the reproduction checks match (with their diffs).

Design constraints, each tested in a real headless Chromium (tests/runtime/test_operator_page_live.py):

- no JavaScript and no build step: plain HTML forms and links; readable without CSS (the
  small inline style only adds spacing and colour);
- it refreshes itself (``<meta http-equiv="refresh">``), except while an explanation is shown
  (each refresh would cost the control-plane reads of a live explain);
- everything shown is escaped with ``html.escape`` — run names, reasons, error messages and
  diffs come from the control plane and user code — and no secret is shown: the settings
  appear in their ``public()`` form, decisions in their redacted form;
- every time is UTC ISO-8601 with a ``Z``.

``render_page`` is a pure function of a ``PageView`` (values only), so the page is tested
without a daemon as well as against a live one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from rerund.core.encode import for_terminal
from rerund.core.status import LineageState, Status, iso

__all__ = ["REFRESH_SECONDS", "PageView", "render_page"]

REFRESH_SECONDS = 10
MAX_QUERY = 200  # characters of a search term or run name taken from the query string

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:80em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3} code,pre{font-size:.9em} pre{background:#f7f7f7;padding:.75em;overflow-x:auto}
.ok{color:#176b1c}.bad{color:#a01818}.warn{color:#8a5a00} nav a{margin-right:1em}
"""


@dataclass(frozen=True)
class PageView:
    """Everything the page shows, as values."""

    status: Status
    ready: bool
    ready_reason: str
    last_sync: datetime | None
    settings: Mapping[str, Any]
    policies: Sequence[str]
    decisions: Sequence[Mapping[str, Any]]
    search: str = ""
    explain_run: str = ""
    explain_scope: str = ""
    explanation: Sequence[str] = ()
    explain_error: str = ""
    scopes: Sequence[str] = ()
    version: str = ""
    notes: Sequence[str] = field(default_factory=tuple)


def _e(value: object) -> str:
    # Controls HTML text may not carry (C0 but tab, LF, CR; DEL; C1) and the bidi overrides are
    # shown as \xNN / \uNNNN, by the helper every terminal output uses (``for_terminal``).
    return escape(for_terminal(value, keep="\t\n\r"), quote=True)


def _time(when: datetime | str | None) -> str:
    """UTC ISO-8601 to the second, with a ``Z`` (``2026-11-30T19:00:47Z``)."""
    if not when:
        return "—"
    if not isinstance(when, datetime):
        try:
            when = datetime.fromisoformat(str(when).replace("Z", "+00:00"))
        except ValueError:
            return _e(when)
    if when.tzinfo is None:
        return _e(when.isoformat())
    return _e(iso(when.replace(microsecond=0)))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> str:
    """A table of already-escaped cells, or a paragraph saying it is empty."""
    if not rows:
        return f"<p>{_e(empty)}</p>"
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _explain_link(run: str, scope: str) -> str:
    query = urlencode({"explain": run, "scope": scope})
    return f'<a href="/?{_e(query)}">explain</a>'


def _lineage_rows(states: Sequence[LineageState], *, due: bool) -> list[list[str]]:
    rows = []
    for s in states:
        scope = f"{s.project}/{s.domain}"
        cells = [
            f"<code>{_e(s.key)}</code>",
            _e(s.state),
            _e(s.attempt),
            _e(s.policy or "—"),
        ]
        if due:
            cells.append(_time(s.due))
        else:
            cells.append(_time(s.at))
        cells.append(_e(s.why))
        cells.append(_explain_link(s.latest_run or s.root, scope))
        rows.append(cells)
    return rows


_INCIDENT_HEADERS = ["fingerprint", "state", "opened (UTC)", "closed (UTC)", "failures", "held", "canaries"]
_INCIDENT_HEADERS += ["tasks", "example"]


def render_page(view: PageView) -> str:
    """The whole page as HTML text (pure)."""
    st = view.status
    refresh = "" if view.explain_run else f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
    ready = (
        f'<strong class="ok">ready</strong>: {_e(view.ready_reason)}'
        if view.ready
        else f'<strong class="bad">not ready</strong>: {_e(view.ready_reason)}'
    )
    s = view.settings
    dry = " <strong class=warn>DRY RUN: nothing is created</strong>" if s.get("dry_run") else ""
    parts: list[str] = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        refresh,
        "<title>rerund — operator page</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<header><h1>rerund</h1>",
        '<nav><a href="#in-flight">in flight</a><a href="#budgets">budgets</a>'
        '<a href="#exhausted">exhausted</a><a href="#recovered">recovered</a>'
        '<a href="#decisions">decisions</a><a href="#incidents">incidents</a>'
        '<a href="#reproductions">reproductions</a></nav></header>',
        '<section id="status"><h2>Status</h2><ul>',
        f"<li>{ready}{dry}</li>",
        f"<li>last successful resync: {_time(view.last_sync)}</li>",
        f"<li>control plane: <code>{_e(s.get('endpoint') or '(from the API key)')}</code>, "
        f"org <code>{_e(s.get('org'))}</code>, scopes {_e(', '.join(view.scopes) or '—')}</li>",
        f"<li>{len(view.policies)} policies in force: {_e(', '.join(view.policies) or '—')}</li>",
        f"<li>lineages: {len(st.in_flight)} in flight, {len(st.exhausted)} exhausted, "
        f"{len(st.recovered)} recovered, {st.ignored} ignored (since the ledger's window)</li>",
        f"<li>page generated at {_time(st.now)}; all times UTC"
        + (f"; refreshes every {REFRESH_SECONDS}s" if refresh else "; not refreshing while explaining")
        + (f"; rerund {_e(view.version)}" if view.version else "")
        + "</li>",
    ]
    parts += [f"<li class=warn>{_e(n)}</li>" for n in (*st.notes, *view.notes)]
    parts.append("</ul></section>")

    if view.explain_run:
        parts.append(
            '<section id="explain"><h2>Live explanation of '
            f"<code>{_e(view.explain_scope)}/{_e(view.explain_run)}</code></h2>"
        )
        if view.explain_error:
            parts.append(f'<p class="bad">{_e(view.explain_error)}</p>')
        else:
            parts.append(f"<pre>{_e(chr(10).join(view.explanation))}</pre>")
        parts.append('<p><a href="/">back to the overview</a></p></section>')

    parts.append(f'<section id="in-flight"><h2>Lineages in flight ({len(st.in_flight)})</h2>')
    parts.append(
        _table(
            ["lineage", "state", "attempt", "policy", "due (UTC)", "why", ""],
            _lineage_rows(st.in_flight, due=True),
            "No lineage is in flight: nothing is owed.",
        )
    )
    parts.append("</section>")

    parts.append(f'<section id="budgets"><h2>Budgets ({len(st.budgets)})</h2>')
    parts.append(
        _table(
            ["budget", "used", "limit", "window", "state", "a slot frees at (UTC)"],
            [
                [
                    f"<code>{_e(b.name)}</code>",
                    _e(b.used),
                    _e(b.max_reruns),
                    _e(b.to_json()["per"]),
                    '<strong class="bad">full: reruns are deferred</strong>' if b.full else "has room",
                    _time(b.frees_at),
                ]
                for b in st.budgets
            ],
            "No budget is configured.",
        )
    )
    parts.append("</section>")

    for anchor, title, states, empty in (
        ("exhausted", "Exhausted lineages", st.exhausted, "No lineage was exhausted."),
        ("recovered", "Recovered lineages", st.recovered, "No lineage has recovered yet."),
    ):
        parts.append(f'<section id="{anchor}"><h2>{title} ({len(states)})</h2>')
        parts.append(
            _table(
                ["lineage", "state", "attempt", "policy", "at (UTC)", "why", ""],
                _lineage_rows(states, due=False),
                empty,
            )
        )
        parts.append("</section>")

    parts.append('<section id="decisions"><h2>Recent decisions</h2>')
    parts.append(
        '<form method="get" action="/"><label>run name contains '
        f'<input type="search" name="run" value="{_e(view.search)}" maxlength="{MAX_QUERY}"></label> '
        '<button type="submit">search</button>'
        + (' <a href="/">clear</a>' if view.search else "")
        + "</form>"
    )
    if view.search:
        parts.append(
            f"<p>{len(view.decisions)} decision(s) about runs matching <code>{_e(view.search)}</code></p>"
        )
    parts.append(
        _table(
            ["at (UTC)", "decision", "run", "policy", "attempt", "reason", ""],
            [
                [
                    _time(d.get("at")),
                    _e(d.get("decision")),
                    f"<code>{_e(d.get('project'))}/{_e(d.get('domain'))}/{_e(d.get('run'))}</code>",
                    _e(d.get("policy") or "—"),
                    _e(d.get("attempt") if d.get("attempt") is not None else "—"),
                    _e(d.get("reason")),
                    _explain_link(str(d.get("run")), f"{d.get('project')}/{d.get('domain')}"),
                ]
                for d in view.decisions
            ],
            f"No decision recorded about a run matching {view.search!r}."
            if view.search
            else "No decision recorded yet.",
        )
    )
    parts.append("</section>")

    parts.append(f'<section id="incidents"><h2>Incidents ({len(st.incidents)})</h2>')
    parts.append(
        _table(
            [
                "fingerprint",
                "state",
                "opened (UTC)",
                "closed (UTC)",
                "failures",
                "held",
                "canaries",
                "tasks",
                "example",
            ],
            [
                [
                    f"<code>{_e(i.fingerprint)}</code>",
                    f'<strong class="{"bad" if i.state == "open" else "ok"}">{_e(i.state)}</strong>',
                    _time(i.opened_at),
                    _time(i.closed_at),
                    _e(i.failures),
                    _e(i.held),
                    _e(i.canaries),
                    _e(", ".join(i.tasks) or "—"),
                    f"<code>{_e(i.example)}</code>",
                ]
                for i in st.incidents
            ],
            "No incident: no failure opened the outage breaker.",
        )
    )
    parts.append("</section>")

    parts.append(f'<section id="reproductions"><h2>Reproduction checks ({len(st.reproductions)})</h2>')
    repro_rows = []
    for r in st.reproductions:
        css = "ok" if r.result == "match" else "bad"
        diff = (
            "<ul>" + "".join(f"<li><code>{_e(p)}</code>: {_e(m)}</li>" for p, m in r.diff) + "</ul>"
            if r.diff
            else "—"
        )
        repro_rows.append(
            [
                f"<code>{_e(r.check)}</code>",
                f'<strong class="{css}">{_e(r.result)}</strong>',
                _time(r.scheduled_for),
                f"<code>{_e(r.rerun or '—')}</code>",
                _e(r.reason),
                diff,
            ]
        )
    parts.append(
        _table(
            ["check", "last result", "scheduled for (UTC)", "rerun", "reason", "diff"],
            repro_rows,
            "No reproduction result recorded yet.",
        )
    )
    parts.append("</section>")
    parts.append(
        '<footer><p>Also: <a href="/decisions">/decisions</a> (JSON), <a href="/metrics">/metrics</a>, '
        '<a href="/healthz">/healthz</a>, <a href="/readyz">/readyz</a>, '
        '<a href="/status">/status</a> (JSON).</p></footer>'
    )
    parts.append("</body></html>\n")
    return "\n".join(p for p in parts if p)
