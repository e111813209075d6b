"""Resource arithmetic for relaunches: Kubernetes quantities, scaled or set, capped, never lowered.

A relaunch (``retry.scope: relaunch``) runs the deployed task again with resources the policy
derives from the failed run's: ``memory: 2x`` multiplies the source's request and limit,
``memory: 16Gi`` sets them, ``max: {memory: 64Gi}`` caps the result so escalation never asks for
a node that does not exist. Everything here is pure and exact: quantities are ``Fraction``s of
the base unit (bytes, cores, devices), so ``1.5x`` of ``1Gi`` is exactly ``1536Mi``.

Invariants (tested with Hypothesis):

- ``parse_quantity(format_quantity(r, q)) >= q`` and equal whenever ``q`` is representable
  (whole bytes / millicores / devices); formatting only ever rounds *up*;
- a planned value is never below the source's value and never above the cap, unless the source
  itself is above the cap (then it is kept: a relaunch never lowers a resource);
- a resource without a rule keeps the source's value exactly (its text is not even reformatted).

Quantities follow Kubernetes: a plain number (``2``, ``0.5``, ``1e3``), a decimal suffix
(``m`` = 1/1000, ``k``, ``M``, ``G``, ``T``, ``P``, ``E``) or a binary one (``Ki``, ``Mi``,
``Gi``, ``Ti``, ``Pi``, ``Ei``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rerund.core.quantities import BINARY_SUFFIXES as _BINARY
from rerund.core.quantities import DECIMAL_SUFFIXES as _DECIMAL
from rerund.core.quantities import MAX_QUANTITY, MAX_QUANTITY_TEXT, quantity_value

__all__ = [
    "MAX_MULTIPLIER",
    "RESOURCE_NAMES",
    "ResourceName",
    "ResourcePlan",
    "ResourceRule",
    "ResourceRules",
    "ResourcesView",
    "format_quantity",
    "limit_problem",
    "parse_multiplier",
    "parse_quantity",
    "plan_resources",
    "quantity_problem",
]

ResourceName = Literal["cpu", "memory", "gpu", "ephemeral_storage"]
RESOURCE_NAMES: tuple[ResourceName, ...] = ("cpu", "memory", "gpu", "ephemeral_storage")

# The largest factor a policy may multiply a resource by: beyond it a relaunch asks for a node
# that does not exist (and past MAX_QUANTITY the control plane refuses the task spec).
MAX_MULTIPLIER = 64
_MULTIPLIER = re.compile(r"^(?P<num>\d+(?:\.\d*)?|\.\d+)x\Z")
_EXAMPLES = {
    "memory": "16Gi, 512Mi or 2x",
    "ephemeral_storage": "100Gi or 2x",
    "cpu": "4, 500m or 2x",
    "gpu": "2 or 2x",
}


def quantity_problem(text: str) -> str | None:
    """Why ``text`` is not a Kubernetes quantity (None when it is)."""
    try:
        parse_quantity(text)
    except ValueError as exc:
        return str(exc)
    return None


def limit_problem(text: str) -> str | None:
    """Why a policy's resource value ``text`` (a multiplier or a quantity, already of the right
    form) asks for more than a relaunch may: a multiplier above ``MAX_MULTIPLIER`` or a
    quantity above ``MAX_QUANTITY`` (None when it is within both)."""
    factor = parse_multiplier(text)
    if factor is not None:
        if factor > MAX_MULTIPLIER:
            return (
                f"multiplier {text.strip()} is above the maximum of {MAX_MULTIPLIER}x; a relaunch multiplies "
                f"the failed run's request and limit at most {MAX_MULTIPLIER} times: write e.g. 2x, and a "
                "max: to cap the escalation"
            )
        return None
    if parse_quantity(text) > MAX_QUANTITY:
        return (
            f"quantity {text.strip()!r} is above {MAX_QUANTITY_TEXT}, the largest Kubernetes holds "
            "(2^63-1 thousandths of a core, byte or device): ask for what a node has, e.g. 16Gi, 4 or 500m"
        )
    return None


def parse_quantity(value: str | int | float) -> Fraction:
    """The exact value of a Kubernetes quantity in base units (bytes, cores, devices).

    Raises ``ValueError`` naming the accepted forms for anything else (negative numbers,
    unknown suffixes such as ``GB``, empty text).
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity; write e.g. 16Gi, 512Mi, 4 or 500m")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"quantity {value} is negative; resources are at least 0")
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"quantity {value!r} is not a finite non-negative number")
        return Fraction(str(value))
    text = str(value).strip()
    number = quantity_value(text)
    if number is None:
        raise ValueError(
            f"{text!r} is not a Kubernetes quantity; write a number with an optional suffix "
            "Ki, Mi, Gi, Ti (binary), k, M, G, T (decimal) or m (milli), e.g. 16Gi, 512Mi, 4 or 500m"
        )
    return number


