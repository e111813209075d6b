"""The reconcile loop, one job per module (listed in docs/architecture.md; ``loop``'s
docstring says why it is level-triggered and issues every rerun exactly once)."""

from rerund.runtime.reconcile.loop import DEFAULT_LOOKBACK, Reconciler, SyncReport
from rerund.runtime.reconcile.recorder import public_decision

__all__ = ["DEFAULT_LOOKBACK", "Reconciler", "SyncReport", "public_decision"]
