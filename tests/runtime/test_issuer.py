"""The one retry-with-backoff of control-plane calls (``rerund.runtime.reconcile.issuer``),
driven with an injected sleep and clock: no test waits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from rerund.errors import AlreadyExistsError, PermanentControlPlaneError, TransientControlPlaneError
from rerund.runtime.metrics import Metrics
from rerund.runtime.reconcile.issuer import DeadlineExceeded, Issuer, Stopped

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


class World:
    def __init__(self, failures: list[Exception]) -> None:
        self.registry = CollectorRegistry()
        self.now = T0
        self.slept: list[float] = []
        self.retried: list[float] = []
        self.failures = failures
        self.calls = 0
        self.stopping = asyncio.Event()

        async def sleep(seconds: float) -> None:
            self.slept.append(seconds)
            self.now += timedelta(seconds=seconds)

        self.issuer = Issuer(
            Metrics(self.registry), stopping=self.stopping, clock=lambda: self.now, sleep=sleep, maximum=4.0
        )

    async def fn(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"

    def call(self, until: datetime | None = None) -> str:
        return asyncio.run(
            self.issuer.call(self.fn, on_retry=lambda exc, delay: self.retried.append(delay), until=until)
        )

    def errors(self, code: str) -> float:
        return (
            self.registry.get_sample_value(
                "rerund_control_plane_errors_total", {"rpc": "CreateRun", "code": code}
            )
            or 0.0
        )


def unavailable() -> TransientControlPlaneError:
    return TransientControlPlaneError("down", rpc="CreateRun", code="unavailable")


def test_transient_errors_are_counted_and_retried_with_capped_doubling_delays():
    w = World([unavailable() for _ in range(5)])
    assert w.call() == "done"
    assert w.slept == w.retried == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert (w.calls, w.errors("unavailable")) == (6, 5)


@pytest.mark.parametrize(
    "error",
    [
        PermanentControlPlaneError("bad", rpc="CreateRun", code="invalid_argument"),
        AlreadyExistsError("exists", rpc="CreateRun", code="already_exists"),
    ],
    ids=["permanent", "already-exists"],
)
def test_permanent_errors_and_already_exists_are_the_callers(error):
    w = World([error])
    with pytest.raises(type(error)):
        w.call()
    assert (w.calls, w.slept) == (1, [])
    assert w.errors(error.code) == (0 if isinstance(error, AlreadyExistsError) else 1)


def test_a_transient_error_past_the_deadline_ends_the_retries_with_the_last_error():
    w = World([unavailable() for _ in range(10)])
    with pytest.raises(DeadlineExceeded, match="down") as info:
        w.call(until=T0 + timedelta(seconds=3))
    assert w.slept == [0.5, 1.0, 2.0]  # 3.5 s later the deadline has passed
    assert info.value.last.code == "unavailable"


def test_a_stopping_daemon_makes_no_further_attempt():
    w = World([unavailable()])
    w.stopping.set()
    with pytest.raises(Stopped):
        w.call()
    assert w.calls == 0


def test_the_wait_stays_at_its_maximum_however_many_attempts_failed():
    w = World([unavailable() for _ in range(5000)])
    assert w.call() == "done"
    assert w.slept[0] == 0.5
    assert w.slept[2] == 2.0
    assert w.slept[4999] == 4.0  # a day of retries: capped, no overflow
