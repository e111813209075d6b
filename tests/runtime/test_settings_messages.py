"""Settings files as a newcomer writes them: every problem says file:line:col, the key and what
to write; a policy file given as settings says so; the shipped example loads and names every
setting; what is served never carries the webhook URL and durations read as they are written."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from rerund.errors import ConfigError
from rerund.runtime.settings import NotifySettings, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_each_bad_value_in_the_file_is_reported_with_its_line_column_and_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "rerund.yaml"
    path.write_text(
        "endpoint: http://127.0.0.1:8090\n"
        "org: sandbox\n"
        "poll_interval: soon\n"
        "pol_interval: 3s\n"
        "notify:\n"
        "  webhok: https://x\n"
        "policies: [{a: 1}]\n"
    )
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={})
    lines = str(err.value).splitlines()
    assert lines[0] == "invalid settings:"
    assert sorted(lines[1:]) == sorted(
        [
            f"{path}:3:16: poll_interval: 'soon' is not a duration; write e.g. 30s, 5m, 1h or 1d",
            f"{path}:4:1: pol_interval: unknown setting 'pol_interval'; did you mean 'poll_interval'? "
            "`rerund run --help` lists every setting",
            f"{path}:6:3: notify.webhok: unknown setting 'webhok'; did you mean 'webhook'? "
            "`rerund run --help` lists every setting",
            f"{path}:7:12: policies[0]: expected a file or directory path, got a mapping",
        ]
    )


def test_a_policy_file_given_as_settings_says_which_is_which() -> None:
    with pytest.raises(ConfigError, match=r"policies/rerund.yaml:1:1: this is a policy file") as err:
        load_settings(REPO / "policies" / "rerund.yaml", environ={})
    assert "pass it with --policies" in str(err.value) and "rerund.example.yaml" in str(err.value)


def test_a_missing_settings_file_points_at_the_example(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist; pass a settings file to --config"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_an_environment_value_names_its_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"environment variable RERUND_LOG_FORMAT: log_format: 'xml'"):
        load_settings(None, environ={"RERUND_LOG_FORMAT": "xml"})


def test_the_shipped_example_loads_and_names_every_setting() -> None:
    example = REPO / "rerund.example.yaml"
    settings = load_settings(example, environ={})
    assert settings.endpoint == "http://127.0.0.1:8090" and settings.org == "sandbox"
    assert [s.key for s in settings.scopes] == ["demo/development"]
    assert settings.policies == (REPO / "policies",)
    text = example.read_text()
    for key in Settings.model_fields:
        if key != "api_key":
            assert f"{key}:" in text, f"rerund.example.yaml does not show the setting {key!r}"
    for key in NotifySettings.model_fields:
        assert f"  {key}:" in text


def test_public_settings_hide_the_webhook_and_write_durations_as_in_the_file() -> None:
    settings = load_settings(
        None,
        environ={},
        overrides={"notify_webhook": "https://hooks.example/very-secret", "poll_interval": "30s"},
    )
    public = settings.public()
    assert public["notify"]["webhook"] == "set"
    assert "very-secret" not in str(public)
    assert public["poll_interval"] == "30s" and public["lookback"] == "1h"
    assert public["notify"]["timeout"] == "5s"
    assert settings.poll_interval == timedelta(seconds=30)


def test_an_unknown_event_loop_names_the_two_there_are(tmp_path: Path) -> None:
    path = tmp_path / "rerund.yaml"
    path.write_text("endpoint: http://127.0.0.1:8090\nevent_loop: trio\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={})
    assert f"{path}:2:13: event_loop: 'trio' is not allowed; use 'uvloop' or 'asyncio'" in str(err.value)
    assert load_settings(None, environ={"RERUND_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
