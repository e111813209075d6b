"""rerund's ``http_proxy`` through the real flyte SDK: every control-plane request — the RPCs, the
WatchRuns stream, the OAuth2 metadata and token requests — goes through a real forward proxy
(``forward_proxy.ForwardProxy``), with the proxy's credentials, and never around it.

The control plane's endpoint is an address where nothing listens (``hold_closed_port``); only the
proxy routes it to the sandbox. A request that bypassed the proxy would be refused, so these
tests fail if any request does (as every RPC did before ``export_http_proxy``: flyte 2.12.1's
``http_proxy_url`` reaches none of its HTTP clients)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from forward_proxy import ForwardProxy, hold_closed_port
from rerund.adapters import http_proxy
from rerund.adapters.flyte.connection import Connection
from rerund.adapters.flyte.control_plane import FlyteControlPlane
from rerund.adapters.http_proxy import NO_PROXY_VARIABLES, PROXY_VARIABLES, export_http_proxy
from rerund.core.runs import RerunRequest, RunRef, RunSummary
from rerund.errors import TransientControlPlaneError
from rerund.sandbox.testing import SandboxHandle, start_sandbox

pytestmark = pytest.mark.e2e

USER, PASSWORD = "egress", "pr0xy-pa55word"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SINCE = datetime.now(UTC) - timedelta(hours=1)
WORKLOAD = {
    "tasks": {
        "net.flaky": {
            "duration": "0.1s",
            "behaviour": ["fail", "succeed"],
            "error": {"kind": "SYSTEM", "code": "ConnectionResetError", "message": "connection reset"},
        },
    }
}


@pytest.fixture(autouse=True)
def operator_env() -> Iterator[None]:
    """No proxy variable from the machine running the tests; whatever a test exports is undone
    (``monkeypatch.delenv`` of an absent variable would not undo a later export). Set up before,
    so torn down after, a test's own ``monkeypatch``."""
    names = (*PROXY_VARIABLES, *NO_PROXY_VARIABLES, "ALL_PROXY", "all_proxy")
    before = {name: os.environ.pop(name, None) for name in names}
    http_proxy._operator = None
    try:
        yield
    finally:
        http_proxy._operator = None
        for name, value in before.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


class BehindProxy:
    """A sandbox reachable only through a proxy: ``endpoint`` is routed by ``proxy`` alone."""

    def __init__(self, sb: SandboxHandle, proxy: ForwardProxy, port: int) -> None:
        self.sb, self.proxy, self.port = sb, proxy, port
        scheme = "https" if sb.tls is not None else "http"
        self.endpoint = f"{scheme}://127.0.0.1:{port}"
        self.target = f"127.0.0.1:{port}"

    def control_plane(self, proxy_url: str | None = None) -> FlyteControlPlane:
        sb = self.sb
        conn = Connection(
            endpoint=self.endpoint,
            org=sb.org,
            insecure=sb.tls is None,
            api_key=sb.api_key if sb.auth is not None else None,
            ca_cert_file=sb.ca_cert if sb.tls is not None else None,
            http_proxy=self.proxy.url if proxy_url is None else proxy_url,
        )
        cp = FlyteControlPlane(connection=conn, rpc_timeout=10)
        asyncio.run(cp.connect())
        return cp


def _behind_proxy(*, secure: bool, credentials: tuple[str, str] = (USER, PASSWORD)) -> Iterator[BehindProxy]:
    with (
        start_sandbox(WORKLOAD, auth=secure, tls=secure, time_scale=0.5) as sb,
        hold_closed_port() as port,
        ForwardProxy(credentials=credentials, routes={("127.0.0.1", port): ("127.0.0.1", sb.port)}) as proxy,
    ):
        yield BehindProxy(sb, proxy, port)


@pytest.fixture
def secure() -> Iterator[BehindProxy]:
    """``rerund sandbox --auth --tls`` behind an authenticating proxy."""
    yield from _behind_proxy(secure=True)


@pytest.fixture
def plain() -> Iterator[BehindProxy]:
    """A plain-HTTP sandbox behind an authenticating proxy (requests forwarded one by one)."""
    yield from _behind_proxy(secure=False)


def _first_watched(cp: FlyteControlPlane, sb: SandboxHandle) -> RunSummary:
    async def first() -> RunSummary:
        async for summary in cp.watch(sb.project, sb.domain):
            return summary
        raise AssertionError("the watch ended without a run")

    result: RunSummary = asyncio.run(asyncio.wait_for(first(), timeout=30))
    return result


def _rerun_one_failure(cp: FlyteControlPlane, sb: SandboxHandle) -> dict[str, Any]:
    [name] = sb.launch("net.flaky")
    sb.wait_idle()

    async def rerun() -> RunRef:
        [failed] = [r for r in await cp.list_failed(sb.project, sb.domain, since=SINCE) if r.ref.name == name]
        facts = await cp.read_failure(failed)
        assert facts.error.code == "ConnectionResetError"
        return await cp.create_rerun(RerunRequest(source=failed.ref, name=f"{name}-r1"))

    ref = asyncio.run(rerun())
    return sb.wait_for(ref.name)


def test_the_endpoint_is_reachable_only_through_the_proxy(secure: BehindProxy) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", secure.port), timeout=5).close()


def test_rpcs_the_watch_stream_and_token_requests_go_through_the_proxy_with_its_credentials(
    secure: BehindProxy,
) -> None:
    sb, proxy = secure.sb, secure.proxy
    cp = secure.control_plane()

    rerun = _rerun_one_failure(cp, sb)
    watched = _first_watched(cp, sb)

    assert rerun["phase"] == "SUCCEEDED" and rerun["relation"]["run"] == rerun["name"].removesuffix("-r1")
    assert watched.ref.project == sb.project
    # TLS end to end: the proxy sees tunnels to the endpoint, never anything else
    assert proxy.tunnels[secure.target] >= 1 and set(proxy.tunnels) == {secure.target}
    assert proxy.refused == 0 and set(proxy.authorizations) == {BASIC}
    # the token endpoint the sandbox names is on the endpoint's (closed) port: only the proxy reaches it
    assert sb.stats()["auth"]["tokens_issued"] >= 1


