"""What the audit ledger records about a rerun, as values: the result of issuing it and its
outcome. The reconcile loop and the sweep build them, the recorder and the ``DecisionLedger``
port pass them whole, the ledger adapter stores them: one value instead of a wall of keyword
arguments repeated in every layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rerund.core.runs import RunRef

__all__ = ["IssueResult", "RerunIssue", "RerunOutcome"]

IssueResult = Literal["created", "already_exists", "dry_run", "invalid"]
"""How issuing a rerun ended: created, found to exist already, not created (--dry-run), or
refused (the control plane rejected it, or every name is taken)."""


@dataclass(frozen=True)
class RerunIssue:
    """The result of issuing the rerun ``target`` (a name in ``source``'s project and domain)
    of the failed run ``source``: lineage ``root``, ``attempt``, under ``policy`` with retry
    ``scope`` (``run``, ``action`` or ``relaunch``)."""

    source: RunRef
    target: str
    root: str
    attempt: int
    policy: str
    scope: str
    result: IssueResult
    message: str = ""

    @property
    def target_ref(self) -> RunRef:
        return RunRef(self.source.project, self.source.domain, self.target)


@dataclass(frozen=True)
class RerunOutcome:
    """The terminal ``phase`` of the rerun ``target`` (lineage ``root``, ``attempt``, created
    under ``policy``)."""

    target: RunRef
    policy: str
    root: str
    attempt: int
    phase: str
