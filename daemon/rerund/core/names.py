"""Deterministic rerun names: ``<root>-retry-<attempt>``, DNS-1035 labels of at most 30 characters.

A rerun's name is a pure function of (root, attempt) and of nothing else — not of a policy,
a setting or a template. That is what makes exactly-once independent of configuration: every
replica, every restart, before and after any policy reload, computes the same name for one
lineage attempt, and the control plane refuses a second CreateRun of a name (ALREADY_EXISTS),
so one (root, attempt) can never get two reruns. (Before 0.2 a policy could set a name
template; two replicas, or a restart, with different templates created two reruns. The policy
key ``name`` was removed for that reason; ``rerund check`` says so.)

When ``<root>-retry-<attempt>`` is not a valid name (over 30 characters, or a root that is not
a DNS-1035 label), the root is shortened and a 6-character hash of (root, attempt) is appended
to it, so that names stay valid, deterministic and distinct per (root, attempt).
"""

from __future__ import annotations

import base64
import hashlib
import re

__all__ = ["MAX_NAME_LENGTH", "NAME_RULE", "is_valid_name", "rerun_name", "suffixed_name"]

MAX_NAME_LENGTH = 30
NAME_RULE = "<root>-retry-<attempt>"
_SUFFIX = "-retry-{attempt}"
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?\Z")
_INVALID = re.compile(r"[^-a-z0-9]")
_HASH_LEN = 6


def is_valid_name(name: str) -> bool:
    """True when ``name`` is a DNS-1035 label of 1..30 characters (a valid Flyte run name)."""
    return len(name) <= MAX_NAME_LENGTH and _DNS1035.fullmatch(name) is not None  # "$" alone allows "\n"


def _hash(root: str, attempt: int) -> str:
    digest = hashlib.blake2b(f"{root}\x00{attempt}".encode(), digest_size=8).digest()
    return base64.b32encode(digest).decode().lower()[:_HASH_LEN]


def _sanitize(text: str) -> str:
    """Lower-case, replace invalid characters by '-', start with a letter, end without '-'."""
    text = _INVALID.sub("-", text.lower())
    if not text or not text[0].isalpha() or not text[0].isascii():
        text = "r" + text
    return text.rstrip("-") or "r"


def rerun_name(*, root: str, attempt: int) -> str:
    """The name of rerun ``attempt`` of lineage ``root``: ``<root>-retry-<attempt>``.

    Invariants (tested with Hypothesis): always ``is_valid_name``; a function of (root,
    attempt) only; distinct for distinct (root, attempt); exactly ``<root>-retry-<attempt>``
    whenever that is already a valid name.
    """
    return suffixed_name(root, attempt, _SUFFIX.format(attempt=attempt))


def suffixed_name(root: str, number: int, suffix: str) -> str:
    """``<root><suffix>`` when that is a valid name, else ``<short root>-<hash>-<suffix>``
    with a 6-character hash of (root, number): valid, deterministic, distinct per (root,
    number) when ``suffix`` is a function of ``number``."""
    full = f"{root}{suffix}"
    if is_valid_name(full):
        return full
    tag = _hash(root, number)
    room = MAX_NAME_LENGTH - len(suffix) - _HASH_LEN - 1
    if room >= 1:
        short = _sanitize(root)[:room].rstrip("-")
        candidate = _sanitize(f"{short}-{tag}{suffix}")
        if is_valid_name(candidate):
            return candidate
    # A suffix too long for any root to fit: keep the head of the name plus the tag.
    head = _sanitize(full)[: MAX_NAME_LENGTH - _HASH_LEN - 1].rstrip("-")
    return f"{head}-{tag}"
