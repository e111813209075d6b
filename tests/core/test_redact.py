"""What public outputs show of values that can carry a secret (issue 11.4): rules by kind of
value, not by key name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rerund.core.redact import (
    _OLD_INPUT_LINES,
    _URL,
    MASK,
    NOT_SHOWN,
    input_change,
    public_decision,
    public_env,
    public_fields,
    public_inputs,
    redact_url,
    scrub_urls,
)

URLS = {
    "slack webhook: the path is the secret": (
        "https://hooks.slack.com/services/T000/B000/XXXXSECRET",
        "https://hooks.slack.com/...",
    ),
    "userinfo": ("postgres://u:pw@db.internal:5432/app", "postgres://db.internal:5432/..."),
    "query": ("http://127.0.0.1:8080/hook?token=abc", "http://127.0.0.1:8080/..."),
    "fragment": ("https://h.example#k=v", "https://h.example/..."),
    "nothing to hide stays as it is": ("http://127.0.0.1:8090", "http://127.0.0.1:8090"),
    "an ipv6 host": ("http://[::1]:9/x", "http://[::1]:9/..."),
    "a bad port": ("http://h:99999999/x", "http://..."),
    "credentials without a scheme": ("u:pw@db.internal", MASK),
    "plain text": ("not a url", "not a url"),
}


@pytest.mark.parametrize(("url", "shown"), URLS.values(), ids=list(URLS))
def test_a_url_keeps_only_scheme_host_and_port(url, shown):
    assert redact_url(url) == shown


def test_every_url_inside_a_text_is_reduced():
    text = "connect to postgres://u:pw@h/db failed; see https://hooks.example/T/B/x?y=1 (retry)"

    assert scrub_urls(text) == "connect to postgres://h/... failed; see https://hooks.example/... (retry)"


def test_env_overrides_show_their_keys_but_never_a_value():
    env = {"DATABASE_URL": "postgres://u:pw@h/db", "API_PASS": "hunter2", "PLAIN": "value"}

    assert public_env(env) == {"DATABASE_URL": MASK, "API_PASS": MASK, "PLAIN": MASK}


def test_inputs_show_only_numbers_and_booleans_under_keys_that_do_not_look_secret():
    inputs = {
        "batch_size": 16,
        "lr": 0.5,
        "resume": True,
        "checkpoint": None,
        "api_token": "t0k",
        "API_TOKEN": 42,
        "note": "hunter2",
        "source": "s3://bucket/x?X-Amz-Signature=abc",
        "nested": {"password": "p", "urls": ["https://u:p@h/a"], "epochs": 3},
    }

    assert public_inputs(inputs) == {
        "batch_size": 16,
        "lr": 0.5,
        "resume": True,
        "checkpoint": None,
        "api_token": MASK,
        "API_TOKEN": MASK,
        "note": MASK,
        "source": MASK,
        "nested": {"password": MASK, "urls": [MASK], "epochs": 3},
    }


@pytest.mark.parametrize(
    ("key", "value", "line"),
    [
        ("api_token", "INPUTSECRET42", "inputs api_token: set (value not shown)"),
        ("note", "hunter2", "inputs note: set (value not shown)"),
        ("Session_Id", 7, "inputs Session_Id: set (value not shown)"),
        ("batch_size", 16, "inputs batch_size: set to 16"),
        ("resume", False, "inputs resume: set to False"),
        ("shape", {"rows": 2, "name": "x"}, "inputs shape: set to {'rows': 2, 'name': '***'}"),
    ],
    ids=["secret key", "string", "secret key, number", "number", "boolean", "mapping"],
)
def test_a_reason_names_an_input_with_its_value_only_when_it_is_clearly_not_secret(key, value, line):
    assert input_change(key, value) == line


def test_structured_facts_mask_secret_keys_and_scrub_urls_at_any_depth():
    fields = {
        "code": "E1",
        "token": "t0k",
        "message": "reset by postgres://u:pw@h/db",
        "nested": {"password": "p", "urls": ["https://u:p@h/a"]},
    }

    assert public_fields(fields) == {
        "code": "E1",
        "token": MASK,
        "message": "reset by postgres://h/...",
        "nested": {"password": MASK, "urls": ["https://h/..."]},
    }


def test_a_reason_recorded_before_inputs_were_redacted_shows_them_without_values():
    body = {
        "decision": "rerun",
        "reason": "policy 'p' reruns run 'r' as 'r-retry-1': ...; changes: env A: set (value not shown), "
        "inputs api_token: set to 'INPUTSECRET42', inputs n: set to 'x, inputs y: set to 1'",
    }

    assert public_decision(body)["reason"] == (
        "policy 'p' reruns run 'r' as 'r-retry-1': ...; changes: env A: set (value not shown), "
        "inputs: set (value not shown)"
    )


def test_a_public_decision_carries_no_env_value_and_no_url_secret():
    body = {
        "decision": "rerun",
        "reason": "policy 'p' reruns run 'r' after postgres://u:pw@h/db reset",
        "env": {"DATABASE_URL": "postgres://u:pw@h/db", "API_PASS": "hunter2"},
        "labels": {"team": "ml"},
        "inputs": {"dsn": "postgres://u:pw@h/db"},
    }

    shown = public_decision(body)

    assert shown["env"] == {"DATABASE_URL": MASK, "API_PASS": MASK}
    assert shown["inputs"] == {"dsn": MASK}
    assert shown["reason"] == "policy 'p' reruns run 'r' after postgres://h/... reset"
    assert shown["labels"] == {"team": "ml"}
    for secret in ("hunter2", "u:pw", "/db"):
        assert secret not in str(shown)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:pw@console.example/v2/runs/x", "https://console.example/v2/runs/x"),
        ("https://console.example/v2/runs/x", "https://console.example/v2/runs/x"),
    ],
    ids=["userinfo", "none"],
)
def test_a_link_keeps_its_path_but_never_its_userinfo(url, shown):
    from rerund.core.redact import without_userinfo

    assert without_userinfo(url) == shown


@given(
    st.lists(
        st.sampled_from(
            [
                "see ",
                "https://h.example/a?t=1",
                "x://y",
                "://",
                "inputs ",
                "inputs k: set to 'v'",
                ", ",
                "changes: ",
                "a",
            ]
        )
        | st.text(max_size=8),
        max_size=8,
    ).map("".join)
)
def test_a_reason_with_no_url_or_no_old_input_line_reads_as_the_full_rules_would_make_it(reason):
    """``public_decision`` and ``scrub_urls`` skip their regular expressions when the text has
    no ``://`` (no URL) or no ``inputs `` (no input line of an old record), as they are asked
    for every decision: the result is the one the expressions would give."""
    scrubbed = _URL.sub(lambda m: redact_url(m.group(0)), reason)
    assert scrub_urls(reason) == scrubbed
    full = _URL.sub(
        lambda m: redact_url(m.group(0)), _OLD_INPUT_LINES.sub(rf"\1inputs: set ({NOT_SHOWN})", reason)
    )
    assert public_decision({"decision": "ignore", "reason": reason})["reason"] == full
