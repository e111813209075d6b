"""The daemon connected the way production needs: ``rerund run`` against ``rerund sandbox --auth
--tls`` (an API key, client credentials or a token command, and a private CA), through token
expiry, revocation and recovery, a wrong key or CA at start, org-wide and wildcard scopes over
three projects, and a rate-limited storm — each ending with the oracle's check that every owed
rerun exists exactly once."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from daemon_support import DaemonProcess, daemons, settle, total, wait_until
from rerun_oracle import audit
from rerund.policy import load_policies
from rerund.sandbox.auth import encode_api_key
from rerund.sandbox.testing import SandboxHandle, start_sandbox
from rerund.sandbox.tls import ensure_tls
from storms import STORM_WORKLOAD, launch_storm, owed_reruns, storm_policies, write_policies

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    return write_policies(tmp_path / "policies.yaml", storm_policies())


def _secure_daemon(
    tmp_path: Path, sb: SandboxHandle, policies: Path, *, name: str = "daemon", **extra: Any
) -> DaemonProcess:
    settings: dict[str, Any] = {
        "endpoint": sb.endpoint,
        "ca_cert_file": str(sb.ca_cert),
        "api_key_file": str(sb.key_file),
    }
    settings.update(extra)
    return DaemonProcess(tmp_path / name, sb, policies, name=name, extra=settings)


def _errors(d: DaemonProcess) -> float:
    return total(d.metrics(), "rerund_control_plane_errors_total")


def _secrets(sb: SandboxHandle) -> list[str]:
    from flyte.remote._client.auth._auth_utils import decode_api_key

    key = sb.api_key
    return [key, decode_api_key(key)[2]]


# --- tokens that expire ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ttl", "failures", "waves"),
    [
        pytest.param(1.0, 40, 4, id="short-ttl-1s-40-failures"),
        pytest.param(
            3.0,
            400,
            40,
            id="ttl-3s-400-failures-over-minutes",
            marks=[pytest.mark.slow, pytest.mark.timeout(900)],
        ),
    ],
)
def test_expiring_tokens_are_refreshed_without_an_error_and_nothing_is_lost(
    ttl: float, failures: int, waves: int, tmp_path: Path, policy_file: Path
) -> None:
    policies = load_policies([policy_file])
    with start_sandbox(workload=STORM_WORKLOAD, auth=True, tls=True, token_ttl=ttl) as sb:
        d = _secure_daemon(tmp_path, sb, policy_file)
        with daemons(d):
            d.wait_ready()
            # waves spread over several token lifetimes (sleeping is the scenario, not an assertion)
            launch_storm(sb, failures, waves=waves, between=lambda _: time.sleep(ttl))
            result = settle(sb, [d], policies, timeout=600)

            assert result.owed == owed_reruns(failures)
            assert result.exact(), result.problems()
            stats = sb.stats()
            assert stats["auth"]["tokens_issued"] >= 2, stats  # tokens did expire and were renewed
            assert stats["requests"].get("Unauthenticated", 0) >= 1, stats
            assert _errors(d) == 0, d.metrics_text()
            assert d.readyz()[0] == 200
            logs = d.logs(tail=10**7)
            assert "ERROR" not in logs, logs
            for secret in _secrets(sb):
                assert secret not in logs


# --- a wrong key or CA at start --------------------------------------------------------------


def test_a_wrong_key_at_start_exits_2_naming_the_problem_not_the_key(
    tmp_path: Path, policy_file: Path
) -> None:
    with start_sandbox(workload=STORM_WORKLOAD, auth=True, tls=True) as sb:
        wrong = tmp_path / "wrong.key"
        wrong_key = encode_api_key("127.0.0.1", "rerund-sandbox", "not-the-secret-at-all", sb.org)
        wrong.write_text(wrong_key)
        d = _secure_daemon(tmp_path, sb, policy_file, api_key_file=str(wrong))
        d.start(wait=False)
        assert d.proc is not None
        code = d.proc.wait(timeout=120)
        logs = d.logs()

    assert code == 2, logs
    assert f"the control plane at {sb.endpoint} refuses rerund's credentials (the API key)" in logs
    assert "invalid_client" in logs and "rerund exits" in logs
    assert wrong_key not in logs and "not-the-secret-at-all" not in logs


def test_a_wrong_ca_at_start_exits_2_saying_which_setting_to_fix(tmp_path: Path, policy_file: Path) -> None:
    other = ensure_tls(tmp_path / "other-ca")
    with start_sandbox(workload=STORM_WORKLOAD, auth=True, tls=True) as sb:
        d = _secure_daemon(tmp_path, sb, policy_file, ca_cert_file=str(other.ca_cert))
        d.start(wait=False)
        assert d.proc is not None
        code = d.proc.wait(timeout=120)
        logs = d.logs()

    assert code == 2, logs
    assert f"the control plane at {sb.endpoint} presents a TLS certificate rerund does not trust" in logs
    assert "set ca_cert_file (--ca-cert-file) to the CA that signed it" in logs


def test_no_ca_for_a_private_control_plane_exits_2(tmp_path: Path, policy_file: Path) -> None:
    with start_sandbox(workload=STORM_WORKLOAD, tls=True) as sb:
        d = DaemonProcess(tmp_path / "d", sb, policy_file, extra={"endpoint": sb.endpoint})
        d.start(wait=False)
        assert d.proc is not None
        code = d.proc.wait(timeout=120)
        logs = d.logs()

    assert code == 2, logs
    assert "presents a TLS certificate rerund does not trust: invalid peer certificate" in logs


# --- credentials revoked while running, then a new key ----------------------------------------


def test_revoked_credentials_make_it_unready_and_a_rewritten_key_file_recovers_everything(
    tmp_path: Path, policy_file: Path
) -> None:
    policies = load_policies([policy_file])
    with start_sandbox(workload=STORM_WORKLOAD, auth=True, tls=True, token_ttl=3600) as sb:
        d = _secure_daemon(tmp_path, sb, policy_file)
        with daemons(d):
            d.wait_ready()
            sb.revoke()  # every token and the secret: the daemon's token is refused from now on
            launch_storm(sb, 20)
            wait_until("readyz to report refused credentials", lambda: d.readyz()[0] == 503, 120, d.logs)
            status, body = d.readyz()
            assert status == 503
            assert "the control plane refuses rerund's credentials" in body
            assert "rewrite the key or secret file: it is reloaded without a restart" in body
            wait_until(
                "an unauthenticated error in the metrics",
                lambda: total(d.metrics(), "rerund_control_plane_errors_total", code="unauthenticated") > 0,
                120,
                d.logs,
            )
            refused_before = sb.stats()["auth"]["token_requests_refused"]
            time.sleep(5)  # the outage goes on (the scenario, not an assertion on time)
            refused_after = sb.stats()["auth"]["token_requests_refused"]
            logs = d.logs(tail=10**7)
            error_lines = [line for line in logs.splitlines() if " ERROR " in line]

            # one ERROR line (it repeats once a minute at most), not one per call; no busy loop
            assert len(error_lines) == 1, error_lines
            assert "the control plane refuses rerund's credentials" in error_lines[0]
            assert refused_after - refused_before < 200, (refused_before, refused_after)
            assert total(d.metrics(), "rerund_reruns_issued_total") == 0

            sb.revoke(mint=True)  # a new key, written over the key file the daemon reads
            result = settle(sb, [d], policies, timeout=300)
            assert result.owed == owed_reruns(20)
            assert result.exact(), result.problems()
            d.wait_ready()
            logs = d.logs(tail=10**7)
            assert "credentials reloaded from" in logs
            assert "the control plane accepts rerund's credentials again" in logs
            for secret in _secrets(sb):
                assert secret not in logs
            assert d.alive()


# --- the other two ways to authenticate ------------------------------------------------------


def test_client_credentials_from_a_secret_file(tmp_path: Path, policy_file: Path) -> None:
    from flyte.remote._client.auth._auth_utils import decode_api_key

    policies = load_policies([policy_file])
    with start_sandbox(workload=STORM_WORKLOAD, auth=True, tls=True) as sb:
        _, client_id, secret, _ = decode_api_key(sb.api_key)
        secret_file = tmp_path / "client.secret"
        secret_file.write_text(secret)
        secret_file.chmod(0o600)
        d = _secure_daemon(
            tmp_path,
            sb,
            policy_file,
            api_key_file=None,
            client_id=client_id,
            client_secret_file=str(secret_file),
        )
        with daemons(d):
            d.wait_ready()
            launch_storm(sb, 10)
            result = settle(sb, [d], policies, timeout=300)
            assert result.exact(), result.problems()
            assert "auth: client credentials" in d.logs(tail=10**7)
            assert secret not in d.logs(tail=10**7)


TOKEN_COMMAND = """
import base64, json, ssl, sys, urllib.request
key_file, endpoint, ca = sys.argv[1:4]
_, cid, secret, _ = base64.b64decode(open(key_file).read().strip()).decode().split(":", 3)
basic = base64.b64encode(f"{cid}:{secret}".encode()).decode()
req = urllib.request.Request(endpoint + "/oauth2/token", data=b"grant_type=client_credentials",
                             headers={"authorization": "Basic " + basic})
