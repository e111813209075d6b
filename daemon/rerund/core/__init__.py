"""The functional core: pure values and pure functions, no I/O, no clock reads, no logging.

Nothing in this package imports flyte, sqlite3, httpx, apscheduler or reads the clock; every
function takes ``now`` when it needs the time. The shell (``rerund.runtime``) reads facts,
calls the core and acts on the value it returns.
"""

from rerund.core.model import (
    Decision,
    DecisionKind,
    Defer,
    ErrorInfo,
    Failure,
    GiveUp,
    Ignore,
    Phase,
    Rerun,
    Scope,
)

__all__ = [
    "Decision",
    "DecisionKind",
    "Defer",
    "ErrorInfo",
    "Failure",
    "GiveUp",
    "Ignore",
    "Phase",
    "Rerun",
    "Scope",
]
