"""What the reconcile loop needs for relaunches: the latest task versions, and one way to send
a rerun or a relaunch.

``task_version: newer`` waits for a fix. The daemon learns that a fix is deployed by listing
the task's latest version once per resync pass, for each task at least one failure waits for
— so the cost is one ListTasks per waiting task name per pass, whatever the number of failures
waiting on it. What is listed is only a cache (``TaskVersions``): after a restart the waiting
failures are found again (the watermark holds them) and the first pass lists their tasks again.
"""

from __future__ import annotations

from collections.abc import Iterable

from rerund.core.runs import FailureFacts, RelaunchRequest, RerunRequest, RunRef
from rerund.errors import ControlPlaneError, PermanentControlPlaneError, UnsupportedError
from rerund.ports import ControlPlane

__all__ = ["TaskKey", "TaskVersions", "send", "task_key"]

TaskKey = tuple[str, str, str]  # project, domain, task


def task_key(facts: FailureFacts) -> TaskKey:
    """The (project, domain, task) of a failed run's (root) task."""
    ref = facts.summary.ref
    return (ref.project, ref.domain, facts.summary.task)


class TaskVersions:
    """The latest deployed version of each task the daemon asked about (None: not listed)."""

    def __init__(self, control_plane: ControlPlane) -> None:
        self._cp = control_plane
        self._latest: dict[TaskKey, str | None] = {}

    def latest(self, key: TaskKey) -> str | None:
        """The version last listed for ``key`` (None: never listed, or none deployed)."""
        return self._latest.get(key)

    async def refresh(self, keys: Iterable[TaskKey]) -> list[ControlPlaneError]:
        """List the latest version of each task in ``keys`` (1 ListTasks each). A failed
        listing keeps what was known and is returned (the next pass lists again)."""
        errors: list[ControlPlaneError] = []
        for key in sorted(set(keys)):
            try:
                self._latest[key] = await self._cp.latest_task_version(*key)
            except UnsupportedError:
                return errors  # no deployed tasks on this control plane: no version is known
            except ControlPlaneError as exc:
                errors.append(exc)
        return errors

    def forget(self, keys: Iterable[TaskKey]) -> None:
        """Drop tasks no failure waits for any more (the cache stays as small as the waits)."""
        for key in keys:
            self._latest.pop(key, None)


async def send(control_plane: ControlPlane, request: RerunRequest | RelaunchRequest) -> RunRef:
    """Create the rerun or the relaunch of ``request`` (the same errors either way)."""
    if isinstance(request, RerunRequest):
        return await control_plane.create_rerun(request)
    try:
        return await control_plane.create_relaunch(request)
    except UnsupportedError:
        raise PermanentControlPlaneError(
            f"relaunch {request.name!r} of run {request.source.name!r}: this control plane adapter cannot "
            "relaunch deployed tasks; use the flyte adapter or change the policy's scope",
            rpc="CreateRun",
            code="unimplemented",
        ) from None
