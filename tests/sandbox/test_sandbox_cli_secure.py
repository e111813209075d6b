"""``rerund sandbox --auth --api-key-out FILE --tls DIR --rate-limit N/s`` as users run it: the
banner says how to connect and where the key is, never the key; the key file is 0600; the
TLS files are made once and reused; bad flags are refused with what to do."""

from __future__ import annotations

import re
import signal
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from rerund.cli import main

pytestmark = pytest.mark.e2e

RERUND = [sys.executable, "-m", "rerund.cli"]
REPO = Path(__file__).resolve().parents[2]


def _serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [*RERUND, "sandbox", "--port", "0", "--flyte-config", str(tmp_path / "flyte.yaml"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Stop with"):
            break
    else:
        raise AssertionError(
            f"sandbox exited early: {proc.wait()} {proc.stderr.read() if proc.stderr else ''}"
        )
    return proc, "".join(lines)


def test_auth_tls_banner_names_the_key_file_and_ca_but_never_the_key(tmp_path):
    key_file = tmp_path / "api.key"
    tls_dir = tmp_path / "tls"
    proc, banner = _serve(
        tmp_path, "--auth", "--api-key-out", str(key_file), "--tls", str(tls_dir), "--rate-limit", "50/s"
    )
    try:
        key = key_file.read_text().strip()
        endpoint = re.search(r"serving Flyte at (https://\S+)", banner).group(1)
        ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
        admin_token = (tmp_path / "api.key.admin").read_text().strip()
        refused = httpx.get(f"{endpoint}/_sandbox/stats", verify=ctx)
        stats = httpx.get(
            f"{endpoint}/_sandbox/stats", headers={"authorization": f"Bearer {admin_token}"}, verify=ctx
        ).json()
        unauth = httpx.post(
            f"{endpoint}/flyteidl2.workflow.RunService/ListRuns",
            content=b"",
            headers={"content-type": "application/proto"},
            verify=ctx,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    stderr = proc.stderr.read() if proc.stderr else ""

    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key and key not in banner and key not in stderr
    from flyte.remote._client.auth._auth_utils import decode_api_key

    _, _, secret, org = decode_api_key(key)
    assert (
        secret not in banner and secret not in stderr and secret not in (tmp_path / "flyte.yaml").read_text()
    )
    assert org == "sandbox"
    assert f"API key written to {key_file} (mode 0600), tokens live 3600s" in banner
    assert f"tls:      CA {tls_dir / 'ca.crt'} (trust it: ca_cert_file_path)" in banner
    assert "rate limit 50/s" in banner
    assert (
        f"FLYTE_API_KEY=$(cat {key_file}) SSL_CERT_FILE={tls_dir / 'ca.crt'} flyte --endpoint {endpoint}"
        in banner
    )
    assert f"caCertFilePath: {tls_dir / 'ca.crt'}" in banner
    assert stats["faults"]["rate_limit"] == "50/s"
    assert unauth.status_code == 401
    admin_file = tmp_path / "api.key.admin"
    assert refused.status_code == 401 and refused.json()["error"].endswith(
        f"with the token from {admin_file}"
    )
    assert stat.S_IMODE(admin_file.stat().st_mode) == 0o600
    assert admin_token not in banner and admin_token not in stderr
    assert (
        f"admin:    {endpoint}/_sandbox/stats (send 'authorization: Bearer TOKEN', TOKEN from {admin_file})"
        in banner
    )


def test_tls_files_survive_a_restart_so_clients_keep_trusting_the_ca(tmp_path):
    tls_dir = tmp_path / "tls"
    proc, _ = _serve(tmp_path, "--tls", str(tls_dir))
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    ca = (tls_dir / "ca.crt").read_bytes()

    proc, banner = _serve(tmp_path, "--tls", str(tls_dir))
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)

    assert (tls_dir / "ca.crt").read_bytes() == ca
    assert "serving Flyte at https://127.0.0.1:" in banner


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--auth"],
            r"--auth needs --api-key-out FILE: the sandbox writes its API key there \(it never prints it\)",
        ),
        (["--api-key-out", "k"], r"--api-key-out needs --auth \(without it the sandbox accepts anyone\)"),
        (["--rate-limit", "fast"], r"--rate-limit: rate limit 'fast' is not a rate; use N/s or N/min"),
        (
            ["--auth", "--api-key-out", "k", "--token-ttl", "0s"],
            "--token-ttl must be a positive duration, e.g. 1h",
        ),
        (["--token-ttl", "later"], "--token-ttl: duration 'later' is not a duration"),
    ],
    ids=["auth-without-key-file", "key-file-without-auth", "bad-rate", "zero-ttl", "bad-ttl"],
)
def test_bad_security_flags_are_refused_with_what_to_do(capsys, args, message):
    code = main(["sandbox", "--port", "0", *args])

    assert code == 2
    assert re.search(message, capsys.readouterr().err)
