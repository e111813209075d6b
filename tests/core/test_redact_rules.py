"""The redaction rules held exactly: secret-looking keys in any case, and what of a URL is kept."""

from __future__ import annotations

import pytest

from rerund.core.redact import MASK, public_fields, public_inputs, redact_url, scrub_urls, without_userinfo


@pytest.mark.parametrize(
    "key",
    [
        "API_TOKEN",
        "api_token",
        "Api_Token",
        "DB_PASSWORD",
        "SessionId",
        "X-Auth",
        "PRIVATE_KEY",
        "Cookie",
        "PWD",
        "CREDENTIALS",
        "client_secret",
    ],
)
def test_a_secret_looking_key_is_masked_in_any_case(key: str) -> None:
    assert public_inputs({key: "INPUTSECRET42"}) == {key: MASK}


def test_a_plain_field_keeps_its_value_and_nested_secret_keys_are_masked() -> None:
    fields = {"lr": 0.1, "name": "run", "nested": {"Token": "s", "n": 1}, "listed": ["a", "https://u:p@h/x"]}
    assert public_fields(fields) == {
        "lr": 0.1,
        "name": "run",
        "nested": {"Token": MASK, "n": 1},
        "listed": ["a", "https://h/..."],
    }


def test_an_input_shows_only_numbers_booleans_and_nulls_under_plain_keys() -> None:
    inputs = {"lr": 0.1, "on": True, "none": None, "name": "run", "nested": {"n": 1}, "listed": ["a"]}
    assert public_inputs(inputs) == {
        "lr": 0.1,
        "on": True,
        "none": None,
        "name": MASK,
        "nested": {"n": 1},
        "listed": [MASK],
    }


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://example.com", "https://example.com"),
        ("https://example.com/", "https://example.com"),  # a bare "/" hides nothing
        ("https://example.com/X", "https://example.com/..."),
        ("https://token@example.com", "https://example.com/..."),  # a user name alone is a secret too
        ("https://:pw@example.com", "https://example.com/..."),
        ("https://u:p@h:8443", "https://h:8443/..."),
        ("https://h?q=1", "https://h/..."),
        ("https://h#frag", "https://h/..."),
        ("file:///etc/passwd", "file:///..."),  # no host: nothing invented in its place
        ("https://[::1]:9/x", "https://[::1]:9/..."),
        ("http://[oops://x", "http://..."),  # unparseable: the scheme before the first ://
        ("u:pw@host", MASK),
        ("plain text", "plain text"),
    ],
)
def test_a_url_keeps_only_scheme_host_and_port(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_urls_inside_text_are_scrubbed() -> None:
    assert (
        scrub_urls("see https://hooks.slack.com/services/T/B/secret now")
        == "see https://hooks.slack.com/... now"
    )


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://u:p@console.example.com/runs/1", "https://console.example.com/runs/1"),
        ("HTTPS://u:p@host/x", "HTTPS://host/x"),
        ("https://host/x@y", "https://host/x@y"),
    ],
)
def test_without_userinfo_keeps_the_path(url: str, kept: str) -> None:
    assert without_userinfo(url) == kept
