"""``rerund sandbox --auth --tls``: the real flyte SDK and ``flyte`` CLI reach it only with the
API key and the CA; without a token every RPC and stream answers UNAUTHENTICATED (HTTP 401);
tokens expire, are revoked, and a new key is minted; the key is never printed or served."""

from __future__ import annotations

import base64
import json
import os
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from flyteidl2.common import identifier_pb2
from flyteidl2.workflow import run_service_pb2 as rs

from rerund.cli.sandbox import flyte_cli_config
from rerund.errors import ConfigError
from rerund.sandbox.auth import AuthState, encode_api_key
from rerund.sandbox.testing import flyte_init, start_sandbox
from rerund.sandbox.tls import ensure_tls

FLYTE = str(Path(sys.executable).with_name("flyte"))
WORKLOAD = {"tasks": {"t": {"behaviour": ["fail", "succeed"]}}}


def _ssl_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def _post(url: str, body: bytes, headers: dict[str, str], ca: Path | None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, context=_ssl_context(ca) if ca else None, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _list_runs_request(sb) -> rs.ListRunsRequest:
    return rs.ListRunsRequest(
        project_id=identifier_pb2.ProjectIdentifier(organization=sb.org, name=sb.project, domain=sb.domain)
    )


# --- pure parts ----------------------------------------------------------------------------


def test_api_key_decodes_with_the_sdks_own_decoder():
    from flyte.remote._client.auth._auth_utils import decode_api_key

    key = encode_api_key("127.0.0.1", "client", "s3cr/et+=", "acme")

    assert decode_api_key(key) == ("127.0.0.1", "client", "s3cr/et+=", "acme")


def test_api_key_refuses_an_endpoint_with_a_port():
    with pytest.raises(
        ValueError, match=r"an API key's endpoint cannot contain ':' \(got '127.0.0.1:8090'\)"
    ):
        encode_api_key("127.0.0.1:8090", "client", "secret", "acme")


def test_tokens_expire_and_revocation_refuses_tokens_and_secret(tmp_path):
    now = [100.0]
    auth = AuthState(org="acme", token_ttl_s=3.0, key_file=tmp_path / "k", clock=lambda: now[0])
    auth.mint_key()
    from flyte.remote._client.auth._auth_utils import decode_api_key
    from flyte.remote._client.auth._token_client import get_basic_authorization_header

    _, cid, secret, _ = decode_api_key((tmp_path / "k").read_text().strip())
    basic = get_basic_authorization_header(cid, secret)
    status, body = auth.issue(basic, {"grant_type": "client_credentials"})
    assert status == 200 and body["expires_in"] == 3
    bearer = f"Bearer {body['access_token']}"
    assert auth.check(bearer) == ""
    now[0] += 3.0
    assert auth.check(bearer) == "the bearer token has expired; get a new one from the token endpoint"

    status, body = auth.issue(basic, {"grant_type": "client_credentials"})
    assert auth.revoke_all() == 1
    assert auth.check(f"Bearer {body['access_token']}") == (
        "the bearer token is unknown or revoked; get a new one from the token endpoint"
    )
    assert auth.issue(basic, {"grant_type": "client_credentials"})[0] == 401
    assert auth.check("") == "no bearer token; get one from the token endpoint (OAuth2 client credentials)"


def test_key_file_is_written_with_mode_0600(tmp_path):
    auth = AuthState(org="acme", key_file=tmp_path / "keys" / "api.key")
    key = auth.mint_key()

    assert stat.S_IMODE((tmp_path / "keys" / "api.key").stat().st_mode) == 0o600
    assert (tmp_path / "keys" / "api.key").read_text().strip() == key


def test_tls_files_are_generated_once_and_reused(tmp_path):
    first = ensure_tls(tmp_path / "tls")
    ca = first.ca_cert.read_bytes()

    again = ensure_tls(tmp_path / "tls")

    assert again.ca_cert.read_bytes() == ca
    assert stat.S_IMODE(first.server_key.stat().st_mode) == 0o600
    ctx = _ssl_context(first.ca_cert)
    ctx.load_cert_chain(first.server_cert, first.server_key)  # the pair matches


def test_tls_directory_that_cannot_be_written_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")

    with pytest.raises(
        ConfigError, match=r"sandbox TLS directory .*file/tls cannot be written: .*pass a writable --tls DIR"
    ):
        ensure_tls(blocker / "tls")


# --- the served sandbox --------------------------------------------------------------------


@pytest.fixture
def secure():
    with start_sandbox(WORKLOAD, auth=True, tls=True, time_scale=0.01, token_ttl=3600) as sb:
        yield sb


def test_rpc_without_a_token_is_unauthenticated_401(secure):
    status, body = _post(
        f"{secure.endpoint}/flyteidl2.workflow.RunService/ListRuns",
        _list_runs_request(secure).SerializeToString(),
        {"content-type": "application/proto"},
        secure.ca_cert,
    )

    assert status == 401
    answer = json.loads(body)
    assert answer["code"] == "unauthenticated"
    assert answer["message"] == (
        "unauthenticated: no bearer token; get one from the token endpoint (OAuth2 client credentials)"
    )


def test_stream_and_unary_without_a_valid_token_raise_unauthenticated(secure):
    import asyncio

    import pyqwest
    from flyteidl2.workflow.run_service_connect import RunServiceClient

    async def calls() -> tuple[ConnectError, ConnectError]:
        http = pyqwest.Client(pyqwest.HTTPTransport(tls_ca_cert=secure.ca_cert.read_bytes()))
        client = RunServiceClient(secure.endpoint, http_client=http)
        with pytest.raises(ConnectError) as unary:
            await client.list_runs(_list_runs_request(secure), headers={"authorization": "Bearer forged"})
        with pytest.raises(ConnectError) as stream:
            async for _ in client.watch_runs(rs.WatchRunsRequest(org=secure.org)):
                pass
        return unary.value, stream.value

    unary, stream = asyncio.run(calls())

    assert unary.code == Code.UNAUTHENTICATED
    assert unary.message == (
        "unauthenticated: the bearer token is unknown or revoked; get a new one from the token endpoint"
    )
    assert stream.code == Code.UNAUTHENTICATED
    assert secure.stats()["requests"].get("ListRuns", 0) == 0


def test_token_endpoint_refuses_a_wrong_secret(secure):
    wrong = base64.b64encode(b"rerund-sandbox:not-the-secret").decode()

    status, body = _post(
        f"{secure.endpoint}/oauth2/token",
        b"grant_type=client_credentials",
        {"authorization": f"Basic {wrong}", "content-type": "application/x-www-form-urlencoded"},
        secure.ca_cert,
    )

    assert status == 401
    assert json.loads(body)["error"] == "invalid_client"


def test_plain_http_client_cannot_talk_to_the_tls_sandbox(secure):
    with pytest.raises(OSError):  # the TLS server drops a plain-HTTP request
        urllib.request.urlopen(secure.endpoint.replace("https", "http") + "/_sandbox/stats", timeout=5)


def test_sdk_with_key_and_ca_lists_and_reruns(secure):
    import flyte
    import flyte.remote

    [name] = secure.launch("t")
    secure.wait_idle()
    flyte_init(secure)

    runs = [r.name for r in flyte.remote.Run.listall()]
    flyte.rerun(name)
    secure.wait_idle()

    assert runs == [name]
    assert any(r["relation"] == {"run": name, "type": "RERUN"} for r in secure.runs())
    stats = secure.stats()
    assert stats["auth"]["tokens_issued"] >= 1
    assert stats["requests"]["Token"] >= 1


def test_sdk_refreshes_an_expired_token_without_an_error():
    import flyte
    import flyte.remote

    with start_sandbox(WORKLOAD, auth=True, tls=True, time_scale=0.01, token_ttl=0.5) as sb:
        sb.launch("t")
        sb.wait_idle()
        flyte_init(sb)
        first = len(list(flyte.remote.Run.listall()))
        issued = sb.stats()["auth"]["tokens_issued"]
        time.sleep(0.6)  # the token expires (ttl 0.5 s); not a timing assertion

        second = len(list(flyte.remote.Run.listall()))

        assert first == second == 1
        assert sb.stats()["auth"]["tokens_issued"] == issued + 1


def test_sdk_with_a_revoked_key_fails_and_a_new_key_works():
    import flyte
    import flyte.remote

    with start_sandbox(WORKLOAD, auth=True, tls=True, time_scale=0.01) as sb:
        flyte_init(sb)
        list(flyte.remote.Run.listall())
        old_key = sb.api_key
        sb.revoke(mint=True)

        with pytest.raises(Exception, match="invalid_client"):
            list(flyte.remote.Run.listall())
        assert sb.api_key != old_key
        flyte_init(sb)  # the new key from the rewritten file
        assert list(flyte.remote.Run.listall()) == []


def test_admin_auth_route_revokes_and_mints_without_serving_the_key(secure):
    old = secure.api_key
    status, body = _post(
        f"{secure.endpoint}/_sandbox/auth",
        json.dumps({"revoke": True, "mint": True}).encode(),
        secure.admin_headers(),
        secure.ca_cert,
    )

    assert status == 200
    answer = json.loads(body)
    assert answer == {"revoked_tokens": 0, "key_file": str(secure.key_file)}
    assert secure.api_key != old
    assert old not in body.decode() and secure.api_key not in body.decode()


def test_admin_auth_route_rejects_unknown_fields(secure):
    status, body = _post(
        f"{secure.endpoint}/_sandbox/auth",
        b'{"rotate": true}',
        secure.admin_headers(),
        secure.ca_cert,
    )

    assert status == 400
    assert json.loads(body)["error"] == (
        'POST /_sandbox/auth takes {"revoke": true, "mint": true}; got [\'rotate\']'
    )


def _flyte_get_run(secure, tmp_path, *, api_key):
    """``flyte get run`` against the secure sandbox, with its CA and ``api_key`` (FLYTE_API_KEY)."""
    config = tmp_path / "flyte.yaml"
    config.write_text(
        flyte_cli_config(
            secure.endpoint,
            org=secure.org,
            project=secure.project,
            domain=secure.domain,
            ca_cert=secure.ca_cert,
            auth=True,
        )
    )
    env = {
        **os.environ,
        "NO_COLOR": "1",
        "COLUMNS": "250",
        "TERM": "dumb",
        "FLYTE_API_KEY": api_key,
        "SSL_CERT_FILE": str(secure.ca_cert),
    }
    return subprocess.run(
        [FLYTE, "--endpoint", secure.endpoint, "--config", str(config), "-of", "json", "get", "run"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )


@pytest.mark.e2e
def test_flyte_cli_with_key_and_ca_gets_runs(secure, tmp_path):
    [name] = secure.launch("t")
    secure.wait_idle()

    proc = _flyte_get_run(secure, tmp_path, api_key=secure.api_key)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert name in proc.stdout
    assert secure.stats()["auth"]["tokens_issued"] >= 1
    assert secure.api_key not in proc.stdout + proc.stderr


@pytest.mark.e2e
def test_flyte_cli_with_a_wrong_secret_is_refused(secure, tmp_path):
    wrong = encode_api_key("127.0.0.1", "rerund-sandbox", "not-the-secret", secure.org)

    proc = _flyte_get_run(secure, tmp_path, api_key=wrong)

    assert "invalid_client" in proc.stdout + proc.stderr
    assert secure.stats()["requests"].get("ListRuns", 0) == 0
    assert secure.stats()["auth"]["token_requests_refused"] >= 1
