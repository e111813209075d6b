"""ListRuns / ListActions filters and sorting, parsed from ``common.ListRequest`` (pure).

Supported run filters (what the SDK and rerund send): ``phase`` EQUAL / VALUE_IN / NOT_EQUAL /
VALUE_NOT_IN (enum numbers or names; the SDK's single-phase quirk sends ``"10"`` as
``["1", "0"]``, which is joined back), ``created_at`` / ``updated_at`` with the comparison
functions and ISO-8601 values, ``labels.<key>`` EQUAL / NOT_EQUAL / EXISTS / NOT_EXISTS,
``task_name``, ``task_version``, ``created_by`` and ``name`` EQUAL / VALUE_IN / CONTAINS.
Actions additionally accept ``parent_name``. An unsupported filter is refused with
INVALID_ARGUMENT naming the field, so a client bug does not silently match everything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flyteidl2.common import list_pb2, phase_pb2

__all__ = ["Filter", "QueryError", "Sort", "parse_filters", "parse_phase", "parse_sort"]

F = list_pb2.Filter
_FN_NAMES = {v: k for k, v in F.Function.items()}

RUN_FIELDS = (
    "phase",
    "created_at",
    "updated_at",
    "labels.<key>",
    "task_name",
    "task_version",
    "created_by",
    "name",
)
ACTION_FIELDS = ("phase", "created_at", "updated_at", "parent_name", "task_name", "name")
SORT_KEYS = ("created_at", "updated_at", "name", "phase", "start_time", "end_time")


class QueryError(ValueError):
    """A filter or sort the sandbox cannot apply (answered as INVALID_ARGUMENT)."""


def parse_phase(value: str) -> int:
    """A phase given as an enum number (``"6"``) or name (``FAILED``, ``ACTION_PHASE_FAILED``)."""
    v = value.strip()
    if v.isdigit():
        n = int(v)
        if n in phase_pb2.ActionPhase.values():
            return n
    else:
        name = v.upper()
        name = name if name.startswith("ACTION_PHASE_") else f"ACTION_PHASE_{name}"
        if name in set(phase_pb2.ActionPhase.keys()):
            return int(phase_pb2.ActionPhase.Value(name))
    raise QueryError(f"unknown phase {value!r}; use a number 1-10 or a name such as FAILED")


def _parse_time(value: str) -> datetime:
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"time {value!r} is not ISO-8601, e.g. 2026-11-25T06:00:00+00:00") from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


_COMPARE: dict[int, Callable[[Any, Any], bool]] = {
    F.EQUAL: lambda a, b: a == b,
    F.NOT_EQUAL: lambda a, b: a != b,
    F.GREATER_THAN: lambda a, b: a > b,
    F.GREATER_THAN_OR_EQUAL: lambda a, b: a >= b,
    F.LESS_THAN: lambda a, b: a < b,
    F.LESS_THAN_OR_EQUAL: lambda a, b: a <= b,
}


@dataclass(frozen=True)
class Filter:
    """One parsed filter. ``field`` is the attribute name (``labels.team`` keeps its key in
    ``label``); ``phases`` / ``times`` / ``strings`` hold the parsed values."""

    field: str
    function: int
    phases: frozenset[int] = frozenset()
    time: datetime | None = None
    strings: tuple[str, ...] = ()
    label: str | None = None

    def matches(self, get: Callable[[str], Any], labels: Callable[[], dict[str, str]]) -> bool:
        fn = self.function
        if self.field == "phase":
            inside = get("phase") in self.phases
            return inside if fn in (F.EQUAL, F.VALUE_IN) else not inside
        if self.time is not None:
            return _COMPARE[fn](get(self.field), self.time)
        if self.label is not None:
            lab = labels()
            if fn == F.EXISTS:
                return self.label in lab
            if fn == F.NOT_EXISTS:
                return self.label not in lab
            if fn == F.EQUAL:
                return lab.get(self.label) == self.strings[0]
            if fn == F.NOT_EQUAL:
                return lab.get(self.label) != self.strings[0]
            return lab.get(self.label) in self.strings  # VALUE_IN
        value = get(self.field)
        if fn == F.EQUAL:
            return bool(value == self.strings[0])
        if fn == F.NOT_EQUAL:
            return bool(value != self.strings[0])
        if fn == F.VALUE_IN:
            return value in self.strings
        if fn == F.VALUE_NOT_IN:
            return value not in self.strings
        if fn == F.CONTAINS:
            return self.strings[0] in str(value)
        return self.strings[0].lower() in str(value).lower()  # CONTAINS_CASE_INSENSITIVE


def _one(f: list_pb2.Filter, what: str) -> None:
    if len(f.values) != 1:
        raise QueryError(f"filter {what} {_FN_NAMES.get(f.function, f.function)} needs exactly one value")


def parse_filters(filters: Sequence[list_pb2.Filter], *, for_actions: bool = False) -> list[Filter]:
    """Parse ``ListRequest.filters``. Raises ``QueryError`` naming the unsupported part."""
    out: list[Filter] = []
    string_fields = {"task_name", "task_version", "created_by", "name"} | (
        {"parent_name"} if for_actions else set()
    )
    supported = ACTION_FIELDS if for_actions else RUN_FIELDS
    for f in filters:
        fn = f.function
        fname = _FN_NAMES.get(fn, str(fn))
        field = f.field
        if field == "phase":
            if fn not in (F.EQUAL, F.VALUE_IN, F.NOT_EQUAL, F.VALUE_NOT_IN):
                raise QueryError(f"filter phase {fname} is not supported; use EQUAL or VALUE_IN")
            values = list(f.values)
            if fn in (F.EQUAL, F.NOT_EQUAL) and len(values) > 1:
                values = ["".join(values)]  # the SDK passes a single phase string as the list
            if not values:
                raise QueryError(f"filter phase {fname} needs at least one value")
            out.append(Filter("phase", fn, phases=frozenset(parse_phase(v) for v in values)))
        elif field in ("created_at", "updated_at", "start_time", "end_time"):
            if fn not in _COMPARE:
                raise QueryError(
                    f"filter {field} {fname} is not supported; use a comparison such as GREATER_THAN_OR_EQUAL"
                )
            _one(f, field)
            out.append(Filter(field, fn, time=_parse_time(f.values[0])))
        elif field.startswith("labels.") and not for_actions:
            key = field.removeprefix("labels.")
            if fn in (F.EXISTS, F.NOT_EXISTS):
                out.append(Filter(field, fn, label=key))
            elif fn in (F.EQUAL, F.NOT_EQUAL):
                _one(f, field)
                out.append(Filter(field, fn, label=key, strings=(f.values[0],)))
            elif fn == F.VALUE_IN:
                out.append(Filter(field, fn, label=key, strings=tuple(f.values)))
            else:
                raise QueryError(f"filter {field} {fname} is not supported; use EQUAL, VALUE_IN or EXISTS")
        elif field in string_fields:
            if fn not in (
                F.EQUAL,
                F.NOT_EQUAL,
                F.VALUE_IN,
                F.VALUE_NOT_IN,
                F.CONTAINS,
                F.CONTAINS_CASE_INSENSITIVE,
            ):
                raise QueryError(f"filter {field} {fname} is not supported")
            if fn in (F.VALUE_IN, F.VALUE_NOT_IN):
                if not f.values:
                    raise QueryError(f"filter {field} {fname} needs at least one value")
            else:
                _one(f, field)
            out.append(Filter(field, fn, strings=tuple(f.values)))
        else:
            raise QueryError(f"cannot filter on field {field!r}; supported fields: {', '.join(supported)}")
    return out


@dataclass(frozen=True)
class Sort:
    key: str
    ascending: bool


def parse_sort(sort_by: list_pb2.Sort | None, *, default_ascending: bool = False) -> Sort:
    """The sort of a request; empty means ``created_at`` (descending, the enum's zero value,
    unless ``default_ascending``)."""
    if sort_by is None or not sort_by.key:
        return Sort(
            "created_at",
            default_ascending if sort_by is None else sort_by.direction == list_pb2.Sort.ASCENDING,
        )
    if sort_by.key not in SORT_KEYS:
        raise QueryError(f"cannot sort by {sort_by.key!r}; supported keys: {', '.join(SORT_KEYS)}")
    return Sort(sort_by.key, sort_by.direction == list_pb2.Sort.ASCENDING)
