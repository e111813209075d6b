"""Settings for production connections: wildcard scopes, the three ways to authenticate, a
private CA, a proxy and max_rps — and the messages when they are wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from rerund.errors import ConfigError
from rerund.runtime.settings import load_settings, scopes_from_flags
from rerund.sandbox.tls import ensure_tls

BASE = {"RERUND_ENDPOINT": "https://flyte.example.com", "RERUND_ORG": "acme", "RERUND_SCOPES": "*/*"}


def test_wildcard_scopes_parse_from_flags_env_and_file(tmp_path: Path) -> None:
    config = tmp_path / "rerund.yaml"
    config.write_text("scopes: ['*/*', 'ml/*', '*/production']\n")

    s = load_settings(config, environ={})

    assert [(sc.key, sc.wildcard) for sc in s.scopes] == [
        ("*/*", True),
        ("ml/*", True),
        ("*/production", True),
    ]
    assert [sc.key for sc in scopes_from_flags(["*/*"]) or []] == ["*/*"]
    assert [sc.key for sc in load_settings(environ={"RERUND_SCOPES": "ml/*,demo/dev"}).scopes] == [
        "ml/*",
        "demo/dev",
    ]


def test_client_credentials_command_ca_proxy_and_max_rps_load(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    ca = ensure_tls(tmp_path / "tls").ca_cert
    env = {
        **BASE,
        "RERUND_CLIENT_ID": "rerund",
        "RERUND_CLIENT_SECRET_FILE": str(secret),
        "RERUND_CA_CERT_FILE": str(ca),
        "RERUND_HTTP_PROXY": "http://proxy.internal:3128",
        "RERUND_MAX_RPS": "50",
    }

    s = load_settings(environ=env)
    s.require_runnable()

    assert s.auth_mode == "client_credentials"
    assert s.client_secret_file == secret and s.ca_cert_file == ca
    assert s.max_rps == 50.0 and s.http_proxy == "http://proxy.internal:3128"
    assert "s3cret" not in str(s.public())
    command = load_settings(environ={**BASE, "RERUND_AUTH_COMMAND": "get-token --audience 'flyte api'"})
    assert command.auth_command == ("get-token", "--audience", "flyte api")
    assert command.auth_mode == "command"


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"FLYTE_API_KEY": "k", "RERUND_CLIENT_ID": "c", "RERUND_CLIENT_SECRET_FILE": "{secret}"},
            r"more than one way to authenticate is configured: an API key \(FLYTE_API_KEY or api_key_file\) "
            r"and client credentials \(client_id, client_secret_file\); keep one",
        ),
        (
            {"RERUND_CLIENT_ID": "c"},
            r"client credentials need both client_id and client_secret_file",
        ),
        (
            {"RERUND_CA_CERT_FILE": "/nonexistent/ca.crt"},
            r"ca_cert_file '/nonexistent/ca.crt' cannot be read: No such file or directory; point it at the "
            r"PEM file of the CA",
        ),
        (
            {"RERUND_CA_CERT_FILE": "{not_pem}"},
            r"ca_cert_file '.*not-pem' holds no PEM certificate \(no -----BEGIN CERTIFICATE----- line\)",
        ),
        (
            {"RERUND_CLIENT_ID": "c", "RERUND_CLIENT_SECRET_FILE": "{empty}"},
            r"client_secret_file '.*empty' is empty; write the client secret into it",
        ),
    ],
    ids=["two-auth-modes", "client-id-without-secret", "missing-ca", "ca-not-pem", "empty-secret"],
)
def test_bad_production_settings_say_what_to_fix(tmp_path: Path, env: dict[str, str], message: str) -> None:
    files = {
        "secret": _write(tmp_path, "secret", "x"),
        "not_pem": _write(tmp_path, "not-pem", "hello"),
        "empty": _write(tmp_path, "empty", "\n"),
    }
    environ = {**BASE, **{k: v.format(**files) for k, v in env.items()}}
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=environ).require_runnable()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"RERUND_HTTP_PROXY": "proxy:3128"},
            r"'proxy:3128' is not an http\(s\) URL; write e\.g\. http://proxy",
        ),
        ({"RERUND_MAX_RPS": "-1"}, r"environment variable RERUND_MAX_RPS: max_rps: must be >= 0.0, got .-1."),
        (
            {"RERUND_AUTH_COMMAND": "get-token 'unclosed"},
            r"RERUND_AUTH_COMMAND: auth_command: it is not a command line \(No closing quotation; "
            r"its value is not shown",
        ),
    ],
    ids=["proxy-not-a-url", "negative-rps", "bad-command-line"],
)
def test_bad_values_name_the_environment_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={**BASE, **env})
