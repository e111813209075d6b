"""Open-source WatchRuns' first message is a 101-row listing in the service's default order,
``phase ASC, created_at DESC, run_name DESC`` (``runs/repository/impl/action.go``
``ListActions``): queued and running runs come first, so on a busy control plane no failed run
is in it (issue 26.6). rerund never relies on it: the resync (``list_failed``, paged by
``created_at``) finds every failed run, beyond the 200 rows of one open-source page too."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapter_support import connected
from rerund.sandbox.profiles import OSS
from rerund.sandbox.testing import start_sandbox

pytestmark = pytest.mark.e2e

WORKLOAD: dict[str, Any] = {
    "tasks": {
        "slow": {"duration": "1h"},
        "bad": {
            "behaviour": ["fail"],
            "error": {"kind": "USER", "code": "ValueError", "message": "ValueError: x"},
        },
    }
}


def test_failed_runs_missing_from_the_watch_snapshot_are_all_found_by_the_resync() -> None:
    with start_sandbox(WORKLOAD, time_scale=0.01, profile=OSS.with_error_delay(0)) as sb:
        since = datetime.now(UTC) - timedelta(minutes=1)
        failed = sb.launch("bad", count=230)
        for name in failed:
            sb.wait_for(name)
        sb.launch("slow", count=105)
        cp = connected(sb, backend="oss")

        async def first_message() -> list[Any]:
            seen = []
            async for run in cp.watch(sb.project, sb.domain):
                seen.append(run)
                if len(seen) == 101:
                    return seen
            return seen

        snapshot = asyncio.run(first_message())
        listed = asyncio.run(cp.list_failed(sb.project, sb.domain, since=since))

    assert len(snapshot) == 101 and {r.phase for r in snapshot} <= {"QUEUED", "RUNNING"}
    assert sorted(r.ref.name for r in listed) == sorted(failed)  # every one, over two pages
