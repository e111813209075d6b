"""Stored error messages are bounded where facts enter the daemon (issue 11.5)."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from rerund.core.model import MAX_CODE_CHARS, MAX_MESSAGE_CHARS, ErrorInfo, bounded_text

SUFFIX_MAX = len("… [truncated: 99999999999 bytes in all, sha256 0123456789abcdef] …")


@given(st.text(max_size=300), st.integers(min_value=1, max_value=200))
def test_a_bounded_text_keeps_its_head_and_tail_and_is_bounded_and_idempotent(text, limit):
    out = bounded_text(text, limit)

    assert len(out) <= limit + SUFFIX_MAX
    assert out.startswith(text[: limit - limit // 2])
    assert out.endswith(text[len(text) - limit // 2 :] if limit // 2 else "")
    assert bounded_text(out, limit) == out
    if len(text) <= limit:
        assert out == text


def test_a_long_message_keeps_its_head_its_tail_its_size_and_a_hash():
    message = "Traceback (most recent call last):\n" + "x" * 1_000_000 + "\nConnectionResetError: reset"
    digest = hashlib.sha256(message.encode()).hexdigest()[:16]

    error = ErrorInfo(kind="SYSTEM", code="E" * 10_000, message=message)

    half = MAX_MESSAGE_CHARS // 2
    assert error.message == (
        message[:half] + f"… [truncated: 1000063 bytes in all, sha256 {digest}] …" + message[-half:]
    )
    assert error.message.endswith("\nConnectionResetError: reset")
    assert len(error.code) < MAX_CODE_CHARS + SUFFIX_MAX
    assert ErrorInfo.model_validate(error.model_dump()) == error  # read back: not truncated twice


def test_two_long_messages_with_one_head_stay_apart():
    head = "y" * MAX_MESSAGE_CHARS

    assert ErrorInfo(message=head + "a" + head).message != ErrorInfo(message=head + "b" + head).message
