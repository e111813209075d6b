"""For the tests that drive the flyte-SDK adapter against a sandbox over real HTTP: a connected
adapter, the RPCs a call cost, and the flaky task most of their workloads start from."""

from __future__ import annotations

import asyncio
from typing import Any

from rerund.adapters.flyte.control_plane import FlyteControlPlane
from rerund.sandbox.testing import SandboxHandle

# A task that fails once with a connection reset (SYSTEM), then succeeds.
NET_FLAKY: dict[str, Any] = {
    "duration": "0.2s",
    "behaviour": ["fail", "succeed"],
    "error": {
        "kind": "SYSTEM",
        "code": "ConnectionResetError",
        "message": "connection reset by peer",
    },
}


def connected(sb: SandboxHandle, backend: str = "auto") -> FlyteControlPlane:
    """An adapter connected to ``sb`` over plain HTTP (10 s per RPC)."""
    cp = FlyteControlPlane(endpoint=sb.endpoint, org=sb.org, insecure=True, rpc_timeout=10, backend=backend)
    asyncio.run(cp.connect())
    return cp


def rpc_delta(sb: SandboxHandle, before: dict[str, int]) -> dict[str, int]:
    """The RPCs ``sb`` served since ``before`` (``sb.request_counts()``), by method: the cost of a call."""
    after = sb.request_counts()
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
