"""The operator page (``/``) and ``/status`` of a real daemon working a sandbox workload that
has every lineage state at once: a rerun due later (backoff), one deferred by a full budget,
a recovered lineage, an exhausted lineage, and a reproduction check that does not reproduce.

The page is read over HTTP and in a real headless Chromium (``tests/browser.py``): what an
operator sees, escaped, with no secret, and a screenshot for the README.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser import chromium_dump_dom, chromium_path, chromium_screenshot
from daemon_support import DaemonProcess, http_get, wait_until
from rerund.sandbox.testing import start_sandbox

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

WORKLOAD: dict[str, Any] = {
    "tasks": {
        "ok.flaky": {
            "duration": "0.2s",
            "behaviour": ["fail", "succeed"],
            "error": {
                "kind": "SYSTEM",
                "code": "ConnectionResetError",
                "message": "Connection reset by peer",
            },
        },
        "bad.always": {
            "duration": "0.2s",
            "behaviour": ["fail"],
            "error": {"kind": "SYSTEM", "code": "TimeoutError", "message": "download timed out <after> 300s"},
        },
        "slow.later": {
            "duration": "0.2s",
            "behaviour": ["fail"],
            "error": {"kind": "SYSTEM", "code": "OSError", "message": "disk quota exceeded"},
        },
        "budget.job": {
            "duration": "0.2s",
            "behaviour": ["fail", "succeed"],
            "error": {"kind": "SYSTEM", "code": "HTTPError", "message": "503 Service Unavailable"},
        },
        "rand.metric": {"duration": "0.2s", "outputs": {"loss": {"random": [0.1, 0.2]}}},
    }
}

POLICIES = """\
apiVersion: rerund/v1
defaults:
  backoff: {initial: 100ms, max: 1s, jitter: 0}
policies:
  - name: later
    match: {tasks: ['slow.*']}
    retry: {max_attempts: 3, backoff: {initial: 1h, max: 2h, jitter: 0}}
  - name: budgeted
    match: {tasks: ['budget.*']}
    retry: {max_attempts: 3, budget: {max_reruns: 1, per: 1h}}
  - name: once
    match: {tasks: ['bad.*']}
    retry: {max_attempts: 1}
  - name: transient
    match: {tasks: ['ok.*']}
    retry: {max_attempts: 3, env: {API_TOKEN: hunter2-secret}}
reproductions:
  - name: loss-check
    schedule: "* * * * *"
    source: {task: rand.metric}
