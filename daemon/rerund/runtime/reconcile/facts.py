"""Whether the facts just read of a failed run are the ones to decide on: no RPC; it marks
what it finds in ``OwedWork`` and says it in the log. The loop carries out the answer.

- Executing again when read (listed failed, QUEUED or RUNNING in ``facts``): never decided
  (None, remembered as settled); the run's next end is a new failure.
- FAILED without error details yet (open-source Flyte fills them once the last attempt's
  events arrived): ``ReadAgain`` every ``error_recheck``, for at most ``error_wait`` after it
  failed; then decided without them, with a warning. Never settled on facts that may still
  change.
- ABORTED only because an operator aborted a run that had already finished (open-source
  AbortRun has no phase condition): a finished SUCCEEDED run is never decided (None, remembered
  as settled); a FAILED or TIMED_OUT one is decided as what it was (the same decision, so the
  same rerun name: never a second rerun).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from rerund.core.lineage import decided_as
from rerund.core.runs import FAILED_PHASES, FailureFacts, RunSummary
from rerund.runtime.reconcile.owed import OwedWork

__all__ = ["ReadAgain", "facts_to_decide"]

log = logging.getLogger("rerund.reconcile")


@dataclass(frozen=True)
class ReadAgain:
    """The error details are late: read the failure again at ``due``."""

    due: datetime


def facts_to_decide(
    summary: RunSummary, facts: FailureFacts, owed: OwedWork, now: datetime
) -> FailureFacts | ReadAgain | None:
    """The facts to decide ``summary``'s failure on, ``ReadAgain`` (not now), or None (never:
    the loop settles it)."""
    ref = summary.ref
    if facts.summary.phase not in FAILED_PHASES:  # listed failed, executing again when read
        log.info(
            "run %s: not decided: listed %s but %s when read (open-source Flyte runs a run again "
            "when a CreateRun names it); its next end is decided",
            ref,
            summary.phase,
            facts.summary.phase,
        )
        owed.remember(ref, (summary.phase, summary.ended_at), None, settled=True)
        return None
    if facts.error_pending:
        late = owed.await_error(summary, facts.failed_at, now)
        if late is not None:
            if late.first:
                log.info(
                    "run %s is FAILED but its error details have not arrived yet; rerund waits up to "
                    "%ss after the failure for them before deciding (reads it again in %.1fs)",
                    ref,
                    f"{owed.error_wait.total_seconds():g}",
                    (late.due - now).total_seconds(),
                )
            return ReadAgain(late.due)
        log.warning(
            "run %s: its error details did not arrive within %ss of the failure; deciding without "
            "them (no error kind, code or message for the policies to match)",
            ref,
            f"{owed.error_wait.total_seconds():g}",
        )
    owed.error_arrived(ref)
    decided = decided_as(facts)
    if decided is None:
        log.info(
            "run %s: ignored: it is ABORTED only because it was aborted after it had %s",
            ref,
            facts.finished_phase,
        )
        owed.remember(ref, (summary.phase, summary.ended_at), None, settled=True)
    return decided
