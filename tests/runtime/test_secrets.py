"""No secret in a public output (issue 11.4): /decisions, logs, the ledger and `rerund
history`, webhook payloads. Env override values and a URL's userinfo, path and query never
appear, whatever the key is called."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest

from rerund.cli import main
from rerund.core.model import ErrorInfo
from rerund.runtime.settings import load_settings

from .fake_control_plane import T0
from .test_reconcile import World

SECRETS = ("hunter2", "u:pw", "/app", "T000/B000", "XXXXSECRET", "s3cr3t")
POLICY = """\
apiVersion: rerund/v1
defaults:
  max_attempts: 1
  backoff: {initial: 10s, factor: 2, max: 1m, jitter: 0}
policies:
  - name: transient
    match:
      error: {patterns: ['(?i)connection reset']}
    retry:
      env: {DATABASE_URL: 'postgres://u:pw@db.internal/app', API_PASS: hunter2, PLAIN: s3cr3t}
      inputs: {dsn: 'postgres://u:pw@db.internal/app'}
"""
LEAKY_ERROR = ErrorInfo(
    kind="SYSTEM", code="ConnectionResetError", message="Connection reset by postgres://u:pw@db.internal/app"
)


def _assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} shows {secret!r}"


def test_env_values_and_url_secrets_stay_out_of_records_logs_history_and_webhooks(
    tmp_path, caplog, capsys
) -> None:
    caplog.set_level(logging.DEBUG)
    world = World(tmp_path, POLICY)
    world.cp.add_failed("abc123", at=T0, error=LEAKY_ERROR)
    world.clock.advance(60)
    world.sync()
    [rerun] = world.cp.reruns()
    assert rerun.request is not None and rerun.request.env["API_PASS"] == "hunter2"  # the rerun gets it
    world.cp.fail("abc123-retry-1")
    runs = world.cp.runs
    runs[rerun.ref] = replace(runs[rerun.ref], error=LEAKY_ERROR)
    world.clock.advance(60)
    world.sync()

    [rerun_entry] = [e for e in world.rec.recent if e["decision"] == "rerun"]
    assert rerun_entry["env"] == {"DATABASE_URL": "***", "API_PASS": "***", "PLAIN": "***"}
    assert rerun_entry["inputs"] == {"dsn": "***"}  # a string input is never shown (issue 22.3)
    _assert_clean(json.dumps(list(world.rec.recent)), "/decisions")
    _assert_clean("\n".join(r.getMessage() for r in caplog.records), "the log")
    [payload] = world.notifier.sent
    assert payload["error"]["message"] == "Connection reset by postgres://db.internal/..."
    _assert_clean(json.dumps(payload), "the webhook payload")

    assert main(["history", "--state", str(tmp_path / "rerund.db"), "--format", "json"]) == 0
    history = capsys.readouterr().out
    assert '"DATABASE_URL": "***"' in history
    _assert_clean(history, "rerund history")
    _assert_clean((tmp_path / "rerund.db").read_bytes().decode("utf-8", "replace"), "the ledger file")


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        (
            "notify_webhook",
            "https://hooks.slack.com/services/T000/B000/XXXXSECRET",
            "set",
        ),
        ("endpoint", "https://u:pw@flyte.example:443/x?token=s3cr3t", "https://flyte.example:443/..."),
        ("console_url", "https://console.example/org?auth=s3cr3t", "https://console.example/..."),
    ],
    ids=["webhook", "endpoint", "console url"],
)
def test_the_public_settings_show_a_url_without_its_secret(key, value, shown) -> None:
    public = load_settings(environ={}, overrides={key: value}).public()

    got = public["notify"]["webhook"] if key == "notify_webhook" else public[key]
    assert got == shown
    _assert_clean(json.dumps(public), "the public settings")
