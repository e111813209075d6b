"""Time as rerund writes it: ISO-8601 in UTC with a ``Z`` — in decisions, the ledger, logs,
webhooks and every command's output. One formatter, so the forms cannot drift apart."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["iso"]


def iso(when: datetime) -> str:
    """``when`` (aware) as ISO-8601 UTC with a ``Z``, e.g. ``2026-11-24T10:00:00Z``."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")
