"""``normalise`` against the implementation before issue 27's speed-ups (the URL pass's template
replaced by a function, possessive quantifiers in the path pattern): the same text for any
message, on random text that mixes what the passes look for."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from rerund.core import fingerprints as fp
from rerund.core.fingerprints import MAX_NORMALISED_CHARS, normalise

# The two patterns as they were; the others are unchanged and taken from the module.
_OLD_URL_PATH = re.compile(r"(://[^\s/'\"<>()\[\]{},;]+)/[^\s'\"<>()\[\]{},;]+")
_OLD_PATH = re.compile(r"[/\\][\w.@+=-]+(?:[/\\][\w.@+=-]+)+[/\\]?")
_OLD_PATH_ASCII = re.compile(_OLD_PATH.pattern, re.ASCII)


def old_normalise(message: str) -> str:
    """The oracle: ``normalise`` as it was (commit 7e8a143)."""
    half = MAX_NORMALISED_CHARS // 2
    text = message if len(message) <= MAX_NORMALISED_CHARS else f"{message[:half]} {message[-half:]}"
    text = text.lower().replace(fp._NUM, "")
    if "[truncated:" in text:
        text = fp._TRUNCATED.sub(" <truncated> ", text)
    if "://" in text:
        text = _OLD_URL_PATH.sub(r"\1/<path>", text)
    text = fp._ID_VALUE.sub("id=<id>", text)
    ascii_only = text.isascii()
    if "/" in text or "\\" in text:
        text = (_OLD_PATH_ASCII if ascii_only else _OLD_PATH).sub("<path>", text)
    text = (fp._FROM_DIGIT_ASCII if ascii_only else fp._FROM_DIGIT).sub(fp._NUM, text)
    text = fp._TO_START.sub(fp._NUM, text[::-1])[::-1]
    return " ".join(text.split()).replace(fp._NUM, "<n>")


_PIECES = st.one_of(
    st.sampled_from(
        [
            " ",
            "\n",
            "\t",
            "/",
            "\\",
            "//",
            "://",
            "https://",
            "s3://",
            "http://h.example.com/",
            "id",
            "id=",
            "id:",
            " id: ",
            "-id-2: ",
            "request",
            "request_id='",
            "x-amz-request-id: ",
            "traceid=",
            "RequestId",
            "0x7f3a",
            "4442587FB7D0A2F9",
            "2026-12-05T05:04:53Z",
            "10.0.3.17:8080",
            "3876Mi",
            "Sat, ",
            "Dec ",
            "monday",
            ".",
            ":",
            "+",
            "-",
            "_",
            "=",
            "@",
            "?",
            "&",
            "'",
            '"',
            "<",
            ">",
            "(",
            ")",
            "[",
            "]",
            "{",
            "}",
            ",",
            ";",
            "c:\\w\\x.py",
            "/usr/lib/x.py",
            "./a/b",
            "<path>",
            "<n>",
            "\x00",
            "\x1c",
            "\x1f",
            "\xa0",
            "é",
            "İ",
            "\u212a",
            "ß",
            "日本",
            "①",
            "٣",
            "… [truncated: 9000 bytes in all, sha256 ab12] …",
        ]
    ),
    st.text(alphabet="abcdefxyz0123456789/\\:.-_=", min_size=1, max_size=40),
    st.text(min_size=1, max_size=8),
    st.integers(min_value=1, max_value=300).map(lambda n: "a" * n),
    st.integers(min_value=1, max_value=300).map(lambda n: "a1/" * n),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=60).map("".join))
def test_normalise_matches_the_old_implementation(message: str) -> None:
    assert normalise(message) == old_normalise(message)


@settings(max_examples=50, deadline=None)
@given(st.lists(_PIECES, min_size=1, max_size=20).map("".join), st.integers(min_value=2, max_value=200))
def test_long_messages_match_the_old_implementation(unit: str, times: int) -> None:
    message = unit * times
    assert normalise(message) == old_normalise(message)
