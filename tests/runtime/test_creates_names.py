"""The name guard of ``rerund.runtime.reconcile.creates``, without a control plane: which run
holding a rerun's name is another run (skip to the next salted name) and which is this rerun."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rerund.core.runs import LABEL_ATTEMPT, LABEL_ROOT, RelaunchRequest, RerunRequest, RunRef, RunSummary
from rerund.runtime.reconcile.creates import held_by_another, unvouched_relaunch
from rerund.runtime.reconcile.index import RerunInfo

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
SOURCE = RunRef("ml", "prod", "abc")
TARGET = RunRef("ml", "prod", "abc-r1")
OURS = ("abc", 1)


def holder(root: str | None, attempt: int | None, trusted: bool | None) -> RerunInfo:
    return RerunInfo(TARGET, T0, "oom", root, attempt, trusted=trusted)


@pytest.mark.parametrize(
    ("info", "relaunch", "another"),
    [
        pytest.param(holder("abc", 1, None), False, False, id="not-checked-yet-the-create-finds-out"),
        pytest.param(holder("abc", 1, True), False, False, id="ours-vouched"),
        pytest.param(holder("abc", 2, True), False, True, id="another-attempt"),
        pytest.param(holder("xyz", 1, True), False, True, id="another-lineage"),
        pytest.param(holder(None, None, False), False, True, id="a-run-merely-named-so"),
        pytest.param(holder("abc", 1, False), False, True, id="our-labels-nobody-vouches-for"),
        pytest.param(holder("abc", 1, False), True, False, id="a-relaunch-with-our-labels"),
        pytest.param(holder("xyz", 1, False), True, True, id="a-relaunch-with-other-labels"),
    ],
)
def test_the_index_says_when_a_rerun_name_is_held_by_another_run(
    info: RerunInfo, relaunch: bool, another: bool
) -> None:
    assert held_by_another(info, OURS, relaunch=relaunch) is another


LINEAGE = {LABEL_ROOT: "abc", LABEL_ATTEMPT: "1"}


@pytest.mark.parametrize(
    ("req", "there", "taken"),
    [
        pytest.param(
            RelaunchRequest(source=SOURCE, name=TARGET.name, task="train"),
            RunSummary(TARGET, "RUNNING", labels=LINEAGE),
            True,
            id="relaunch-of-our-labels-and-no-relation",
        ),
        pytest.param(
            RelaunchRequest(source=SOURCE, name=TARGET.name, task="train"),
            RunSummary(TARGET, "RUNNING", labels=LINEAGE, relation=SOURCE, relation_known=True),
            False,
            id="relaunch-name-held-by-a-rerun",
        ),
        pytest.param(
            RelaunchRequest(source=SOURCE, name=TARGET.name, task="train"),
            RunSummary(TARGET, "RUNNING", labels={LABEL_ROOT: "xyz", LABEL_ATTEMPT: "1"}),
            False,
            id="relaunch-name-held-by-another-lineage",
        ),
        pytest.param(
            RerunRequest(source=SOURCE, name=TARGET.name),
            RunSummary(TARGET, "RUNNING", labels=LINEAGE),
            False,
            id="a-rerun-is-never-taken-unvouched",
        ),
    ],
)
def test_a_relaunch_with_its_lineage_labels_and_no_relation_is_taken_as_that_relaunch(
    req: RerunRequest | RelaunchRequest, there: RunSummary, taken: bool
) -> None:
    assert unvouched_relaunch(req, there, OURS) is taken
