"""``redact_message``: what an example message (incidents, ``rerund suggest``) may show of an
error's free text — URLs to their host, values of secret-looking keys masked."""

from __future__ import annotations

import pytest

from rerund.core.redact import redact_message


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("db password=hunter2 failed", "db password=*** failed"),
        ("Authorization: Bearer abc.def", "Authorization: ***"),
        ('{"api_key": "xyz", "n": 3}', '{"api_key": ***, "n": 3}'),
        ("AWS_SECRET_ACCESS_KEY=abc123", "AWS_SECRET_ACCESS_KEY=***"),
        ("GET https://u:p@s3.example/bkt/k?X-Amz-Signature=1 -> 503", "GET https://s3.example/... -> 503"),
        ("KeyError: 'customer_id'", "KeyError: 'customer_id'"),
        ("503 SlowDown: reduce your request rate", "503 SlowDown: reduce your request rate"),
    ],
    ids=["password", "bearer", "json-key", "env-style", "url", "keyerror-is-no-secret", "plain"],
)
def test_a_message_is_shown_without_its_secrets(text: str, shown: str) -> None:
    assert redact_message(text) == shown
