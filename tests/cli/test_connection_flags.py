"""The daemon and the sweep name and authenticate a control plane with the same flags, read into
the same settings (a sweep against a private CA needs no settings file)."""

from __future__ import annotations

import pytest

from rerund.cli import build_parser
from rerund.cli.common import connection_overrides
from rerund.runtime.settings import ScopeSettings

FLAGS = [
    "--endpoint", "https://flyte.example.com", "--org", "acme", "--scope", "ml/production",
    "--api-key-file", "/keys/api", "--client-id", "rerund", "--client-secret-file", "/keys/secret",
    "--auth-command", "print-token", "--ca-cert-file", "/ca/ca.crt", "--http-proxy", "http://proxy:3128",
]  # fmt: skip


@pytest.mark.parametrize(
    "command", [["run"], ["sweep", "--policies", "outage.yaml", "--since", "2h"]], ids=["run", "sweep"]
)
def test_run_and_sweep_read_the_same_connection_flags_into_the_same_settings(command: list[str]) -> None:
    args = build_parser(command[0]).parse_args([*command, *FLAGS])

    assert connection_overrides(args) == {
        "endpoint": "https://flyte.example.com",
        "org": "acme",
        "insecure": None,
        "scopes": [ScopeSettings(project="ml", domain="production")],
        "api_key_file": "/keys/api",
        "client_id": "rerund",
        "client_secret_file": "/keys/secret",
        "auth_command": "print-token",
        "auth_command_file": None,
        "ca_cert_file": "/ca/ca.crt",
        "http_proxy": "http://proxy:3128",
        "http_proxy_file": None,
    }
