"""``rerund run`` with ``http_proxy`` against ``rerund sandbox --auth --tls`` that only a real
forward proxy can reach (``forward_proxy``): reruns happen through the proxy, a proxy outage
makes the daemon unready and counts ``unavailable`` errors, and when the proxy is back the daemon
catches up with every rerun owed, exactly once. The proxy's password is never in the logs,
``/metrics``, ``/readyz`` or ``/decisions``; and the settings never show it either."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from daemon_support import DaemonProcess, daemons, settle, total, wait_until
from forward_proxy import ForwardProxy, hold_closed_port
from rerund.errors import ConfigError
from rerund.policy import load_policies
from rerund.runtime.settings import load_settings
from rerund.sandbox.testing import start_sandbox
from storms import STORM_WORKLOAD, launch_storm, owed_reruns, storm_policies, write_policies

USER, PASSWORD = "egress", "pr0xy-pa55word"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_the_daemon_reruns_through_the_proxy_waits_out_its_outage_and_catches_up(tmp_path: Path) -> None:
    policy_file = write_policies(tmp_path / "policies.yaml", storm_policies())
    policies = load_policies([policy_file])
    with (
        start_sandbox(workload=STORM_WORKLOAD, auth=True, tls=True) as sb,
        hold_closed_port() as port,
        ForwardProxy(
            credentials=(USER, PASSWORD), routes={("127.0.0.1", port): ("127.0.0.1", sb.port)}
        ) as proxy,
    ):
        endpoint = f"https://127.0.0.1:{port}"  # nothing listens there: only the proxy reaches the sandbox
        d = DaemonProcess(
            tmp_path / "daemon",
            sb,
            policy_file,
            extra={
                "endpoint": endpoint,
                "ca_cert_file": str(sb.ca_cert),
                "api_key_file": str(sb.key_file),
                "http_proxy": proxy.url,
            },
            env={"NO_PROXY": "", "no_proxy": ""},
        )
        with daemons(d):
            d.wait_ready()
            launch_storm(sb, 10)
            first = settle(sb, [d], policies, timeout=180)

            assert first.owed == owed_reruns(10) and first.exact(), first.problems()
            assert proxy.tunnels[f"127.0.0.1:{port}"] >= 1 and proxy.refused == 0
            assert set(proxy.authorizations) == {BASIC}
            assert sb.stats()["auth"]["tokens_issued"] >= 1  # the token endpoint is on the closed port too

            proxy.stop()  # the proxy is down: every open tunnel is cut, nothing gets through
            issued = total(d.metrics(), "rerund_reruns_issued_total")
            launch_storm(sb, 10)
            wait_until("readyz to report the outage", lambda: d.readyz()[0] == 503, 120, d.logs)
            wait_until(
                "unavailable errors in the metrics",
                lambda: total(d.metrics(), "rerund_control_plane_errors_total", code="unavailable") > 0,
                120,
                d.logs,
            )
            outage = json.loads(d.readyz()[1])

            assert outage["ready"] is False
            assert outage["reason"].startswith(
                ("the last successful resync was", "background task(s) down, restarting with backoff")
            ), outage
            assert total(d.metrics(), "rerund_reruns_issued_total") == issued

            proxy.start()  # back on the same port
            second = settle(sb, [d], policies, timeout=240)
            d.wait_ready()

            assert second.owed == owed_reruns(10) * 2 and second.exact(), second.problems()
            logs = d.logs(tail=10**7)
            assert (
                f"go through the HTTP proxy http://127.0.0.1:{proxy.port}/... (http_proxy, exported to the "
                "process as HTTPS_PROXY and HTTP_PROXY); NO_PROXY is not set: every host goes through it"
            ) in logs
            assert (
                f"rerund started: endpoint {endpoint} (auth: api key, CA {sb.ca_cert}, "
                f"proxy http://127.0.0.1:{proxy.port}/...)"
            ) in logs
            assert "tunnel error: failed to create underlying connection" in logs
            assert d.decisions(limit=0)["settings"]["http_proxy"] == f"http://127.0.0.1:{proxy.port}/..."
            public = [logs, d.metrics_text(), d.readyz()[1], json.dumps(d.decisions()), json.dumps(outage)]
            for text in public:
                assert PASSWORD not in text and BASIC not in text
            assert d.alive()


# --- the setting itself --------------------------------------------------------------------------

BASE = {"RERUND_ENDPOINT": "https://flyte.example.com"}


def test_public_settings_show_the_proxy_without_its_credentials() -> None:
    s = load_settings(environ={**BASE, "RERUND_HTTP_PROXY": f"http://{USER}:{PASSWORD}@proxy.internal:3128"})

    assert s.http_proxy == f"http://{USER}:{PASSWORD}@proxy.internal:3128"
    assert s.public()["http_proxy"] == "http://proxy.internal:3128/..."
    plain = load_settings(environ={**BASE, "RERUND_HTTP_PROXY": "http://proxy:3128"})
    assert plain.public()["http_proxy"] == "http://proxy:3128"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param(f"{USER}:{PASSWORD}@proxy.internal:3128", "'***'", id="no-scheme-with-credentials"),
        pytest.param(f"http://{USER}:{PASSWORD}@proxy.internal:port", "'http://...'", id="port-not-a-number"),
        pytest.param("socks5://proxy.internal:1080", "'socks5://proxy.internal:1080'", id="socks-scheme"),
        pytest.param("http://:3128", "'http://:3128'", id="no-host"),
    ],
)
def test_a_proxy_that_is_not_an_http_url_is_refused_without_showing_its_password(
    value: str, shown: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(environ={**BASE, "RERUND_HTTP_PROXY": value})

    assert (
        f"environment variable RERUND_HTTP_PROXY: http_proxy: {shown} is not an http(s) URL; write e.g. "
        "http://proxy.internal:3128 (with credentials: http://user:password@proxy.internal:3128)"
    ) in str(refused.value)
    assert PASSWORD not in str(refused.value)
