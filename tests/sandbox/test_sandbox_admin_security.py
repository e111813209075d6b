"""Who may drive the sandbox's ``/_sandbox/`` admin API (issue 22.13, 22.14).

Any web page the user opens can send a cross-site ``text/plain`` POST to 127.0.0.1, and a
DNS-rebinding page can even read the answers. So: with ``--auth`` the admin API needs the admin
token (written to a file next to the API key); without it, an admin POST needs
``content-type: application/json`` (which a cross-site page cannot send without a preflight the
sandbox never grants), no foreign ``Origin``, and every request a Host naming this machine.
Env values are never served. A body nested deeper than any real one is answered 400.
"""

from __future__ import annotations

import json
import stat

import httpx
import pytest

MAX_JSON_DEPTH = 64  # rerund.sandbox.server.MAX_JSON_DEPTH once it exists

pytestmark = pytest.mark.e2e

WORKLOAD = {"tasks": {"t": {"behaviour": ["fail"]}}}


@pytest.fixture
def open_sb(sandbox_factory):
    return sandbox_factory(workload=WORKLOAD, time_scale=0.01)


@pytest.fixture
def auth_sb(sandbox_factory):
    return sandbox_factory(workload=WORKLOAD, time_scale=0.01, auth=True)


# --- with --auth: the admin token -----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "route", "body"),
    [
        ("GET", "stats", None),
        ("GET", "runs", None),
        ("POST", "auth", {"revoke": True}),
        ("POST", "faults", {"unavailable": 1.0}),
        ("POST", "runs", {"task": "t"}),
    ],
    ids=["read stats", "read runs", "revoke keys", "inject faults", "launch runs"],
)
def test_with_auth_the_admin_api_refuses_a_request_without_the_admin_token(auth_sb, method, route, body):
    before = auth_sb.stats()["faults"]

    resp = httpx.request(method, f"{auth_sb.endpoint}/_sandbox/{route}", json=body)

    assert resp.status_code == 401
    assert resp.json()["error"] == (
        "the sandbox admin API needs the admin token (--auth): send 'authorization: Bearer TOKEN' "
        f"with the token from {auth_sb.admin_token_file}"
    )
    assert auth_sb.stats()["faults"] == before and auth_sb.runs() == []
    assert auth_sb.stats()["auth"]["token_requests_refused"] == 0


def test_with_auth_the_api_key_is_not_the_admin_token(auth_sb):
    resp = httpx.get(
        f"{auth_sb.endpoint}/_sandbox/stats", headers={"authorization": f"Bearer {auth_sb.api_key}"}
    )

    assert resp.status_code == 401


def test_with_auth_the_admin_token_is_in_a_0600_file_and_opens_the_admin_api(auth_sb):
    resp = httpx.post(
        f"{auth_sb.endpoint}/_sandbox/runs", json={"task": "t"}, headers=auth_sb.admin_headers()
    )

    assert resp.status_code == 200 and len(resp.json()["runs"]) == 1
    assert stat.S_IMODE(auth_sb.admin_token_file.stat().st_mode) == 0o600
    assert auth_sb.admin_token_file.read_text().strip() not in resp.text


# --- without --auth: no cross-site write, no rebinding --------------------------------------

CROSS_SITE = {
    "text/plain (a form or fetch without preflight)": {"content-type": "text/plain"},
    "a form": {"content-type": "application/x-www-form-urlencoded"},
    "no content type": {},
    "json from another origin": {"content-type": "application/json", "origin": "https://evil.example"},
}


@pytest.mark.parametrize("headers", CROSS_SITE.values(), ids=list(CROSS_SITE))
def test_without_auth_an_admin_post_a_web_page_could_send_is_refused(open_sb, headers):
    resp = httpx.post(
        f"{open_sb.endpoint}/_sandbox/faults", content=json.dumps({"unavailable": 1.0}), headers=headers
    )

    assert resp.status_code in (403, 415)
    assert resp.json()["error"].startswith(
        "the sandbox admin API takes POSTs with content-type: application/json"
    )
    assert open_sb.stats()["faults"]["unavailable"] == 0.0


