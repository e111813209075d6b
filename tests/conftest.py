"""Shared pytest configuration: the sandbox fixtures (``sandbox``, ``sandbox_factory``), and for
decision and policy tests, policies from YAML text (through the real loader) and failures."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from rerund.adapters.ledger import Ledger
from rerund.adapters.sqlstate.ledger import PostgresLedger
from rerund.core.model import Failure
from rerund.core.rules import PolicySet
from rerund.policy import load_policies

pytest_plugins = ["rerund.sandbox.testing", "postgres_support"]

# Hypothesis's per-example deadline is a timing assertion: on a loaded CI machine a 200 ms
# deadline fails tests whose properties hold. Pass/fail tests never assert on timings, so the
# suite's profile has none (a test's own @settings still sets its example count).
settings.register_profile("rerund", deadline=None)
settings.load_profile("rerund")

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@pytest.fixture
def policies(tmp_path) -> Callable[[str], PolicySet]:
    """``policies(yaml_text)`` -> a PolicySet loaded from a real file (header added)."""
    counter = iter(range(1000))

    def make(body: str) -> PolicySet:
        path = tmp_path / f"p{next(counter)}.yaml"
        path.write_text("apiVersion: rerund/v1\n" + textwrap.dedent(body))
        return load_policies([path])

    return make


def _failure(**overrides: Any) -> Failure:
    data: dict[str, Any] = {
        "run": "abc123",
        "project": "ml",
        "domain": "production",
        "task": "train.fit",
        "labels": {"team": "ml"},
        "action": "a0",
        "error": {"kind": "SYSTEM", "code": "ConnectionResetError", "message": "Connection reset by peer"},
        "failed_at": T0,
    }
    data.update(overrides)
    return Failure.model_validate(data)


@pytest.fixture
def make_failure() -> Callable[..., Failure]:
    """``make_failure(**fields)``: a SYSTEM connection-reset failure of run 'abc123' at T0."""
    return _failure


@pytest.fixture(params=["sqlite", "postgresql"])
def open_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """``open_ledger()``: a new handle on this test's one ledger (an SQLite file or a PostgreSQL
    database), as a new process would open it; every handle is closed after the test."""
    handles: list[Any] = []
    where = tmp_path / "r.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")

    def opened() -> Any:
        handles.append(Ledger(where) if request.param == "sqlite" else PostgresLedger(where))
        return handles[-1]

    yield opened
    for handle in handles:
        handle.close()
