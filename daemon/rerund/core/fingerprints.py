"""Failure fingerprints: one short, stable value for "the same failure", across runs.

An outage fails many runs with the same error, each message differing only in what varies per
run: a request id, a timestamp, a run name, a pod's UUID, a line number or an address. A
fingerprint is what stays: a hash of the failing action's task, the error's kind, its failure
classes (``rerund.core.taxonomy``), its code, and its message *normalised* — so every failure of
one cause has one fingerprint, and the breaker, ``incidents`` and the evidence from history can
count them together (``Decision.fingerprint`` carries it; the ledger stores it in a column).

``fingerprint`` is 12 lowercase hex characters: the first 48 bits of a SHA-256 over the five
parts, each separated by a unit separator so no part can bleed into the next. It is a hash, so
it never shows a secret the message held; it is no metric label (there are unboundedly many).

Normalisation (``normalise``), in this order, on the message lower-cased (its head and tail,
``MAX_NORMALISED_CHARS`` in all, 768 characters each; a shorter message whole):

=========================  ================================================  ======================
what                       e.g.                                              becomes
=========================  ================================================  ======================
truncation marker          ``… [truncated: 9000 bytes in all, sha256 …] …``  ``<truncated>``
URL path and query         ``https://s3.amazonaws.com/bkt/k?X-Amz-Sig=…``     ``https://s3.amazonaws.com/<path>``
request, trace, host ids   ``x-amz-request-id: 4442587FB7D0A2F9``,            ``x-amz-request-id=<id>``
                           ``RequestId: …``, ``trace_id='…'``, ``x-amz-id-2``
file paths (2+ segments)   ``/usr/lib/python3.11/site-packages/s3fs/core.py``,  ``<path>``
                           ``c:\\work\\x.py`` (a lone ``/`` or ``a/b`` stays; a
                           drive ``c:`` or a leading ``.`` before it stays too)
tokens with a digit        numbers ``137``, ``0.25``; sizes ``3876Mi``;        ``<n>``
                           hex ``0x7f3a2c1d``; UUIDs; ids ``4442587FB7D0A2F9``;
                           IPs ``10.0.3.17:8080``; times ``2026-12-05T05:04:53Z``,
                           ``05:04:53,123``; run names ``r3kx9f2a7b-retry-2``;
                           pod names ``train-7d9f8b6c5d-x2v4k``
month and day names        ``Sat, 05 Dec 2026 05:04:53 GMT``,                  ``<n> <n> <n> gmt``,
next to a removed token    ``Dec  5 05:04:53``                                 ``<n> <n>``
blanks                     ``\\r\\n``, runs of spaces and tabs                    one space, trimmed
=========================  ================================================  ======================

A *token* is a run of letters, digits and ``_ . : + -``: one that holds a digit anywhere is
removed whole, so an id, a version, a timestamp or a pod name leaves no trace, whatever letters
it has. A word without a digit stays (``OOMKilled``, ``SlowDown``, ``connection refused``): an
id made only of letters (rare) is kept unless it is the value of a request/trace/host id.

So ``Container primary was using 3876Mi, which exceeds its request of 2Gi.`` and the same with
``4012Mi`` and ``4Gi`` share a fingerprint, while a different task, kind, class, code or any
other word gives another one. Exit codes are numbers and are removed too: the code and the
classes say what kind of exit it was (``OOMKilled``), the message's words the rest.

Cost: linear in the normalised length. Every pattern starts with a literal or a character class
(the regex engine skips ahead to it) and has no nested quantifier over the same characters, so
no match attempt backtracks beyond the token it scans; a token with a digit is removed in two
passes, forwards from its first digit and, on the reversed text, backwards to its start, so no
position rescans a token. These are our fixed patterns on stdlib ``re`` (user patterns in
policies go through google-re2); ``bench/bench_fingerprint.py`` measures them. Pure: no I/O, no
clock.
"""

from __future__ import annotations

import functools
import hashlib
import re

from rerund.core.model import ErrorInfo, Failure, Phase
from rerund.core.taxonomy import classify

__all__ = [
    "FINGERPRINT_CHARS",
    "MAX_NORMALISED_CHARS",
    "error_fingerprint",
    "failure_fingerprint",
    "fingerprint",
    "normalise",
]

FINGERPRINT_CHARS = 12
# What is normalised of a message: its head and tail, this many characters in all (768 each).
# The head says what failed, the tail is where a traceback names its exception; the middle of a
# long message (a dumped frame, a log) says little about its cause and would be most of the
# cost (``bench/bench_fingerprint.py``; the figures are in docs/incidents.md).
# Messages up to this size are normalised whole (every real-world message of the tests is).
MAX_NORMALISED_CHARS = 1536
_SEP = "\x1f"  # between the hashed parts: no part's text can shift into another's
_NUM = "\x00"  # a removed token while normalising (removed from the input first); "<n>" at the end

_TRUNCATED = re.compile(r"… \[truncated: \d+ bytes in all, sha256 [0-9a-f]+\] …")
# After "://": the host stays (which dependency failed), the path and query go.
_URL_PATH = re.compile(r"(://[^\s/'\"<>()\[\]{},;]++)/[^\s'\"<>()\[\]{},;]+")


def _url_host(match: re.Match[str]) -> str:
    # Same result as the template r"\1/<path>", which Python 3.11 expands in Python per match
    # (half the pass's cost); the host group always takes part in a match.
    return match[1] + "/<path>"