def parse_multiplier(text: str) -> Fraction | None:
    """The factor of ``"2x"`` / ``"1.5x"``, or None when ``text`` is not a multiplier."""
    m = _MULTIPLIER.match(text.strip())
    return Fraction(m.group("num")) if m else None


def format_quantity(resource: ResourceName, value: Fraction) -> str:
    """``value`` as a Kubernetes quantity for ``resource``, rounded up to what it can express.

    Memory and storage: whole bytes with the largest binary suffix that is exact (``8Gi``,
    ``1536Mi``), else the largest exact decimal one, else plain bytes. CPU: whole cores plain
    (``4``), else millicores (``1500m``). GPU: whole devices.
    """
    if resource == "cpu":
        millis = math.ceil(value * 1000)
        return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"
    units = math.ceil(value)
    if resource == "gpu" or units == 0:
        return str(units)
    for suffix, size in sorted(_BINARY.items(), key=lambda kv: -kv[1]):
        if units % size == 0:
            return f"{units // size}{suffix}"
    for suffix in ("E", "P", "T", "G", "M", "k"):
        size = int(_DECIMAL[suffix])
        if units % size == 0:
            return f"{units // size}{suffix}"
    return str(units)


class ResourcesView(BaseModel):
    """A task's resource requests and limits as quantity strings (flyteidl2
    ``core.Resources``), keyed by ``cpu``, ``memory``, ``gpu``, ``ephemeral_storage``. A
    resource absent from ``requests`` / ``limits`` is not requested / not limited."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests: dict[ResourceName, str] = Field(default_factory=dict)
    limits: dict[ResourceName, str] = Field(default_factory=dict)

    def describe(self) -> str:
        """One line, e.g. ``memory 4Gi (limit 4Gi), cpu 1`` (``none`` when empty)."""
        parts = []
        for name in RESOURCE_NAMES:
            request, limit = self.requests.get(name), self.limits.get(name)
            if request is None and limit is None:
                continue
            text = f"{name} {request if request is not None else 'unset'}"
            if limit is not None:
                text += f" (limit {limit})"
            parts.append(text)
        return ", ".join(parts) or "none"


@dataclass(frozen=True)
class ResourceRule:
    """What a policy does to one resource: multiply the source's value by ``factor``, or set
    it to ``value`` (exactly one of them), capped at ``cap`` (None: no cap). ``text`` is how
    the policy wrote it (``2x``, ``16Gi``), for reasons."""

    text: str
    factor: Fraction | None = None
    value: Fraction | None = None


@dataclass(frozen=True)
class ResourceRules:
    """A policy's ``resources:`` block for one attempt: rules per resource and caps (``max:``)."""

    rules: Mapping[ResourceName, ResourceRule] = field(default_factory=dict)
    caps: Mapping[ResourceName, Fraction] = field(default_factory=dict)
    cap_texts: Mapping[ResourceName, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def merged(self, step: ResourceRules) -> ResourceRules:
        """``step`` over ``self``: a resource ``step`` has a rule (or cap) for takes it."""
        return ResourceRules(
            rules={**self.rules, **step.rules},
            caps={**self.caps, **step.caps},
            cap_texts={**self.cap_texts, **step.cap_texts},
        )

    def describe(self) -> str:
        """``memory 2x (max 64Gi), cpu 4`` as the policy wrote it."""
        parts = []
        for name in RESOURCE_NAMES:
            rule = self.rules.get(name)
            if rule is None:
                continue
            cap = self.cap_texts.get(name)
            parts.append(f"{name} {rule.text}" + (f" (max {cap})" if cap else ""))
        return ", ".join(parts)


@dataclass(frozen=True)
class ResourcePlan:
    """The resources a relaunch asks for (``target``), what changed (one line per changed
    value, e.g. ``memory request 4Gi -> 8Gi``), notes on rules that could not apply or were
    capped, and ``grew``: True when at least one value is above the source's."""

    target: ResourcesView
    changes: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    grew: bool = False
    capped: tuple[ResourceName, ...] = ()


def _planned(
    name: ResourceName,
    which: str,
    source: str | None,
    rule: ResourceRule,
    cap: Fraction | None,
    cap_text: str,
) -> tuple[str | None, str | None, bool, bool]:
    """(new text, note, grew, capped) of one request or limit."""
    old = parse_quantity(source) if source is not None else None
    if rule.factor is not None:
        if old is None:
            return None, None, False, False
        new = old * rule.factor
    else:
        assert rule.value is not None
        new = rule.value
    note = None
    capped = False
    if cap is not None and new > cap:
        new = cap
        capped = True
    if old is not None and new <= old:
        # Never below the source; equal (or capped down to it) keeps the source's own text.
        if capped:
            note = f"{name} {which} stays {source}: it is already at or above its max {cap_text}"
        elif new < old:
            note = (
                f"{name} {which} stays {source}: {rule.text} would lower it, "
                "and a relaunch never lowers a resource"
            )
        return source, note, False, capped
    text = format_quantity(name, new)
    if capped:
        note = f"{name} {which} capped at max {cap_text}"
    return text, note, True, capped


def plan_resources(source: ResourcesView, rules: ResourceRules) -> ResourcePlan:
    """The resources a relaunch of a run with ``source`` resources asks for under ``rules``.

    A multiplier scales the source's request and limit; a set value replaces the request and
    (when the source has one) the limit; each is capped, never lowered below the source, and a
    limit is never left below its request. A multiplier on a resource the source does not
    request leaves it unset (and says so in ``notes``); a rule on a resource whose source value
    is not a Kubernetes quantity (the SDK passes ``"16GB"`` through) keeps it as it is and says
    so in ``notes``. Pure: never raises on the control plane's values.
    """
    requests: dict[ResourceName, str] = dict(source.requests)
    limits: dict[ResourceName, str] = dict(source.limits)
    changes: list[str] = []
    notes: list[str] = []
    grew = False
    capped: list[ResourceName] = []
    for name in RESOURCE_NAMES:
        rule = rules.rules.get(name)
        if rule is None:
            continue
        cap = rules.caps.get(name)
        cap_text = rules.cap_texts.get(name, "")
        old_request, old_limit = source.requests.get(name), source.limits.get(name)
        unreadable = next(
            (
                (which, text)
                for which, text in (("request", old_request), ("limit", old_limit))
                if text is not None and quantity_problem(text) is not None
            ),
            None,
        )
        if unreadable is not None:
            # The SDK passes a task's resource text through as written ("16GB"): never guess.
            which, text = unreadable
            notes.append(
                f"{name} {rule.text} cannot apply: the source's {name} {which} {text!r} is not a "
                f"Kubernetes quantity (e.g. {_EXAMPLES[name].split(',')[0]}); {name} is kept as deployed"
            )
            continue
        if rule.factor is not None and old_request is None and old_limit is None:
            notes.append(
                f"{name} {rule.text} cannot apply: the source requests no {name} "
                f"(set a value instead, e.g. {name}: {_EXAMPLES[name].split(',')[0]})"
            )
            continue
        hit = False
        for which, old, out in (("request", old_request, requests), ("limit", old_limit, limits)):
            if which == "limit" and old is None:
                continue
            if which == "request" and old is None and rule.factor is not None:
                continue
            new, note, up, was_capped = _planned(name, which, old, rule, cap, cap_text)
            if new is None:
                continue
            out[name] = new
            hit = hit or was_capped
            if note and note not in notes:
                notes.append(note)
            if up:
                grew = True
                changes.append(f"{name} {which} {old if old is not None else 'unset'} -> {new}")
        # A limit is never below its request (Kubernetes refuses such a pod).
        if (
            name in limits
            and name in requests
            and parse_quantity(limits[name]) < parse_quantity(requests[name])
        ):
            changes.append(f"{name} limit {limits[name]} -> {requests[name]} (not below the request)")
            limits[name] = requests[name]
            grew = True
        if hit:
            capped.append(name)
    return ResourcePlan(
        target=ResourcesView(requests=requests, limits=limits),
        changes=tuple(changes),
        notes=tuple(notes),
        grew=grew,
        capped=tuple(capped),
    )
