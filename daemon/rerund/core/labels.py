"""Kubernetes label values: every label and annotation rerund writes must be one.

Flyte copies a run's labels and annotations onto the pod; a value the API server refuses
(``metadata.labels: Invalid value``) leaves the pod uncreated and the run QUEUED forever
(open-source Flyte 2 reports nothing else). A label value is empty or at most 63 characters
``[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`` (Kubernetes ``validation.IsValidLabelValue``); a
label key is an optional DNS-subdomain prefix and ``/``, then a name of the same form, 1-63.
rerund holds annotations to the value rule too (its own are short hex marks).
"""

from __future__ import annotations

import re

__all__ = ["LABEL_VALUE_RULE", "MAX_LABEL_VALUE", "label_key_problem", "label_value_problem"]

MAX_LABEL_VALUE = 63
LABEL_VALUE_RULE = "at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")
_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a Kubernetes label value (None: it is one)."""
    if value == "":
        return None
    if len(value) > MAX_LABEL_VALUE:
        return f"is {len(value)} characters long; a label value is {LABEL_VALUE_RULE}"
    if _VALUE.match(value) is None:
        return f"is not a Kubernetes label value: {LABEL_VALUE_RULE}"
    return None


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes label key (None: it is one)."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or _PREFIX.match(prefix) is None):
        return "has a prefix that is not a DNS subdomain (lowercase letters, digits, '-', '.'; at most 253)"
    if not name or len(name) > MAX_LABEL_VALUE or _VALUE.match(name) is None:
        return f"is not a Kubernetes label key: its name is {LABEL_VALUE_RULE}"
    return None
