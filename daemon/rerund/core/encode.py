"""Text as a terminal and as Slack must receive it (pure functions).

Run names, labels, task versions, error messages, reasons and reproduction diffs come from the
control plane and from user code. Printed raw, they can drive the reader:

- a terminal obeys control characters: ``ESC [`` recolours or clears the screen, ``ESC ]0;``
  retitles the window (OSC), ``CR`` overwrites a line and ``LF`` starts a forged one
  (``rerund explain``, ``status``, ``history``, every command's table and error line);
- Slack reads ``<...>`` in a message's text as markup: ``<!channel>`` pings everyone,
  ``<https://evil|re-authenticate>`` is a link whose label hides its target.

``for_terminal`` is the one helper every command line output goes through (the operator page
escapes the same characters for HTML, the JSON logs and ``--format json`` escape them as JSON);
``for_slack`` is applied by the webhook adapter to the ``text`` field only, the structured
fields stay as they are for the programs that read them.
"""

from __future__ import annotations

import re

__all__ = ["TERMINAL_UNSAFE", "for_slack", "for_terminal"]

# C0 controls (TAB, LF and CR among them), DEL, C1 controls (0x9b is a one-byte CSI), the line
# and paragraph separators, and the bidirectional overrides and isolates that reorder what a
# line shows ("Trojan Source").
TERMINAL_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def for_terminal(text: object, *, keep: str = "") -> str:
    """``text`` with every character in ``TERMINAL_UNSAFE`` written visibly (``\\x1b``, ``\\n``,
    ``\\u202e``): one line, nothing a terminal obeys. Characters in ``keep`` (``"\\n"`` for a
    message of several lines of our own) pass through."""
    out = "" if text is None else str(text)
    if keep:
        return TERMINAL_UNSAFE.sub(lambda m: m.group() if m.group() in keep else _escaped(m), out)
    return TERMINAL_UNSAFE.sub(_escaped, out)


def for_slack(text: str) -> str:
    """``text`` as Slack's message ``text`` must carry it: ``&``, ``<`` and ``>`` escaped as
    ``&amp;``, ``&lt;`` and ``&gt;`` (Slack's own rule), so nothing in it is read as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