with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=ca)) as resp:
    print(json.load(resp)["access_token"])
"""


def test_an_external_token_command(tmp_path: Path, policy_file: Path) -> None:
    policies = load_policies([policy_file])
    script = tmp_path / "token.py"
    script.write_text(TOKEN_COMMAND)
    with start_sandbox(workload=STORM_WORKLOAD, auth=True, tls=True) as sb:
        command = [sys.executable, str(script), str(sb.key_file), sb.endpoint, str(sb.ca_cert)]
        d = _secure_daemon(tmp_path, sb, policy_file, api_key_file=None, auth_command=command)
        with daemons(d):
            d.wait_ready()
            launch_storm(sb, 10)
            result = settle(sb, [d], policies, timeout=300)
            assert result.exact(), result.problems()
            assert "auth: command" in d.logs(tail=10**7)
            assert sb.stats()["auth"]["tokens_issued"] >= 1


# --- org-wide and wildcard scopes ------------------------------------------------------------

PROJECTS = ("ml", "data", "vision")


def _launch_everywhere(sb: SandboxHandle, per: int = 2) -> None:
    for project in PROJECTS:
        for domain in ("development", "production"):
            sb.launch("storm.flaky", count=per, project=project, domain=domain)


def test_whole_org_scope_covers_three_projects_and_a_new_one_without_restart(
    tmp_path: Path, policy_file: Path
) -> None:
    policies = load_policies([policy_file])
    with start_sandbox(workload=STORM_WORKLOAD, auth=True, tls=True) as sb:
        d = _secure_daemon(tmp_path, sb, policy_file, scopes=["*/*"])
        with daemons(d):
            d.wait_ready()
            _launch_everywhere(sb)
            sb.launch("storm.twice", count=2, project="brand-new", domain="staging")
            result = settle(sb, [d], policies, timeout=300)

            assert result.failures == len(PROJECTS) * 2 * 2 + 2
            assert result.owed == len(PROJECTS) * 2 * 2 + 4
            assert result.exact(), result.problems()
            issued = {r["project"] for r in sb.runs() if r["relation"]}
            assert issued == {*PROJECTS, "brand-new"}
            # one org-wide stream (no faults: it never dropped), not one per project
            assert sb.request_counts().get("WatchRuns", 0) == 1
            assert "scopes */*" in d.logs(tail=10**7)


@pytest.mark.parametrize(
    ("scopes", "covered"),
    [
        pytest.param(["ml/*"], {("ml", "development"), ("ml", "production")}, id="one-project-every-domain"),
        pytest.param(
            ["*/production"],
            {(p, "production") for p in PROJECTS},
            id="one-domain-every-project",
        ),
    ],
)
def test_wildcard_scopes_rerun_exactly_what_they_cover(
    scopes: list[str], covered: set[tuple[str, str]], tmp_path: Path, policy_file: Path
) -> None:
    policies = load_policies([policy_file])
    with start_sandbox(workload=STORM_WORKLOAD, auth=True, tls=True) as sb:
        d = _secure_daemon(tmp_path, sb, policy_file, scopes=scopes)
        with daemons(d):
            d.wait_ready()
            _launch_everywhere(sb)

            def in_scope() -> list[dict[str, Any]]:
                return [r for r in sb.runs() if (r["project"], r["domain"]) in covered]

            def done() -> bool:
                a = audit(in_scope(), policies)
                return a.exact() and a.owed == len(covered) * 2 and not d.pending()

            wait_until("every covered failure rerun", done, 300, d.logs)
            time.sleep(2)  # a few more passes: nothing outside the scopes may appear
            outside = [r for r in sb.runs() if (r["project"], r["domain"]) not in covered]
            assert [r["name"] for r in outside if r["relation"]] == []
            assert audit(in_scope(), policies).exact()


# --- a rate-limited storm --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "failures"),
    [
        pytest.param(40, 60, id="short-40rps-60-failures"),
        pytest.param(
            100, 600, id="full-100rps-600-failures", marks=[pytest.mark.slow, pytest.mark.timeout(900)]
        ),
    ],
)
def test_a_rate_limited_storm_neither_duplicates_nor_misses(
    rate: int, failures: int, tmp_path: Path, policy_file: Path
) -> None:
    policies = load_policies([policy_file])
    with start_sandbox(workload=STORM_WORKLOAD, rate_limit=rate) as sb:
        d = DaemonProcess(tmp_path / "d", sb, policy_file, extra={"max_concurrent_reruns": 16})
        with daemons(d):
            d.wait_ready(timeout=300)
            launch_storm(sb, failures, waves=2)
            result = settle(sb, [d], policies, timeout=800)

            assert result.owed == owed_reruns(failures)
            assert result.exact(), result.problems()
            metrics = d.metrics()
            assert sb.stats().get("rate_limited", 0) > 0  # the limit did bite
            assert total(metrics, "rerund_control_plane_errors_total", code="resource_exhausted") > 0
            assert 1 <= total(metrics, "rerund_control_plane_concurrency") <= 16
