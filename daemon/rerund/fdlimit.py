"""The process's open-file limit, raised once at start by the daemon and the sandbox.

Every socket and file is a descriptor; the soft limit is often 1,024 while the hard limit is
far higher. Each HTTP server derives how many connections it holds from the soft limit
(``rerund.core.hosts.connection_cap``), so raising it first leaves more room for both the
server and everything else (control-plane calls, the ledger, logs).

A leaf like ``rerund.errors`` and ``rerund.clock``: it imports no other rerund module, so the
sandbox may use it too.
"""

from __future__ import annotations

import logging
import resource

__all__ = ["raise_fd_limit", "soft_fd_limit"]

log = logging.getLogger("rerund")

_TARGET_WHEN_UNLIMITED = 1 << 16


def soft_fd_limit() -> int:
    """The soft ``RLIMIT_NOFILE`` in force."""
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def raise_fd_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (65,536 when the hard limit is
    unlimited); return the soft limit in force. A refusal is logged and the limit kept."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _TARGET_WHEN_UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if target <= soft:
        return int(soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning(
            "cannot raise the open-file limit from %d to %d (%s); keeping %d", soft, target, exc, soft
        )
        return int(soft)
    return int(target)
