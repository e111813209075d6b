"""Which control plane rerund talks to (``backend: union | oss | auto``), and what its ListRuns
takes: label filters (Union) or not (open-source Flyte), and the label filter NOT_EXISTS.

``auto`` finds out with the first label-filtered ListRuns: open-source Flyte answers
INVALID_ARGUMENT ``invalid filter field: labels.<k>`` (``runs/repository/impl/filters.go``),
logged once. What is learnt is kept for the life of the process.
"""

from __future__ import annotations

import logging

from rerund.errors import ConfigError, ControlPlaneError

__all__ = ["BACKENDS", "Backend", "refuses_labels"]

BACKENDS = ("auto", "union", "oss")

log = logging.getLogger("rerund.flyte")


def refuses_labels(exc: ControlPlaneError) -> bool:
    """Whether ``exc`` is open-source Flyte refusing a label filter (INVALID_ARGUMENT
    ``invalid filter field: labels.<k>``, ``runs/repository/impl/filters.go``)."""
    return exc.code == "invalid_argument" and "invalid filter field" in str(exc)


class Backend:
    """What is known of the control plane's ListRuns. ``label_filters``: True (Union), False
    (open-source Flyte) or None (not known yet); ``not_exists``: whether it takes the label
    filter NOT_EXISTS (None: untried). Each goes from unknown to known once, never back."""

    def __init__(self, configured: str) -> None:
        if configured not in BACKENDS:
            raise ConfigError(
                f"backend {configured!r} is not one of {', '.join(BACKENDS)}; set backend: auto"
            )
        self.label_filters: bool | None = {"auto": None, "union": True, "oss": False}[configured]
        self.not_exists: bool | None = None

    @property
    def name(self) -> str:
        """``union`` or ``oss`` once known (configured, or found by the first label filter),
        else ``auto``."""
        if self.label_filters is None:
            return "auto"
        return "union" if self.label_filters else "oss"

    @property
    def is_oss(self) -> bool:
        """Known to be open-source Flyte."""
        return self.label_filters is False

    def found_oss(self, exc: ControlPlaneError) -> None:
        self.label_filters = False
        log.warning(
            "the control plane refuses label filters (%s): it is open-source Flyte, so rerund lists runs "
            "and reads their labels from the run details (one GetRunDetails per run created in the "
            "window, once), and looks for an existing rerun before creating one; set backend: oss to "
            "skip this discovery",
            exc,
        )

    def found_union(self) -> None:
        if self.label_filters is None:
            self.label_filters = True
            log.info(
                "the control plane takes label filters (Union); set backend: union to skip this discovery"
            )

    def found_no_not_exists(self, exc: ControlPlaneError) -> None:
        self.not_exists = False
        log.warning(
            "the control plane rejects the label filter NOT_EXISTS (%s); reproduction reruns are now "
            "told apart by reading their labels, which costs more RPCs",
            exc,
        )
