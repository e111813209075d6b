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
from rerund.errors import ConfigError
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


SETTING_SECRETS = {
    "auth_command": ("get-token --client-secret AUTHSECRET9 --user svc:PASSWD7", ("AUTHSECRET9", "PASSWD7")),
    "http_proxy": ("http://proxyuser:PROXYPASS5@proxy.internal:3128", ("proxyuser", "PROXYPASS5")),
    "notify_webhook": ("https://hooks.slack.com/services/T000/B000/XXXXSECRET", ("T000", "XXXXSECRET")),
    "endpoint": ("https://u:ENDPOINTPW@flyte.example:443/x?token=s3cr3t", ("ENDPOINTPW", "s3cr3t")),
    "console_url": ("https://console.example/org?auth=CONSOLEPW", ("CONSOLEPW",)),
    "state": ("/var/lib/rerund/u:STATEPW@h/rerund.db", ("STATEPW",)),
}


def test_the_public_settings_show_no_secret_of_any_secret_bearing_field() -> None:
    """Issue 22.4: ``Settings.public()`` (served on /decisions, /status and the page, logged at
    start) shows every field, but never a credential: not the auth command's arguments, a
    proxy's or an endpoint's userinfo, a webhook's path, a state path's userinfo."""
    overrides = {key: value for key, (value, _) in SETTING_SECRETS.items()}
    public = load_settings(environ={}, overrides=overrides).public()

    text = json.dumps(public)
    leaks = [(k, s) for k, (_, secrets) in SETTING_SECRETS.items() for s in secrets if s in text]
    assert leaks == []
    assert public["auth_command"] == ["get-token", "***", "***", "***", "***"]
    assert public["http_proxy"] == "http://proxy.internal:3128/..."
    assert public["notify"]["webhook"] == "set"


FILE_FORMS = {
    "auth_command": (
        "auth_command_file",
        "get-token --secret AUTHSECRET9",
        ("get-token", "--secret", "AUTHSECRET9"),
    ),
    "http_proxy": ("http_proxy_file", "http://u:PROXYPASS5@proxy.internal:3128", None),
    "notify.webhook": ("notify_webhook_file", "https://hooks.slack.com/services/T/B/XXXXSECRET", None),
}


def _value(settings, name):
    return settings.notify.webhook if name == "notify.webhook" else getattr(settings, name)


@pytest.mark.parametrize("name", list(FILE_FORMS), ids=list(FILE_FORMS))
@pytest.mark.parametrize("layer", ["settings file", "environment", "flag"])
def test_every_secret_bearing_setting_can_come_from_a_file_named_in_any_layer(tmp_path, name, layer) -> None:
    """Issue 22.4: a credential need not be a flag (visible in ps) nor in the settings file."""
    key, content, parsed = FILE_FORMS[name]
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(content + "\n")
    config, environ, overrides = None, {}, {}
    if layer == "settings file":
        config = tmp_path / "rerund.yaml"
        yaml_key = (
            "notify: {webhook_file: secret.txt}" if key == "notify_webhook_file" else f"{key}: secret.txt"
        )
        config.write_text(yaml_key + "\n")
    elif layer == "environment":
        environ = {"RERUND_" + key.upper(): str(secret_file)}
    else:
        overrides = {key: str(secret_file)}

    settings = load_settings(config, environ=environ, overrides=overrides)

    assert _value(settings, name) == (parsed or content)
    assert "SECRET" not in json.dumps(settings.public()) and "PROXYPASS5" not in json.dumps(settings.public())


@pytest.mark.parametrize("name", list(FILE_FORMS), ids=list(FILE_FORMS))
def test_a_secret_given_both_as_a_value_and_as_a_file_is_refused(tmp_path, name) -> None:
    key, content, _ = FILE_FORMS[name]
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(content)
    value_key = "notify_webhook" if name == "notify.webhook" else name

    with pytest.raises(
        ConfigError, match=rf"both {name} and {name}_file are set; keep one \({name}_file keeps"
    ):
        load_settings(environ={}, overrides={key: str(secret_file), value_key: content})


def test_a_bad_value_in_a_secret_file_names_the_file_and_never_shows_the_value(tmp_path) -> None:
    secret_file = tmp_path / "proxy.txt"
    secret_file.write_text("proxy:PROXYPASS5@host")

    with pytest.raises(
        ConfigError, match=rf"http_proxy_file '{secret_file}': http_proxy: '\*\*\*' is not an http\(s\) URL"
    ) as caught:
        load_settings(environ={}, overrides={"http_proxy_file": str(secret_file)})
    assert "PROXYPASS5" not in str(caught.value)


def test_an_empty_secret_file_is_refused_with_what_to_write(tmp_path) -> None:
    empty = tmp_path / "hook.txt"
    empty.write_text("\n")

    with pytest.raises(
        ConfigError, match=rf"notify.webhook_file '{empty}' is empty; write the notify.webhook value"
    ):
        load_settings(environ={}, overrides={"notify_webhook_file": str(empty)})


def test_the_help_says_flags_are_visible_to_every_local_user_and_names_the_other_forms(
    capsys, monkeypatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # argparse wraps at hyphens otherwise
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())

    assert "Flags are visible to every local user (ps, /proc/PID/cmdline)" in text
    for flag, other in (
        ("--auth-command", "use --auth-command-file or RERUND_AUTH_COMMAND"),
        ("--http-proxy", "use --http-proxy-file or RERUND_HTTP_PROXY"),
        ("--notify-webhook", "use --notify-webhook-file or RERUND_NOTIFY_WEBHOOK"),
    ):
        assert f"{flag} " in text and other in text, flag
    assert "auth_command_file" in text and "RERUND_NOTIFY_WEBHOOK_FILE" in text


def test_a_reason_recorded_before_inputs_were_redacted_is_shown_without_them_everywhere(
    tmp_path, capsys
) -> None:
    """Issue 22.3: ledgers written by earlier versions hold ``inputs k: set to 'value'`` in
    their reasons; ``history``, ``history --run`` (and status, the page: the same rows) show
    that inputs were set, not their values."""
    from rerund.adapters.ledger import Ledger

    ledger = Ledger(tmp_path / "rerund.db")
    old = {
        "decision": "rerun",
        "policy": "transient",
        "attempt": 1,
        "name": "abc123-retry-1",
        "reason": "policy 'transient' reruns run 'abc123' as 'abc123-retry-1': attempt 1 of "
        "max_attempts=2; changes: env A: set (value not shown), inputs api_token: set to 'INPUTSECRET42'",
        "inputs": {"api_token": "INPUTSECRET42"},
        "source_run": "abc123",
        "root": "abc123",
    }
    ledger.record_decision(
        project="ml", domain="production", run="abc123", root="abc123", decision=old, now=T0
    )
    ledger.close()

    for argv in (
        ["history"],
        ["history", "--run", "abc123"],
        ["history", "--run", "abc123", "--format", "json"],
    ):
        assert main([*argv, "--state", str(tmp_path / "rerund.db")]) == 0
        out = capsys.readouterr().out
        assert "INPUTSECRET42" not in out, argv
        assert "inputs: set (value not shown)" in out, argv