def test_plain_http_rpcs_and_the_watch_stream_are_forwarded_one_by_one(plain: BehindProxy) -> None:
    sb, proxy = plain.sb, plain.proxy
    cp = plain.control_plane()

    rerun = _rerun_one_failure(cp, sb)
    watched = _first_watched(cp, sb)

    assert rerun["phase"] == "SUCCEEDED" and watched.ref.project == sb.project
    forwarded = {path.removeprefix(plain.target) for path in proxy.requests}
    assert {
        "/flyteidl2.workflow.RunService/ListRuns",
        "/flyteidl2.workflow.RunService/GetRunDetails",
        "/flyteidl2.workflow.RunService/WatchRuns",
        "/flyteidl2.workflow.RunService/CreateRun",
    } <= forwarded, forwarded
    assert all(path.startswith(plain.target + "/") for path in proxy.requests)
    assert set(proxy.authorizations) == {BASIC}


def test_hosts_in_the_operators_no_proxy_are_reached_directly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with (
        start_sandbox(WORKLOAD, auth=True, tls=True) as sb,
        ForwardProxy(credentials=(USER, PASSWORD)) as proxy,
        caplog.at_level(logging.INFO, logger="rerund.flyte"),
    ):
        conn = Connection(
            endpoint=sb.endpoint,
            org=sb.org,
            api_key=sb.api_key,
            ca_cert_file=sb.ca_cert,
            http_proxy=proxy.url,
        )
        cp = FlyteControlPlane(connection=conn, rpc_timeout=10)
        asyncio.run(cp.connect())
        asyncio.run(cp.list_failed(sb.project, sb.domain, since=SINCE))

        assert proxy.total() == 0 and proxy.authorizations == []
        assert sb.stats()["auth"]["tokens_issued"] >= 1
        assert "hosts in NO_PROXY are reached directly: 127.0.0.1" in caplog.text
        assert os.environ["NO_PROXY"] == "127.0.0.1"


def test_a_proxy_that_is_down_makes_calls_unavailable_until_it_is_back(secure: BehindProxy) -> None:
    sb, proxy = secure.sb, secure.proxy
    cp = secure.control_plane()
    asyncio.run(cp.list_failed(sb.project, sb.domain, since=SINCE))

    proxy.stop()
    with pytest.raises(TransientControlPlaneError) as down:
        asyncio.run(cp.list_failed(sb.project, sb.domain, since=SINCE))
    proxy.start()
    again = asyncio.run(cp.list_failed(sb.project, sb.domain, since=SINCE))

    assert down.value.code == "unavailable" and down.value.rpc == "ListRuns"
    assert str(down.value).startswith(
        f"ListRuns failed (unavailable): Request failed: error sending request for url ({secure.endpoint}/"
    )
    assert "tunnel error: failed to create underlying connection" in str(down.value)
    assert PASSWORD not in str(down.value) and USER not in str(down.value)
    assert again == []


def test_a_proxy_refusing_rerunds_proxy_credentials_is_an_unavailable_error_without_them(
    secure: BehindProxy,
) -> None:
    sb, proxy = secure.sb, secure.proxy
    wrong = f"http://{USER}:not-the-password@127.0.0.1:{proxy.port}"
    cp = secure.control_plane(proxy_url=wrong)

    with pytest.raises(TransientControlPlaneError) as refused:
        asyncio.run(cp.list_failed(sb.project, sb.domain, since=SINCE))

    assert refused.value.code == "unavailable"
    assert str(refused.value).endswith("tunnel error: proxy authorization required")
    assert "not-the-password" not in str(refused.value)
    assert proxy.refused >= 1 and proxy.total() == 0


# --- export_http_proxy: what the process's environment holds ----------------------------------


def test_the_proxy_is_exported_in_both_spellings_and_no_proxy_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("no_proxy", ".internal")
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:3128"

    changed, again = export_http_proxy(url), export_http_proxy(url)

    assert changed is True and again is False
    assert {name: os.environ[name] for name in PROXY_VARIABLES} == dict.fromkeys(PROXY_VARIABLES, url)
    assert os.environ["no_proxy"] == ".internal" and "NO_PROXY" not in os.environ


def test_no_proxy_setting_gives_the_operators_variables_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://operators-proxy:8080")

    unchanged = export_http_proxy("")
    export_http_proxy("http://127.0.0.1:3128")
    restored = export_http_proxy("")

    assert unchanged is False and restored is True
    assert os.environ["HTTPS_PROXY"] == "http://operators-proxy:8080"
    assert not {"https_proxy", "HTTP_PROXY", "http_proxy"} & set(os.environ)


def test_the_log_line_names_the_proxy_without_its_credentials(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="rerund.flyte"):
        export_http_proxy(f"http://{USER}:{PASSWORD}@proxy.internal:3128")
        export_http_proxy("")

    assert caplog.messages == [
        "control-plane requests (RPCs, the WatchRuns stream, OAuth2 token requests) go through the HTTP "
        "proxy http://proxy.internal:3128/... (http_proxy, exported to the process as HTTPS_PROXY and "
        "HTTP_PROXY); NO_PROXY is not set: every host goes through it",
        "control-plane requests no longer go through rerund's http_proxy",
    ]
    assert PASSWORD not in caplog.text and USER not in caplog.text
