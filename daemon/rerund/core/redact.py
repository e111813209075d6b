"""What a public output may show of a value that can carry a secret (pure functions).

Public outputs are HTTP (``/decisions``, ``/status``, ``/metrics``, the operator page), logs,
the ledger, ``rerund history`` and ``rerund explain``, and webhook payloads. Redaction by key
name alone is not enough: ``DATABASE_URL=postgres://u:pw@h/db`` or ``API_PASS=...`` under any
name are secrets, and a Slack webhook's path *is* its secret. So the rules are by kind of
value, not by name:

- env overrides: the keys are shown, the values never (``{"API_PASS": "***"}``);
- inputs: the keys are shown; a value only when it is clearly not a secret — a number, a
  boolean or null under a key that does not look secret (``batch_size: 16``). Every string is
  masked whatever its key (``dsn``, ``note``, ``payload`` can all hold a password), and so is
  every value under a secret-looking key; mappings and lists keep their shape, their leaves
  follow the same rule. A decision's reason names an input as ``inputs api_token: set (value
  not shown)`` (``input_change``), so the reason, which is the log line, the ``explain`` text and
  the audit record, is built from redacted values only;
- other structured fields (an error's ``kind``, ``code``, ``message``): a secret-looking key
  masks its value, every string is URL-scrubbed (``public_fields``);
- URLs anywhere in a public string keep only ``scheme://host[:port]``: userinfo, path, query
  and fragment are replaced by ``/...``.

These functions are the one place these rules live; the shell applies them where facts and
decisions leave the daemon (records, log lines, webhook payloads, settings on /decisions).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "MASK",
    "NOT_SHOWN",
    "input_change",
    "public_decision",
    "public_env",
    "public_fields",
    "public_inputs",
    "redact_message",
    "redact_url",
    "scrub_urls",
    "without_userinfo",
]

MASK = "***"
NOT_SHOWN = "value not shown"
_SECRET_KEY = re.compile(r"(?i)(key|token|secret|passw|pwd|credential|auth|cookie|session|private)")
# scheme://anything-up-to-whitespace-or-quote; the scheme needs two letters (not "C:\").
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]+://[^\s'\"<>`]*")


def redact_url(url: str) -> str:
    """``https://hooks.slack.com/services/T/B/secret`` -> ``https://hooks.slack.com/...``.

    Keeps scheme, host and port; anything else (userinfo, path, query, fragment) becomes
    ``/...``. A URL with nothing else is returned as it was; text that is not a URL is
    returned whole only if it has no ``@`` (``user:pw@host`` without a scheme is masked).
    """
    if "://" not in url:
        return MASK if "@" in url else url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return f"{url.split('://', 1)[0]}://..."
    hidden = bool(parts.username or parts.password or parts.path.strip("/") or parts.query or parts.fragment)
    host_text = f"[{host}]" if ":" in host else host
    base = f"{parts.scheme}://{host_text}{':' + str(port) if port else ''}"
    return base + "/..." if hidden else base


def without_userinfo(url: str) -> str:
    """``url`` without ``user:password@`` (for a link that must keep its path, e.g. a console
    URL built from the endpoint)."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/@?#]*@", r"\1", url)


def scrub_urls(text: str) -> str:
    """``text`` with every URL in it reduced by ``redact_url``."""
    if "://" not in text:  # every URL ``_URL`` matches has one; most reasons have none
        return text
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


# ``password=hunter2``, ``Authorization: Bearer abc``, ``"api_key": "xyz"`` in free text: a key
# that ends in a secret-looking word (``KeyError: 'id'`` is no secret: its key word is inside).
_SECRET_PAIR = re.compile(
    r"""(?i)\b([\w.-]*(?:key|token|secret|passwd|password|pwd|credentials?|auth|authorization|cookie|"""
    r"""session|sessionid|private))"""
    r"""(["']?\s*[:=]\s*)(?:bearer\s+|basic\s+)?("[^"]*"|'[^']*'|[^\s,;&]+)"""
)


def redact_message(text: str) -> str:
    """A free-text message (an error's) as public outputs show it: URLs reduced to scheme and
    host, and the value of every secret-looking ``key=value`` / ``key: value`` masked."""
    return _SECRET_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", scrub_urls(text))


def public_env(env: Mapping[str, Any]) -> dict[str, str]:
    """Env overrides as public outputs show them: every key, no value."""
    return dict.fromkeys(env, MASK)


def _public_value(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key):
        return MASK
    if isinstance(value, str):
        return scrub_urls(value)
    if isinstance(value, Mapping):
        return {str(k): _public_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_public_value(key, v) for v in value]
    return value


def public_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Structured facts (an error's fields): secret-looking keys masked, URLs in every string
    scrubbed."""
    return {str(k): _public_value(str(k), v) for k, v in fields.items()}


def _input_value(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key):
        return MASK
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): _input_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_input_value(key, v) for v in value]
    return MASK


def public_inputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Input overrides: every key; a value only when it is a number, a boolean or null under a
    key that does not look secret, else ``MASK`` (at any depth; see the module docstring)."""
    return {str(k): _input_value(str(k), v) for k, v in inputs.items()}


def input_change(key: str, value: Any) -> str:
    """The reason's line for an input a rerun sets: ``inputs batch_size: set to 16``, or
    ``inputs api_token: set (value not shown)`` when the value is masked."""
    shown = _input_value(key, value)
    if shown == MASK:
        return f"inputs {key}: set ({NOT_SHOWN})"
    return f"inputs {key}: set to {shown!r}"


# Reasons recorded before inputs were redacted said ``inputs k: set to 'value'``: from the first
# such string to the end of the reason, the record shows that inputs were set, not to what.
_OLD_INPUT_LINES = re.compile(r"(changes: |, )inputs [^\s:]+: set to ['\"].*$", re.DOTALL)


def public_decision(body: Mapping[str, Any]) -> dict[str, Any]:
    """A decision's JSON (``Decision.to_json()``) as records, logs and /decisions show it."""
    out = dict(body)
    out["env"] = public_env(body.get("env") or {})
    out["inputs"] = public_inputs(body.get("inputs") or {})
    if isinstance(out.get("reason"), str):
        reason = out["reason"]
        if "inputs " in reason:  # ``_OLD_INPUT_LINES`` matches only there (a decision made per failure)
            reason = _OLD_INPUT_LINES.sub(rf"\1inputs: set ({NOT_SHOWN})", reason)
        out["reason"] = scrub_urls(reason)
    return out