def test_a_same_origin_json_post_is_accepted(open_sb):
    resp = httpx.post(
        f"{open_sb.endpoint}/_sandbox/faults",
        json={"latency": "5ms"},
        headers={"origin": open_sb.endpoint},
    )

    assert resp.status_code == 200 and resp.json()["latency"] == "5ms"


@pytest.mark.parametrize(
    "path", ["/_sandbox/runs", "/flyteidl2.workflow.RunService/ListRuns"], ids=["admin", "a Flyte RPC"]
)
def test_a_request_for_a_rebound_host_name_is_refused(open_sb, path):
    open_sb.launch("t", envs={"TOKEN": "s3cret"})

    method = "POST" if path.startswith("/flyte") else "GET"
    resp = httpx.request(
        method, f"{open_sb.endpoint}{path}", json={}, headers={"host": f"evil.example:{open_sb.port}"}
    )

    assert resp.status_code == 403
    assert "Host 'evil.example' is not this machine's name" in resp.text
    assert "s3cret" not in resp.text


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"], ids=str)
def test_a_request_for_a_local_name_or_an_address_is_served(open_sb, host):
    resp = httpx.get(f"{open_sb.endpoint}/_sandbox/stats", headers={"host": f"{host}:{open_sb.port}"})

    assert resp.status_code == 200


def test_env_values_are_never_served(open_sb):
    open_sb.launch("t", envs={"API_TOKEN": "s3cret", "MODE": "fast"})

    [run] = httpx.get(f"{open_sb.endpoint}/_sandbox/runs").json()

    assert sorted(run["envs"]) == ["API_TOKEN", "MODE"]
    assert "s3cret" not in json.dumps(run) and "fast" not in json.dumps(run)


# --- 22.14: hostile JSON --------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a": ' * 5_000 + b"1" + b"}" * 5_000,
        b'{"task": "t", "inputs": {"x": ' + b"[" * 900 + b"]" * 900 + b"}}",
    ],
    ids=["100000 lists deep", "5000 objects deep", "inputs 900 lists deep"],
)
@pytest.mark.parametrize("route", ["faults", "runs", "tasks", "auth"])
def test_json_nested_deeper_than_any_admin_body_is_answered_400(open_sb, raw, route):
    resp = httpx.post(
        f"{open_sb.endpoint}/_sandbox/{route}", content=raw, headers={"content-type": "application/json"}
    )

    assert resp.status_code == 400
    assert resp.json()["error"] == (
        f"the request body nests JSON more than {MAX_JSON_DEPTH} levels deep; the admin API reads at most "
        f"{MAX_JSON_DEPTH} levels"
    )
    assert httpx.get(f"{open_sb.endpoint}/_sandbox/runs").json() == []


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _nested_literal(depth: int) -> bytes:
    literal = b""
    for _ in range(depth):  # Literal.collection (2) -> LiteralCollection.literals (1) -> Literal
        literal = _field(2, _field(1, literal))
    return literal


CREATE_RUN = "/flyteidl2.workflow.RunService/CreateRun"


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("application/json", b"[" * 100_000 + b"]" * 100_000),
        ("application/json", b'{"inputs": ' * 5_000 + b"{}" + b"}" * 5_000),
        ("application/proto", _field(4, _field(1, _field(2, _nested_literal(5_000))))),
    ],
    ids=["json 100000 lists deep", "json 5000 objects deep", "proto inputs 5000 literals deep"],
)
def test_a_flyte_rpc_nested_deeper_than_protobuf_reads_is_answered_invalid_argument(open_sb, ctype, body):
    resp = httpx.post(f"{open_sb.endpoint}{CREATE_RUN}", content=body, headers={"content-type": ctype})

    assert resp.status_code == 400
    assert resp.json()["code"] == "invalid_argument"
    assert resp.json()["message"].startswith("the request is not a valid flyteidl2.workflow.CreateRunRequest")
    assert open_sb.runs() == []
