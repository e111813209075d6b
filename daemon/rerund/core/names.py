"""Deterministic rerun names: DNS-1035 labels of at most 30 characters.

A rerun's name is a pure function of (template, root, run, policy, attempt). Issuing a rerun
under that name is idempotent: the control plane answers ALREADY_EXISTS for a second
CreateRun with the same name, so a restarted daemon (or a second replica) cannot duplicate it.

When the rendered template is a valid name it is used exactly. When it is too long or not a
valid label, the root (or run) part is shortened and a 6-character hash of (root, attempt) is
appended to it, so that names stay valid, deterministic and distinct per (root, attempt).
"""

from __future__ import annotations

import base64
import hashlib
import re
import string

__all__ = [
    "DEFAULT_TEMPLATE",
    "MAX_NAME_LENGTH",
    "PLACEHOLDERS",
    "is_valid_name",
    "rerun_name",
    "template_problems",
]

MAX_NAME_LENGTH = 30
DEFAULT_TEMPLATE = "{root}-retry-{attempt}"
PLACEHOLDERS = ("root", "run", "policy", "attempt")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_INVALID = re.compile(r"[^-a-z0-9]")
_HASH_LEN = 6


def is_valid_name(name: str) -> bool:
    """True when ``name`` is a DNS-1035 label of 1..30 characters (a valid Flyte run name)."""
    return len(name) <= MAX_NAME_LENGTH and _DNS1035.match(name) is not None


def template_problems(template: str) -> list[str]:
    """Why ``template`` cannot make distinct, valid names (empty list = it can).

    A template needs ``{attempt}`` and one of ``{root}`` / ``{run}`` (or two lineages, or two
    attempts, would get the same name); its literal text must be lowercase letters, digits
    and ``-``.
    """
    problems: list[str] = []
    fields: list[str] = []
    literal = []
    separators: list[str] = []  # literal text before each placeholder
    try:
        for text, field, spec, conversion in string.Formatter().parse(template):
            literal.append(text)
            separators.append(text)
            if field is None:
                continue
            if field not in PLACEHOLDERS or spec or conversion:
                problems.append(
                    f"unknown placeholder {{{field}{'!' + conversion if conversion else ''}"
                    f"{':' + spec if spec else ''}}} in name template {template!r}; "
                    "use {root}, {run}, {policy} and {attempt}"
                )
            fields.append(field)
    except ValueError as exc:
        return [f"name template {template!r} is malformed ({exc}); write e.g. '{{root}}-retry-{{attempt}}'"]
    if "attempt" not in fields:
        problems.append(
            f"name template {template!r} must contain {{attempt}} so each attempt gets its own name"
        )
    if "root" not in fields and "run" not in fields:
        problems.append(
            f"name template {template!r} must contain {{root}} or {{run}} so each lineage gets its own name"
        )
    for i, field in enumerate(fields):
        if field != "attempt":
            continue
        # The characters right next to {attempt} must be literal non-digits (or the ends).
        before = separators[i][-1:] or ("-" if i == 0 else "")
        after = separators[i + 1][:1] if i + 1 < len(separators) else "-"
        if not before or before.isdigit() or not after or after.isdigit():
            problems.append(
                f"name template {template!r} needs a separator such as '-' between {{attempt}} "
                "and the placeholder next to it, or different runs could get the same name"
            )
            break
    bad = sorted({c for c in "".join(literal) if _INVALID.match(c)})
    if bad:
        problems.append(
            f"name template {template!r} may only contain lowercase letters, digits and '-' "
            f"outside placeholders, not {''.join(bad)!r}"
        )
    return problems


def _hash(root: str, attempt: int) -> str:
    digest = hashlib.blake2b(f"{root}\x00{attempt}".encode(), digest_size=8).digest()
    return base64.b32encode(digest).decode().lower()[:_HASH_LEN]


def _sanitize(text: str) -> str:
    """Lower-case, replace invalid characters by '-', start with a letter, end without '-'."""
    text = _INVALID.sub("-", text.lower())
    if not text or not text[0].isalpha() or not text[0].isascii():
        text = "r" + text
    return text.rstrip("-") or "r"


def _render(template: str, *, root: str, run: str, policy: str, attempt: int) -> str:
    return template.format(root=root, run=run, policy=policy, attempt=attempt)


def rerun_name(template: str, *, root: str, run: str, policy: str, attempt: int) -> str:
    """The name of rerun ``attempt`` of lineage ``root`` (a DNS-1035 label, <= 30 chars).

    Invariants (tested with Hypothesis): always ``is_valid_name``; a pure function of its
    arguments; distinct for distinct (root, attempt) under one template; equal to the
    rendered, lower-cased template whenever that is already a valid name.
    """
    full = _render(template, root=root, run=run, policy=policy, attempt=attempt).lower()
    if is_valid_name(full):
        return full
    tag = _hash(root, attempt)
    has_root = "{root}" in template
    # Shorten the root (and the run, which usually starts with the root) and tag it.
    longest = min(max(len(root), len(run)), MAX_NAME_LENGTH)
    for keep in range(longest, 0, -1):
        short_root = root[:keep].rstrip("-")
        short_run = run[:keep].rstrip("-")
        if has_root:
            candidate = _render(
                template, root=f"{short_root}-{tag}", run=short_run, policy=policy, attempt=attempt
            )
        else:
            candidate = _render(
                template, root=short_root, run=f"{short_run}-{tag}", policy=policy, attempt=attempt
            )
        candidate = _sanitize(candidate)
        if len(candidate) <= MAX_NAME_LENGTH and tag in candidate:
            return candidate
    # The fixed part alone is too long (e.g. a long policy name): keep its head plus the tag.
    head = _sanitize(full)[: MAX_NAME_LENGTH - _HASH_LEN - 1].rstrip("-")
    return f"{head}-{tag}"
