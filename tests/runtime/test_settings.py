"""Daemon settings: file < RERUND_* environment < flags, the API key, and clear errors."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from rerund.errors import ConfigError
from rerund.runtime.settings import load_settings, scopes_from_flags

SECRET = "fk-0123456789-very-secret"


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rerund.yaml"
    path.write_text(text)
    return path


def test_the_file_is_overridden_by_the_environment_and_the_environment_by_flags(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "endpoint: http://127.0.0.1:8090\norg: sandbox\nscopes: [demo/development]\n"
        "poll_interval: 30s\nlookback: 2h\nstate: state/rerund.db\npolicies: [p/]\n",
    )
    env = {"RERUND_POLL_INTERVAL": "5s", "RERUND_LOOKBACK": "10m", "RERUND_SCOPES": "a/b, c/d"}

    s = load_settings(config, environ=env, overrides={"lookback": "1m", "dry_run": None})

    assert s.endpoint == "http://127.0.0.1:8090" and s.plain_http
    assert s.poll_interval == timedelta(seconds=5)
    assert s.lookback == timedelta(minutes=1)
    assert [sc.key for sc in s.scopes] == ["a/b", "c/d"]
    assert s.dry_run is False
    # Relative paths in the file are relative to the file.
    assert s.state == tmp_path / "state" / "rerund.db"
    assert s.policies == (tmp_path / "p/",)
    assert s.http_address == ("127.0.0.1", 9464)


def test_the_api_key_comes_from_the_environment_and_never_shows_in_public_settings() -> None:
    s = load_settings(environ={"FLYTE_API_KEY": SECRET, "RERUND_ORG": "o"})

    assert s.api_key is not None and s.api_key.get_secret_value() == SECRET
    assert s.public()["api_key"] == "set"
    assert SECRET not in str(s.public()) and SECRET not in repr(s)


def test_the_api_key_file_wins_over_the_environment(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(SECRET + "\n")

    s = load_settings(environ={"FLYTE_API_KEY": "other", "RERUND_API_KEY_FILE": str(key)})

    assert s.api_key is not None and s.api_key.get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            {"file": "api_key: abc\n"},
            r"rerund.yaml:1:1: api_key: never put the key in a file others read; set FLYTE_API_KEY",
        ),
        ({"file": "- a\n- b\n"}, r"must be a mapping of settings, got list"),
        ({"file": "poll: [\n"}, r"is not valid YAML"),
        (
            {"file": "pol_interval: 5s\n"},
            r"rerund.yaml:1:1: pol_interval: unknown setting 'pol_interval'; did you mean 'poll_interval'\? "
            r"`rerund run --help` lists every setting",
        ),
        (
            {"env": {"RERUND_POLL_INTERVAL": "soon"}},
            r"environment variable RERUND_POLL_INTERVAL: poll_interval: 'soon' is not a duration",
        ),
        ({"env": {"RERUND_DRY_RUN": "maybe"}}, r"RERUND_DRY_RUN='maybe' is not a boolean; use true or false"),
        (
            {"flags": {"http": "9464"}},
            r"flag --http: http: '9464' is not host:port; write e\.g\. 127\.0\.0\.1:9464",
        ),
        (
            {"flags": {"poll_interval": "0s"}},
            r"flag --poll-interval: poll_interval: must be longer than 0, e\.g\. 30s",
        ),
        (
            {"env": {"RERUND_API_KEY_FILE": "/nonexistent/key"}},
            r"api_key_file '/nonexistent/key' cannot be read",
        ),
        (
            {"flags": {"notify_webhook": "hooks.slack.com/x"}},
            r"notify\.webhook: the webhook is not an http\(s\) URL \(it must start with http:// or https://; "
            r"its value is not shown: a webhook URL holds its secret\); write e\.g\. "
            r"https://hooks\.slack\.com/services/\.\.\.",
        ),
        (
            {"env": {"RERUND_BACKEND": "flyte1"}},
            r"environment variable RERUND_BACKEND: backend: 'flyte1' is not allowed; "
            r"use 'auto', 'union' or 'oss'",
        ),
    ],
    ids=[
        "key-in-file",
        "not-a-mapping",
        "bad-yaml",
        "unknown-key",
        "bad-duration",
        "bad-bool",
        "bad-http",
        "zero-poll",
        "missing-key-file",
        "bad-webhook",
        "bad-backend",
    ],
)
def test_bad_settings_say_where_and_how_to_fix_them(tmp_path: Path, setup: dict, message: str) -> None:
    config = _config(tmp_path, setup["file"]) if "file" in setup else None
    with pytest.raises(ConfigError, match=message):
        load_settings(config, environ=setup.get("env", {}), overrides=setup.get("flags"))


@pytest.mark.parametrize(
    "url",
    [
        "hooks.slack.com/services/T000/B000/very-secret-token",
        "https://hooks.slack.com:abc/services/very-secret-token",
        "https:///services/very-secret-token",
    ],
    ids=["no-scheme", "port-not-a-number", "no-host"],
)
def test_a_bad_webhook_url_is_refused_without_echoing_its_secret(url: str) -> None:
    with pytest.raises(ConfigError, match=r"notify\.webhook: the webhook is not an http\(s\) URL") as caught:
        load_settings(None, environ={}, overrides={"notify_webhook": url})
    assert "very-secret-token" not in str(caught.value)


def test_a_missing_settings_file_says_to_pass_an_existing_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist; pass a settings file to --config"):
        load_settings(tmp_path / "nope.yaml", environ={})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, r"no control plane configured: set endpoint in rerund\.yaml, RERUND_ENDPOINT or --endpoint"),
        ({"RERUND_ENDPOINT": "http://127.0.0.1:1"}, r"no org configured"),
        ({"RERUND_ENDPOINT": "http://127.0.0.1:1", "RERUND_ORG": "o"}, r"no scope to watch"),
    ],
    ids=["no-endpoint", "no-org", "no-scope"],
)
def test_the_daemon_refuses_to_start_without_what_it_needs(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=settings).require_runnable()


def test_scope_flags_must_be_project_slash_domain() -> None:
    assert [s.key for s in scopes_from_flags(["ml/prod"]) or []] == ["ml/prod"]
    with pytest.raises(ConfigError, match=r"flag --scope: scope 'ml' must be written project/domain"):
        scopes_from_flags(["ml"])


def test_the_backend_and_the_error_details_wait_come_from_the_environment_and_flags() -> None:
    default = load_settings(environ={})
    env = load_settings(environ={"RERUND_BACKEND": "oss", "RERUND_ERROR_DETAILS_WAIT": "90s"})
    flag = load_settings(environ={"RERUND_BACKEND": "oss"}, overrides={"backend": "union"})

    assert (default.backend, default.error_details_wait) == ("auto", timedelta(seconds=60))
    assert (env.backend, env.error_details_wait) == ("oss", timedelta(seconds=90))
    assert flag.backend == "union"


DURATION_LIMITS = {
    "lookback over a year": (
        ["--lookback", "800000d"],
        "flag --lookback: lookback: 800000d is longer than the maximum of 365d; write e.g. 1h",
    ),
    "poll interval past timedelta": (
        ["--poll-interval", "99999999999d"],
        "flag --poll-interval: poll_interval: 99999999999d is longer than the maximum of 1d; write e.g. 30s",
    ),
    "poll interval over a day": (
        ["--poll-interval", "2d"],
        "flag --poll-interval: poll_interval: 2d is longer than the maximum of 1d; write e.g. 30s",
    ),
}


@pytest.mark.parametrize(("flags", "message"), DURATION_LIMITS.values(), ids=list(DURATION_LIMITS))
def test_a_duration_flag_over_its_maximum_exits_2_with_a_message(tmp_path, capsys, flags, message) -> None:
    from rerund.cli import main

    code = main(["run", "--endpoint", "http://127.0.0.1:1", "--org", "o", "--scope", "a/b", *flags])

    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"RERUND_LEDGER_RETENTION": "99999999999999d"},
            "ledger_retention: 99999999999999d is longer than the maximum of 3650d; write e.g. 30d",
        ),
        (
            {"RERUND_LEDGER_RETENTION": "4000d"},
            "ledger_retention: 4000d is longer than the maximum of 3650d; write e.g. 30d",
        ),
        ({"RERUND_OVERLAP": "2d"}, "overlap: 2d is longer than the maximum of 1d; write e.g. 5m"),
        ({"RERUND_RPC_TIMEOUT": "0s"}, "rpc_timeout: must be longer than 0, e.g. 30s"),
        ({"RERUND_RPC_TIMEOUT": "2h"}, "rpc_timeout: 2h is longer than the maximum of 1h; write e.g. 30s"),
        ({"RERUND_POLL_INTERVAL": "1e999"}, "poll_interval: '1e999' is not a duration"),
    ],
    ids=[
        "retention past timedelta",
        "retention over 10 years",
        "overlap",
        "zero rpc timeout",
        "long rpc timeout",
        "exponent",
    ],
)
def test_every_duration_setting_has_a_maximum(env, message) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env)

    assert message in str(info.value)


@pytest.mark.parametrize(
    "value", [".inf", "1.0e+400", "10000000000000000000000000000"], ids=["inf", "1.0e+400", "huge int"]
)
def test_a_huge_number_of_seconds_in_the_settings_file_is_refused(tmp_path, value) -> None:
    config = _config(tmp_path, f"poll_interval: {value}\n")

    with pytest.raises(
        ConfigError, match=r"poll_interval: .* is longer than the maximum of 1d; write e\.g\. 30s"
    ):
        load_settings(config, environ={})


def test_an_api_key_file_that_is_not_utf8_is_refused_without_echoing_it(tmp_path) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"sec\xffret-key")

    with pytest.raises(ConfigError) as info:
        load_settings(environ={"RERUND_API_KEY_FILE": str(key)})

    assert str(info.value) == (
        f"api_key_file {str(key)!r} is not UTF-8 text; the key was not read: write only the API key "
        "into it, as plain text"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2Gi", 2 * 2**30), ("500M", 500_000_000), ("0", 0), ("1048576", 2**20)],
    ids=["binary", "decimal", "no bound", "plain"],
)
def test_ledger_max_bytes_takes_a_size(value, expected) -> None:
    assert load_settings(environ={"RERUND_LEDGER_MAX_BYTES": value}).ledger_max_bytes == expected


@pytest.mark.parametrize("value", ["lots", "1.5", "-3"], ids=["word", "fraction", "negative"])
def test_ledger_max_bytes_that_is_not_a_size_is_refused_with_an_example(value) -> None:
    with pytest.raises(
        ConfigError,
        match=rf"ledger_max_bytes: '{re.escape(value)}' is not a size in bytes; "
        r"write e\.g\. 2Gi, 500M or 0 \(no bound\)",
    ):
        load_settings(environ={"RERUND_LEDGER_MAX_BYTES": value})


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, 8), ({"RERUND_MAX_CONCURRENT_RERUNS": "32"}, 32), ({"RERUND_MAX_CONCURRENT_RERUNS": "8"}, 8)],
    ids=["default", "set", "set to the old default"],
)
def test_a_sweep_keeps_8_creates_in_flight_unless_the_user_set_a_ceiling(environ, expected) -> None:
    """The daemon's default ceiling is 64 because its concurrency adapts; a sweep's does not."""
    from rerund.cli.sweep import sweep_concurrency

    settings = load_settings(environ=environ)

    assert settings.max_concurrent_reruns == (64 if not environ else expected)
    assert sweep_concurrency(settings) == expected
