"""Deterministic rerun names: ``<root>-retry-<attempt>``, DNS-1035 labels of at most 30 characters.

A rerun's name is a pure function of (root, attempt, salt) and of nothing else — not of a
policy, a setting or a template. That is what makes exactly-once independent of
configuration: every replica, every restart, before and after any policy reload, computes the
same name for one lineage attempt, and the control plane refuses a second CreateRun of a name
(ALREADY_EXISTS), so one (root, attempt) can never get two reruns. (A per-policy name template
would break this: two replicas with different templates would create two reruns; the policy
key ``name`` is refused, saying so.)

When ``<root>-retry-<attempt>`` is not a valid name (over 30 characters, or a root that is not
a DNS-1035 label), the root is shortened and a 12-character base32 hash (60 bits) of (root,
attempt) is appended to it: among a million long roots the chance that two share a name is
below 10^-6.

A name is taken by whoever creates a run of it first, so a run found under a rerun's name is
that rerun only if its lineage labels and relation say so (``rerund.core.lineage``). When they
do not (another lineage's rerun with the same name, or a run someone named ``X-retry-1``), the
lineage takes the next *salt*: ``<short root>-<hash of (root, attempt, salt)>-retry-<attempt>``,
salt 1, 2, ... up to ``MAX_SALT``; still deterministic, so a restart or another replica walks
the same names in the same order and finds the rerun already issued under a salted name.
"""

from __future__ import annotations

import base64
import hashlib
import re

__all__ = ["MAX_NAME_LENGTH", "MAX_SALT", "NAME_RULE", "is_valid_name", "rerun_name", "suffixed_name"]

MAX_NAME_LENGTH = 30
MAX_SALT = 8  # names a lineage attempt tries when the ones before are taken by other runs
NAME_RULE = "<root>-retry-<attempt>"
_SUFFIX = "-retry-{attempt}"
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?\Z")
_INVALID = re.compile(r"[^-a-z0-9]")
_HASH_LEN = 12  # base32 characters: 60 bits


def is_valid_name(name: str) -> bool:
    """True when ``name`` is a DNS-1035 label of 1..30 characters (a valid Flyte run name)."""
    return len(name) <= MAX_NAME_LENGTH and _DNS1035.fullmatch(name) is not None  # "$" alone allows "\n"


def _hash(root: str, number: int, salt: int) -> str:
    key = f"{root}\x00{number}" if salt == 0 else f"{root}\x00{number}\x00salt{salt}"
    digest = hashlib.blake2b(key.encode(), digest_size=10).digest()
    return base64.b32encode(digest).decode().lower()[:_HASH_LEN]


def _sanitize(text: str) -> str:
    """Lower-case, replace invalid characters by '-', start with a letter, end without '-'."""
    text = _INVALID.sub("-", text.lower())
    if not text or not text[0].isalpha() or not text[0].isascii():
        text = "r" + text
    return text.rstrip("-") or "r"


def rerun_name(*, root: str, attempt: int, salt: int = 0) -> str:
    """The name of rerun ``attempt`` of lineage ``root``: ``<root>-retry-<attempt>``, or with
    ``salt`` >= 1 the salt-th other name of that attempt (used when the ones before it are taken).

    Invariants (tested with Hypothesis and over a million roots): always ``is_valid_name``; a
    function of (root, attempt, salt) only; distinct for distinct (root, attempt, salt);
    exactly ``<root>-retry-<attempt>`` whenever that is a valid name and ``salt`` is 0.
    """
    if salt < 0:
        raise ValueError(f"salt {salt} of lineage {root!r} attempt {attempt} is negative")
    return suffixed_name(root, attempt, _SUFFIX.format(attempt=attempt), salt=salt)


def suffixed_name(root: str, number: int, suffix: str, *, salt: int = 0) -> str:
    """``<root><suffix>`` when that is a valid name and ``salt`` is 0, else
    ``<short root>-<hash>-<suffix>`` with a 12-character hash of (root, number, salt): valid,
    deterministic, distinct per (root, number, salt) when ``suffix`` is a function of
    ``number``."""
    full = f"{root}{suffix}"
    if salt == 0 and is_valid_name(full):
        return full
    tag = _hash(root, number, salt)
    room = MAX_NAME_LENGTH - len(suffix) - _HASH_LEN - 1
    if room >= 1:
        short = _sanitize(root)[:room].rstrip("-")
        candidate = _sanitize(f"{short}-{tag}{suffix}")
        if is_valid_name(candidate):
            return candidate
    # A suffix too long for any root to fit: keep the head of the name plus the tag.
    head = _sanitize(full)[: MAX_NAME_LENGTH - _HASH_LEN - 1].rstrip("-")
    return f"{head}-{tag}"
