"""Kubernetes quantities, one grammar for the relaunch arithmetic (``rerund.core.resources``)
and the sandbox, which checks the resources of a relaunch as the control plane does.

A quantity is a plain number (``2``, ``0.5``, ``1e3``), a decimal suffix (``n``, ``u``, ``m``
= 1/1000, ``k``, ``M``, ``G``, ``T``, ``P``, ``E``) or a binary one (``Ki``, ``Mi``, ``Gi``,
``Ti``, ``Pi``, ``Ei``). Values are exact ``Fraction``s of the base unit (bytes, cores,
devices). Every caller keeps its own error wording: ``quantity_value`` says None, not why.
Pure parsing; it imports nothing but the standard library (the sandbox may import it).

``MAX_QUANTITY`` is the largest value Kubernetes holds: a quantity is kept as an int64 count of
thousandths (``MilliValue``; cpu is scheduled in millicores), so 2^63-1 thousandths, about
9.2e15 cores, bytes (8 PiB) or devices. The control plane refuses a task spec above it; the
policy loader refuses such a value first, and the sandbox refuses it as the platform does.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["BINARY_SUFFIXES", "DECIMAL_SUFFIXES", "MAX_QUANTITY", "MAX_QUANTITY_TEXT", "quantity_value"]

BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
DECIMAL_SUFFIXES = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
MAX_QUANTITY = Fraction(2**63 - 1, 1000)
MAX_QUANTITY_TEXT = "9223372036854775.807"  # MAX_QUANTITY in base units, as messages show it
_QUANTITY = re.compile(
    r"^\+?(?P<num>\d+(?:\.\d*)?|\.\d+)(?:[eE](?P<exp>[+-]?\d{1,3}))?(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$"
)


def quantity_value(text: str) -> Fraction | None:
    """The exact value of the quantity ``text`` (surrounding white space ignored) in base
    units, or None when ``text`` is not a Kubernetes quantity."""
    m = _QUANTITY.match(text.strip())
    if m is None:
        return None
    number = Fraction(m.group("num"))
    if m.group("exp"):
        number *= Fraction(10) ** int(m.group("exp"))
    suffix = m.group("suffix") or ""
    scale = Fraction(BINARY_SUFFIXES[suffix]) if suffix in BINARY_SUFFIXES else DECIMAL_SUFFIXES[suffix]
    return number * scale
