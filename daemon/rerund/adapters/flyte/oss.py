"""Creating a run on open-source Flyte exactly once: look first, create with a mark, read the
mark back. Written once; ``FlyteControlPlane.create_rerun`` and ``create_relaunch`` both go
through ``create_looking_first`` when the backend is open-source Flyte.

Why (flyteorg/flyte v2.0.43, ``runs/service/run_service.go``):

- CreateRun of an existing name returns the existing run as a success, after overwriting its
  inline inputs and enqueueing it again (``ActionsService.Enqueue``): the run executes again.
  So rerund looks first (GetRunDetails of the deterministic name): found ->
  ``AlreadyExistsError``, what ALREADY_EXISTS means on Union.
- GetRunDetails answers NOT_FOUND for *any* database error, so its NOT_FOUND alone does not
  prove absence: a ListRuns filtered on ``run_name`` (whose database errors come back INTERNAL,
  transient here: the create waits for a later pass) must find no run either.
- Two replicas can both look and both create in the same moment: there is still one run (the
  name is deterministic); the create carries a random ``rerund-issue`` annotation that a
  GetRunDetails after it compares, so the one whose run it is not records "already issued".
- The look is made again right before the CreateRun goes out, as a ListRuns filtered on
  ``run_name`` (a GetRunDetails there would take a database error's NOT_FOUND for "absent":
  the 1,000-failure storm under ``db_errors`` 0.3 re-executed two runs so) (``RunReads.looking_again``,
  sent by ``tuning.ReuseReads``: after the SDK's SelectCluster, GetActionData and UploadInputs,
  which under a storm take long enough for another replica's run to be created and finish):
  found -> ``AlreadyExistsError``, no CreateRun. On the plain SDK path (``sdk_tuning: false``,
  no interceptor) the create itself makes that look right before the SDK's create call
  (``FlyteControlPlane._absent_right_before_creating``), before the SDK's own reads.
  Looking first, and again last, keeps a second execution to creates within one
  ListRuns of each other (on the plain path, within the SDK's reads), which meet a run
  still executing.
- CreateRun checks nothing of the request beyond the run name and the project (no
  ``buf.validate`` rule is enforced: the generated ``Validate()`` ignores them), so it does not
  check that the run a rerun names in ``relation.related_to`` exists: the look before creating
  also reads the source (GetRunDetails; a NOT_FOUND confirmed by a ListRuns on its name) and
  a source that is gone is a ``PermanentControlPlaneError`` (``source_gone``): no run whose
  source does not exist. Its answer is kept for the SDK's own read of the source.
- Once the look found nothing, a run read answering NOT_FOUND (the source's details, the SDK's
  read of the source, the mark read back) is a database error: transient, never "refused".

Cost: five RPCs more per create (GetRunDetails of the run, ListRuns, GetRunDetails of the
source, ListRuns just before the CreateRun, GetRunDetails after it).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

from rerund.core.runs import RunRef
from rerund.errors import (
    AlreadyExistsError,
    NotFoundError,
    PermanentControlPlaneError,
    TransientControlPlaneError,
)

__all__ = ["ANNOTATION_ISSUER", "RunReads", "create_looking_first"]

# oss: a random mark on each create (an annotation), so an answer with another process's run is
# recognised
ANNOTATION_ISSUER = "rerund-issue"


class RunReads(Protocol):
    """The reads the protocol makes (implemented by ``FlyteControlPlane``)."""

    async def run_details_answer(self, ref: RunRef, *, confirm_absent: bool = True) -> tuple[Any, Any]:
        """GetRunDetails of ``ref``: (request, answer); ``NotFoundError`` when absent."""
        ...

    async def listed_by_name(self, ref: RunRef, what: str) -> bool:
        """Whether a ListRuns filtered on ``run_name`` finds ``ref``."""
        ...

    async def source_read(self, ref: RunRef) -> None:
        """GetRunDetails of ``ref`` (a NOT_FOUND confirmed by a ListRuns), kept for the SDK's
        own read of it; ``NotFoundError`` when it is gone."""
        ...

    async def issue_mark(self, ref: RunRef) -> str:
        """The ``rerund-issue`` annotation of ``ref`` ("" when it has none)."""
        ...

    def looking_again(self, ref: RunRef) -> AbstractContextManager[None]:
        """Within: the CreateRun of ``ref`` is preceded by one more look for it (a ListRuns on
        its name) and not sent when that finds the run (an ``AlreadyExistsError`` out of the
        create)."""
        ...


async def create_looking_first(
    reads: RunReads, source: RunRef, target: RunRef, create: Callable[[str], Awaitable[RunRef]]
) -> RunRef:
    """Create run ``target`` with ``create(mark)`` (which must put ``mark`` in the run's
    ``rerund-issue`` annotation) only when it does not exist, and only once.

    Raises ``AlreadyExistsError`` when the run existed before (found by the look, or by the
    look again right before the CreateRun) or was created by another process at the same
    moment (its mark is not this create's)."""
    mark = await _look_first(reads, source, target)
    with _not_found_is_a_database_error(target):
        try:
            with reads.looking_again(target):
                made = await create(mark)
        except AlreadyExistsError as exc:  # oss's CreateRun answers none: the last look did
            raise _found_just_before_creating(target) from exc
        if await reads.issue_mark(target) != mark:
            raise AlreadyExistsError(
                f"CreateRun: run {target} was created by another process at the same "
                "moment (open-source Flyte answered with that run as a success)",
                rpc="CreateRun",
                code="already_exists",
            )
    return made


async def _look_first(reads: RunReads, source: RunRef, target: RunRef) -> str:
    """The mark of this create; ``AlreadyExistsError`` when ``target`` exists,
    ``PermanentControlPlaneError`` (``source_gone``) when ``source`` does not."""
    try:
        await reads.run_details_answer(target, confirm_absent=False)
    except NotFoundError:
        pass
    else:
        raise _found_before_creating(target)
    if await reads.listed_by_name(target, "CreateRun"):
        raise _found_before_creating(target)
    try:
        await reads.source_read(source)
    except NotFoundError as exc:
        raise PermanentControlPlaneError(
            f"CreateRun of {target}: its source run {source} is gone (GetRunDetails and a ListRuns "
            "on its name find no run); open-source Flyte does not check a rerun's source, so the run "
            f"is not created: {exc}",
            rpc="CreateRun",
            code="source_gone",
        ) from exc
    return uuid.uuid4().hex[:12]


def _found_before_creating(target: RunRef) -> AlreadyExistsError:
    return AlreadyExistsError(
        f"CreateRun: run {target} already exists (found before creating it; "
        "open-source Flyte would have returned it as a success and run it again)",
        rpc="CreateRun",
        code="already_exists",
    )


def _found_just_before_creating(target: RunRef) -> AlreadyExistsError:
    return AlreadyExistsError(
        f"CreateRun: run {target} already exists (found just before creating it: another process "
        "created it after the look before; open-source Flyte would have run it again)",
        rpc="CreateRun",
        code="already_exists",
    )


@contextlib.contextmanager
def _not_found_is_a_database_error(target: RunRef) -> Iterator[None]:
    """Once the look before creating ``target`` found nothing: a run read that answers
    NOT_FOUND now is a run that exists (a database error). Retried (transient), never settled
    as refused. A project that does not exist stays NOT_FOUND."""
    try:
        yield
    except NotFoundError as exc:
        if "project" in str(exc).lower() and exc.rpc != "GetRunDetails":
            raise
        raise TransientControlPlaneError(
            f"CreateRun of {target}: a run read answered NOT_FOUND, which open-source Flyte also "
            f"answers for a database error; retried: {exc}",
            rpc=exc.rpc,
            code="internal",
        ) from exc
