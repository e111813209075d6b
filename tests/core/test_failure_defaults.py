"""A failure's defaults that depend on other fields, filled by a validator (no mutation of a
frozen model)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from rerund.core.model import Failure

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("given", "root", "action_task"),
    [
        ({"run": "abc", "task": "train.fit"}, "abc", "train.fit"),
        ({"run": "abc", "root": "", "task": "train.fit", "action_task": ""}, "abc", "train.fit"),
        ({"run": "abc-retry-1", "root": "abc", "task": "etl", "action_task": "etl.load"}, "abc", "etl.load"),
        ({"run": "abc"}, "abc", ""),
    ],
    ids=["both-default", "empty-means-default", "both-given", "no-task"],
)
def test_root_defaults_to_the_run_and_action_task_to_the_task(
    given: dict[str, Any], root: str, action_task: str
) -> None:
    f = Failure(failed_at=T0, **given)
    assert (f.root, f.action_task) == (root, action_task)


def test_a_run_that_is_not_a_string_is_reported_once_as_itself() -> None:
    with pytest.raises(ValidationError, match="1 validation error for Failure\nrun\n"):
        Failure.model_validate({"run": 5, "failed_at": T0})
