"""Text as a terminal and Slack must receive it (issue 22.11, 22.12)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rerund.core.encode import TERMINAL_UNSAFE, for_slack, for_terminal


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
        ("line\r\nforged", "line\\r\\nforged"),
        ("tab\there", "tab\\there"),
        ("\x9b2J csi", "\\x9b2J csi"),
        ("abc\u202edef", "abc\\u202edef"),
        ("sep\u2028x", "sep\\u2028x"),
        ("plain, é ✓ 日本", "plain, é ✓ 日本"),
        (None, ""),
    ],
    ids=["osc", "cr lf", "tab", "c1 csi", "bidi override", "line separator", "printable unicode", "none"],
)
def test_a_terminal_gets_every_control_character_written_visibly(text, shown):
    assert for_terminal(text) == shown


def test_kept_characters_pass_and_the_rest_is_escaped():
    assert for_terminal("a\nb\x1b[1m\r", keep="\n") == "a\nb\\x1b[1m\\r"


@given(st.text())
def test_terminal_text_has_no_unsafe_character_and_escaping_twice_changes_nothing(text):
    once = for_terminal(text)
    assert TERMINAL_UNSAFE.search(once) is None
    assert for_terminal(once) == once


def test_slack_text_escapes_its_three_characters_ampersand_first():
    assert for_slack("<!channel> <https://evil|re-auth> R&D &lt;") == (
        "&lt;!channel&gt; &lt;https://evil|re-auth&gt; R&amp;D &amp;lt;"
    )


@given(st.text())
def test_slack_text_has_no_angle_bracket_and_unescapes_to_the_original(text):
    out = for_slack(text)
    assert "<" not in out and ">" not in out
    assert out.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") == text
