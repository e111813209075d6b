"""The operator page's live explanation (``/?explain=RUN``) under a wildcard scope (``*/*``):
a bare run name is looked up across the scopes, a concrete ``&scope=`` the wildcard covers is
taken (the page's own "explain" links pass the run's concrete scope), and a name in two scopes
lists the candidates — as ``rerund explain`` does (issue 28.2)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from daemon_support import DaemonProcess, http_get
from rerund.sandbox.testing import start_sandbox

pytestmark = pytest.mark.e2e

WORKLOAD = {
    "tasks": {
        "net.flaky": {
            "duration": "0.1s",
            "behaviour": ["fail"],
            "error": {"kind": "USER", "code": "ValueError", "message": "bad input"},
        }
    }
}
POLICIES = """\
apiVersion: rerund/v1
policies:
  - name: never
    match: {error: {kinds: [USER]}}
    retry: false
"""


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, DaemonProcess, str]]:
    work = tmp_path_factory.mktemp("page-scopes")
    policies = work / "policies.yaml"
    policies.write_text(POLICIES)
    with start_sandbox(WORKLOAD, time_scale=0.2) as sb:
        [name] = sb.launch("net.flaky")
        sb.launch("net.flaky", project="ml", domain="production", name="rtwice")
        sb.launch("net.flaky", name="rtwice")
        sb.wait_idle()
        daemon = DaemonProcess(work, sb, policies, extra={"scopes": ["*/*"]})
        daemon.start()
        try:
            daemon.wait_ready()
            yield sb, daemon, name
        finally:
            daemon.terminate()


def get(daemon: DaemonProcess, **query: str) -> str:
    code, body = http_get(f"{daemon.url}/?{urllib.parse.urlencode(query)}", timeout=30)
    assert code == 200, body
    return body


def test_a_bare_run_name_is_explained_under_a_wildcard_scope(page) -> None:
    sb, daemon, name = page
    html = get(daemon, explain=name)

    assert f"Live explanation of <code>{sb.project}/{sb.domain}/{name}</code>" in html
    assert "decision:   ignore" in html and "which scope" not in html


def test_a_concrete_scope_the_wildcard_covers_is_taken(page) -> None:
    sb, daemon, name = page
    html = get(daemon, explain=name, scope=f"{sb.project}/{sb.domain}")

    assert f"Live explanation of <code>{sb.project}/{sb.domain}/{name}</code>" in html
    assert "decision:   ignore" in html and "which scope" not in html


def test_a_run_name_in_two_scopes_lists_the_candidates(page) -> None:
    sb, daemon, _ = page
    html = get(daemon, explain="rtwice")

    assert (
        f"run name &#x27;rtwice&#x27; is in 2 scopes: {sb.project}/{sb.domain}/rtwice, ml/production/rtwice; "
        f"add &amp;scope=PROJECT/DOMAIN, one of: {sb.project}/{sb.domain}, ml/production"
    ) in html
