"""The leadership of a file state: one replica, which always leads. Apart from
``rerund.adapters.sqlstate`` so that a daemon on an SQLite file loads no SQL toolkit."""

from __future__ import annotations

import os
import socket

__all__ = ["SoleLeader", "local_identity"]


def local_identity() -> str:
    """``host:pid`` of this process; in Kubernetes the pod's name (``POD_NAME``, from the
    downward API; else the hostname, which is the pod's name too)."""
    host = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{host}:{os.getpid()}"


class SoleLeader:
    """``ports.Leadership`` for a file state: one replica, which always leads (term 0)."""

    def __init__(self, identity: str | None = None) -> None:
        self._identity = identity or local_identity()

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def term(self) -> int | None:
        return 0

    def acquire(self) -> bool:
        return True

    def held(self) -> bool:
        return True

    def leader(self) -> tuple[str, int] | None:
        return (self._identity, 0)

    def confirm(self) -> None:
        return None

    def release(self) -> None:
        return None
