"""A trailing newline never passes an anchored check.

Python's ``$`` also matches before a final ``\\n``, so ``re.match(r"^[a-z]+$", "abc\\n")`` is a
match: a run name, a version, a label or a quantity ending in a newline would be accepted and then
refused (or worse, written) elsewhere. Every anchored pattern ends in ``\\Z``; this pins each one.
"""

from __future__ import annotations

import re

import pytest

from rerund.core import compare, cron, names, resources
from rerund.policy import model
from rerund.sandbox import records, workload

PATTERNS = [
    pytest.param(records._DNS1035, "abc", id="sandbox-run-name"),
    pytest.param(workload._VERSION, "v1", id="sandbox-task-version"),
    pytest.param(model._K8S_NAME, "team-a", id="policy-k8s-name"),
    pytest.param(model._DNS_SUBDOMAIN, "rerund.io", id="policy-annotation-prefix"),
    pytest.param(resources._MULTIPLIER, "2x", id="resource-multiplier"),
    pytest.param(compare._IDENT, "loss", id="compare-identifier"),
    pytest.param(cron._DOW_TOKEN, "mon", id="cron-day-of-week"),
    pytest.param(names._DNS1035, "abc", id="rerun-name"),
]


@pytest.mark.parametrize(("pattern", "good"), PATTERNS)
def test_an_anchored_pattern_takes_its_value_but_not_with_a_trailing_newline(
    pattern: re.Pattern[str], good: str
) -> None:
    assert pattern.match(good)
    assert pattern.match(good + "\n") is None


def test_the_sandbox_refuses_a_run_name_ending_in_a_newline() -> None:
    assert records.name_problem("abc") is None
    assert records.name_problem("abc\n") is not None
