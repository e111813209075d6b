"""Which runs the daemon covers, and which listings and streams cover them. Pure: no I/O.

A scope is ``project/domain`` where either part may be a shell-style pattern (``*``, ``?``,
``[...]``): ``*/*`` is the whole org, ``ml/*`` every domain of project ml, ``*/production`` the
production domain of every project. The control plane lists and watches either one
project/domain or the whole org (``ListRuns`` / ``WatchRuns`` with ``org``); a pattern is served
by the org-wide listing and stream, filtered here. So one org-wide listing and one stream serve
every wildcard scope together, and a project created later is covered without a restart.

Invariants (pinned by tests):
- ``plan(scopes)`` lists each concrete scope not covered by a wildcard once, and the org
  (``ORG``) once when any scope is a wildcard; every scope is covered by some listing.
- ``Coverage.covers(project, domain)`` is true exactly when some scope matches both parts.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

__all__ = ["ORG", "Coverage", "is_pattern", "plan"]

ORG = ("*", "*")
"""The listing key of the org-wide listing and stream."""

_PATTERN_CHARS = "*?["


def is_pattern(part: str) -> bool:
    return any(c in part for c in _PATTERN_CHARS)


@functools.lru_cache(maxsize=4096)  # asked for every WatchRuns message; projects are few
def _covers(scopes: tuple[tuple[str, str], ...], project: str, domain: str) -> bool:
    return any(fnmatchcase(project, p) and fnmatchcase(domain, d) for p, d in scopes)


@functools.lru_cache(maxsize=4096)  # asked per owed failure on every pass (``OwedWork.advance``)
def _in_listing(
    scopes: tuple[tuple[str, str], ...], listing: tuple[str, str], project: str, domain: str
) -> bool:
    if listing == ORG:
        return any(
            (is_pattern(p) or is_pattern(d)) and fnmatchcase(project, p) and fnmatchcase(domain, d)
            for p, d in scopes
        )
    return listing == (project, domain) and not _in_listing(scopes, ORG, project, domain)


@dataclass(frozen=True)
class Coverage:
    """The configured scopes, as patterns."""

    scopes: tuple[tuple[str, str], ...]

    def covers(self, project: str, domain: str) -> bool:
        return _covers(self.scopes, project, domain)

    def in_listing(self, listing: tuple[str, str], project: str, domain: str) -> bool:
        """Whether a run of ``project/domain`` is found by ``listing`` (a key from ``plan``):
        the org-wide listing finds what a pattern covers, a concrete listing its own scope.
        Each covered run is found by exactly one listing of ``plan(scopes)``. Remembered per
        (scopes, listing, project, domain): projects and domains are few, and the loop asks
        this for every owed failure on every pass."""
        return _in_listing(self.scopes, listing, project, domain)

    def finds(self, listing: str, project: str, domain: str) -> bool:
        """``in_listing`` with the listing written ``project/domain`` (``*/*``: the org)."""
        lp, _, ld = listing.partition("/")
        return self.in_listing((lp, ld), project, domain)

    @property
    def org_wide(self) -> bool:
        return any(is_pattern(p) or is_pattern(d) for p, d in self.scopes)


def plan(scopes: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The listings (and streams) that cover ``scopes``: concrete ``(project, domain)`` pairs
    and, when any scope is a pattern, ``ORG`` (first). Concrete scopes a pattern already
    covers are left out: the org-wide listing finds their runs."""
    all_scopes = tuple(dict.fromkeys(scopes))
    patterns = [s for s in all_scopes if is_pattern(s[0]) or is_pattern(s[1])]
    if not patterns:
        return all_scopes
    wide = Coverage(tuple(patterns))
    concrete = [s for s in all_scopes if s not in patterns and not wide.covers(*s)]
    return (ORG, *concrete)