"""

WEBHOOK = "https://hooks.example.invalid/services/T000/B000/very-secret-webhook-token"


class Live:
    def __init__(self, sb: Any, daemon: DaemonProcess, runs: dict[str, list[str]]) -> None:
        self.sb = sb
        self.daemon = daemon
        self.runs = runs

    def status(self) -> dict[str, Any]:
        code, body = http_get(f"{self.daemon.url}/status", timeout=10)
        assert code == 200, body
        result: dict[str, Any] = json.loads(body)
        return result

    def page(self, query: str = "") -> str:
        code, body = http_get(f"{self.daemon.url}/{query}", timeout=30)
        assert code == 200, body
        return body


def _complete(status: dict[str, Any], runs: dict[str, list[str]]) -> bool:
    states = {s["root"]: s["state"] for key in ("in_flight", "recovered", "exhausted") for s in status[key]}
    budget_roots = [states.get(r) for r in runs["budget.job"]]
    return (
        states.get(runs["ok.flaky"][0]) == "recovered"
        and states.get(runs["bad.always"][0]) == "exhausted"
        and states.get(runs["slow.later"][0]) == "due"
        and sorted(s or "" for s in budget_roots) == ["deferred", "recovered"]
        and [r["result"] for r in status["reproductions"]] == ["mismatch"]
    )


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    work = tmp_path_factory.mktemp("operator-page")
    with start_sandbox(WORKLOAD) as sb:
        reference = sb.launch("rand.metric")[0]
        sb.wait_for(reference)
        runs = {task: sb.launch(task) for task in ("ok.flaky", "bad.always", "slow.later")}
        runs["budget.job"] = sb.launch("budget.job", count=2)
        policies = work / "policies.yaml"
        policies.write_text(POLICIES)
        daemon = DaemonProcess(work, sb, policies, extra={"notify": {"webhook": WEBHOOK, "retries": 0}})
        daemon.start()
        try:
            lv = Live(sb, daemon, runs)
            wait_until(
                "every lineage state on /status", lambda: _complete(lv.status(), runs), 120, daemon.logs
            )
            yield lv
        finally:
            daemon.terminate(timeout=15)


def test_status_shows_due_deferred_recovered_exhausted_lineages_budgets_and_a_mismatch(live: Live) -> None:
    st = live.status()
    by_root = {s["root"]: s for key in ("in_flight", "recovered", "exhausted") for s in st[key]}
    slow = by_root[live.runs["slow.later"][0]]
    assert slow["state"] == "due" and slow["policy"] == "later" and slow["due"].endswith("Z")
    assert "reruns run" in slow["why"] and "due at" in slow["why"]
    deferred = next(by_root[r] for r in live.runs["budget.job"] if by_root[r]["state"] == "deferred")
    assert "budget 'budgeted' has used 1 of 1 reruns per 1h" in deferred["why"]
    assert deferred["due"].endswith("Z")
    assert by_root[live.runs["ok.flaky"][0]]["why"].endswith("recovered at attempt 1")
    exhausted = by_root[live.runs["bad.always"][0]]
    assert "gives up" in exhausted["why"] and "max_attempts=1" in exhausted["why"]
    budgets = {b["budget"]: b for b in st["budgets"]}
    assert budgets["budgeted"] == {
        "budget": "budgeted",
        "used": 1,
        "max_reruns": 1,
        "per": "1h",
        "full": True,
        "frees_at": budgets["budgeted"]["frees_at"],
    }
    [repro] = st["reproductions"]
    assert repro["check"] == "loss-check" and repro["result"] == "mismatch"
    assert [d["path"] for d in repro["diff"]] == ["outputs.loss"]


def test_the_page_shows_every_section_escaped_and_without_secrets(live: Live) -> None:
    html = live.page()
    assert '<meta http-equiv="refresh" content="10">' in html
    for heading in (
        "Lineages in flight (2)",
        "Budgets (1)",
        "Exhausted lineages (1)",
        "Recovered lineages (2)",
        "Recent decisions",
        "Reproduction checks (1)",
    ):
        assert f"{heading}</h2>" in html, heading
    assert "ready</strong>" in html
    assert "full: reruns are deferred" in html
    assert "outputs.loss</code>" in html
    # user text is escaped: the error message with <after> only appears escaped (in explain)
    assert "<after>" not in html
    for secret in ("very-secret-webhook-token", "hunter2-secret"):
        assert secret not in html
    assert not re.search(r"\d\d:\d\d:\d\d\+00:00", html), "times are shown with a Z"


def test_the_page_searches_decisions_by_run_name(live: Live) -> None:
    root = live.runs["bad.always"][0]
    html = live.page("?" + urllib.parse.urlencode({"run": root[:8]}))
    assert f'value="{root[:8]}"' in html
    rows = re.findall(r"<tr><td>[^<]*</td><td>(\w+)</td><td><code>([^<]+)</code>", html)
    assert rows and all(root in run for _, run in rows)
    assert {kind for kind, _ in rows} == {"rerun", "give_up"}
    nothing = live.page("?run=no-such-run-%3Cb%3E")
    assert "No decision recorded about a run matching &#x27;no-such-run-&lt;b&gt;&#x27;." in nothing


def test_the_page_explains_a_run_live_with_its_lineage(live: Live) -> None:
    root = live.runs["bad.always"][0]
    html = live.page("?" + urllib.parse.urlencode({"explain": root}))
    assert "http-equiv" not in html, "no refresh while an explanation is shown"
    assert f"Live explanation of <code>demo/development/{root}</code>" in html
    assert "1 rerun(s) of lineage" in html and "the decision below was carried out already" in html
    explanation = html[html.index("<pre>") : html.index("</pre>")]
    assert "state:      lineage exhausted" in explanation, explanation
    assert "download timed out &lt;after&gt; 300s" in html
    missing = live.page("?explain=nosuchrun")
    assert "no run &#x27;nosuchrun&#x27; in demo/development" in missing


def test_the_page_in_headless_chromium_reads_without_css_and_is_screenshotted(live: Live) -> None:
    if chromium_path() is None:
        pytest.skip("chromium is not installed: `make browser-tools` installs Debian's chromium")
    dom = chromium_dump_dom(live.daemon.url + "/")
    assert "Lineages in flight (2)" in dom
    assert "Reproduction checks (1)" in dom
    assert "full: reruns are deferred" in dom
    assert "<script" not in dom
    search = chromium_dump_dom(live.daemon.url + "/?run=" + live.runs["ok.flaky"][0])
    assert "decision(s) about runs matching" in search
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "operator-page.png"
    chromium_screenshot(live.daemon.url + "/", shot)
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerund_status_shows_the_same_lineages_as_the_daemon_from_any_machine(live: Live, capsys) -> None:
    from rerund.cli import main

    assert main(["status", "--config", str(live.daemon.config), "--format", "json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    daemon = live.status()

    def states(st: dict[str, Any]) -> dict[str, tuple[str, str]]:
        return {
            s["root"]: (s["state"], s["why"]) for k in ("in_flight", "recovered", "exhausted") for s in st[k]
        }

    assert states(cli) == states(daemon)
    assert cli["budgets"] == daemon["budgets"]
    assert [r["result"] for r in cli["reproductions"]] == ["mismatch"]

    assert main(["status", "--config", str(live.daemon.config)]) == 0
    out = capsys.readouterr().out
    for heading in (
        "In flight (2):",
        "Budgets (1):",
        "Exhausted (1):",
        "Recovered (2):",
        "Reproduction checks (1):",
    ):
        assert f"\n{heading}\n" in out, heading
    slow = live.runs["slow.later"][0]
    [row] = [line for line in out.splitlines() if f"demo/development/{slow} " in line]
    assert row.split()[1:4] == ["due", "1", "later"] and "Z  policy 'later' reruns run" in row
    assert "  budgeted  1     1      1h      full" in out
    assert "    loss-check: outputs.loss: " in out


def test_rerund_status_without_the_ledger_says_what_it_cannot_know(
    live: Live, capsys, tmp_path: Path
) -> None:
    from rerund.cli import main

    missing = tmp_path / "elsewhere.db"
    assert (
        main(["status", "--config", str(live.daemon.config), "--state", str(missing), "--format", "json"])
        == 0
    )
    st = json.loads(capsys.readouterr().out)
    assert st["notes"] == [
        f"no ledger at {missing}: lineages come from the control plane alone (no reasons, no pending due "
        "times); pass --state PATH of the daemon's ledger"
    ]
    recovered = {s["root"] for s in st["recovered"]}
    assert live.runs["ok.flaky"][0] in recovered