_ID_KEYS = ("request", "req", "trace", "span", "correlation", "host", "amz")
# The value of a request, trace or host id, whatever its characters: "x-amz-request-id: X",
# "RequestId=X", "trace_id='X'", "x-amz-id-2: X". The match starts at the literal "id" (fast to
# find); the key before it is checked by fixed-width lookbehinds.
_ID_VALUE = re.compile(
    "id(?=(?:-2)?['\"]?\\s*[:=])(?:"
    + "|".join(f"(?<={key}{sep}id)" for key in _ID_KEYS for sep in ("", "-", "_", " "))
    + r")(?:-2)?['\"]?\s*[:=]\s*['\"]?[^\s,;'\"()\[\]{}<>]+"
)
# Two or more path segments, / or \ separated: "/usr/lib/x.py", "c:\work\x.py", "./a/b".
# Possessive (``++``): a segment's class excludes the separators, so giving back characters of
# it can never let the next separator match: the same matches, without the retries.
_PATH = re.compile(r"[/\\][\w.@+=-]++(?:[/\\][\w.@+=-]++)+[/\\]?")
_PATH_ASCII = re.compile(_PATH.pattern, re.ASCII)
# A token: letters, digits and . : + - _ (a number, an id, a version, an address, a time, a
# run or pod name). One with a digit goes whole, in two linear passes: forwards from its first
# digit to its end, then (on the reversed text) backwards from there to its start.
_FROM_DIGIT = re.compile(r"\d[\w.:+-]*")
# The same two patterns for ASCII text (most messages; ``str.isascii`` is O(1)): the regex engine
# scans an ASCII class several times faster than a Unicode category, and for ASCII text ``\d``
# and ``\w`` match exactly the same characters either way (the patterns with ``\s`` keep the
# Unicode form: it also matches \x1c-\x1f, ASCII's does not).
_FROM_DIGIT_ASCII = re.compile(_FROM_DIGIT.pattern, re.ASCII)
_MONTHS = "january february march april may june july august september october november december"
_DAYS = "monday tuesday wednesday thursday friday saturday sunday"
_NAMES = sorted(
    {n for w in (_MONTHS + " " + _DAYS).split() for n in (w, w[:3], w[:4])} - {"marc", "apri", "june"},
    key=len,
)[::-1]
# On the reversed text: the rest of a token (before its first digit), and a month or day name
# next to a removed token ("Sat, 05 Dec 2026 ...", "Dec  5 05:04:53"): dates in words go too.
_TO_START = re.compile(_NUM + r"(?:\s+,?(?:" + "|".join(n[::-1] for n in _NAMES) + r")(?![a-z])|[\w.:+-]*)")


def normalise(message: str) -> str:
    """``message`` without its variable parts (see the module docstring for every rule), lower
    case, blanks collapsed. Pure; linear in ``min(len(message), MAX_NORMALISED_CHARS)``: every
    pattern starts with a literal or a character class and has no nested quantifier, and a
    token is scanned once forwards and once backwards.

    Invariant: ``normalise(normalise(m)) == normalise(m)`` (the tokens it writes are left as
    they are).
    """
    half = MAX_NORMALISED_CHARS // 2
    text = message if len(message) <= MAX_NORMALISED_CHARS else f"{message[:half]} {message[-half:]}"
    text = text.lower().replace(_NUM, "")
    if "[truncated:" in text:
        text = _TRUNCATED.sub(" <truncated> ", text)
    if "://" in text:
        text = _URL_PATH.sub(_url_host, text)
    text = _ID_VALUE.sub("id=<id>", text)
    ascii_only = text.isascii()
    if "/" in text or "\\" in text:  # a literal search: far cheaper than the pattern's scan
        text = (_PATH_ASCII if ascii_only else _PATH).sub("<path>", text)
    text = (_FROM_DIGIT_ASCII if ascii_only else _FROM_DIGIT).sub(_NUM, text)
    text = _TO_START.sub(_NUM, text[::-1])[::-1]
    return " ".join(text.split()).replace(_NUM, "<n>")


# The daemon decides one failure several times (due later, deferred, policies reloaded) with the
# same message: each is normalised once while it is among the last few hundred seen. Bounded:
# at most _CACHED messages of at most MAX_MESSAGE_CHARS (+ marker) each, with their forms.
_CACHED = 256
_normalised = functools.lru_cache(maxsize=_CACHED)(normalise)


def fingerprint(*, task: str, kind: str, classes: frozenset[str] | set[str], code: str, message: str) -> str:
    """The fingerprint of a failure of ``task`` with error ``kind``, failure ``classes``,
    ``code`` and ``message``: 12 hex characters, a function of the message only through
    ``normalise``. Pure and deterministic across processes and versions of Python."""
    parts = (task, kind, ",".join(sorted(classes)), code, _normalised(message))
    return hashlib.sha256(_SEP.join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:FINGERPRINT_CHARS]


def error_fingerprint(task: str, error: ErrorInfo, phase: Phase = Phase.FAILED) -> str:
    """The fingerprint of ``error`` of an action of ``task`` that ended in ``phase``."""
    return fingerprint(
        task=task, kind=error.kind, classes=classify(error, phase), code=error.code, message=error.message
    )


def failure_fingerprint(failure: Failure) -> str:
    """The fingerprint of ``failure``: of its failing action's task (``action_task``), its error
    and phase. The run, its lineage, project, labels and times are not part of it."""
    return error_fingerprint(failure.action_task, failure.error, failure.phase)
