"""When reproduction checks fire: cron firing times (timezones, DST, crontab weekdays), missed
firings coalesced into one after downtime, and two replicas never issuing a firing twice; and
what a firing reports when there is nothing to compare (no reference, a refused rerun, a
control plane that keeps failing).

No test sleeps: the schedule is driven with fixed times (``ReproRunner.due`` / ``tick`` take
``now``) or freezegun, and waiting with an injected clock, against an in-memory control plane."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun import freeze_time
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from rerund.adapters.cron import CronSchedule, cron_problem
from rerund.adapters.ledger import Ledger
from rerund.clock import utcnow
from rerund.core.repro import ReproCheck, ReproSource, repro_run_name
from rerund.core.runs import RerunRequest, RunRef, RunSummary
from rerund.errors import (
    AlreadyExistsError,
    ControlPlaneError,
    NotFoundError,
    PermanentControlPlaneError,
    TransientControlPlaneError,
)
from rerund.runtime.metrics import Metrics
from rerund.runtime.repro import ReproRunner


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# id -> (expression, timezone, after, expected next firing in UTC)
FIRINGS = {
    "daily at 03:00 UTC": ("0 3 * * *", "UTC", utc(2026, 11, 26, 10, 0), utc(2026, 11, 27, 3, 0)),
    "exactly at a slot the next one is later": (
        "0 3 * * *",
        "UTC",
        utc(2026, 11, 27, 3, 0),
        utc(2026, 11, 28, 3, 0),
    ),
    "Paris in winter is UTC+1": (
        "0 3 * * *",
        "Europe/Paris",
        utc(2026, 11, 26, 10, 0),
        utc(2026, 11, 27, 2, 0),
    ),
    "Paris in summer is UTC+2": ("0 3 * * *", "Europe/Paris", utc(2026, 7, 1, 10, 0), utc(2026, 7, 2, 1, 0)),
    "New York across the DST change": (
        "30 9 * * *",
        "America/New_York",
        utc(2026, 11, 1, 0, 0),  # 1 Nov 2026: EDT ends at 02:00 local
        utc(2026, 11, 1, 14, 30),
    ),
    "crontab weekdays: 1-5 is Monday to Friday": (
        "0 3 * * 1-5",
        "UTC",
        utc(2026, 11, 28, 12, 0),
        utc(2026, 11, 30, 3, 0),
    ),
    "crontab weekdays: 0 is Sunday": ("0 3 * * 0", "UTC", utc(2026, 11, 26, 12, 0), utc(2026, 11, 29, 3, 0)),
    "crontab weekdays: 7 is Sunday too": (
        "0 3 * * 7",
        "UTC",
        utc(2026, 11, 26, 12, 0),
        utc(2026, 11, 29, 3, 0),
    ),
    "crontab weekdays: */2 starts on Sunday": (
        "0 3 * * */2",
        "UTC",
        utc(2026, 11, 26, 12, 0),
        utc(2026, 11, 28, 3, 0),
    ),
    "every 15 minutes": ("*/15 * * * *", "UTC", utc(2026, 11, 26, 10, 7), utc(2026, 11, 26, 10, 15)),
}


@pytest.mark.parametrize(("expr", "tz", "after", "expected"), FIRINGS.values(), ids=list(FIRINGS))
def test_the_next_firing_is_computed_in_the_checks_timezone(expr, tz, after, expected):
    assert CronSchedule(expr, tz).next_after(after) == expected


LATEST = {
    "daily": ("0 3 * * *", "UTC", utc(2026, 11, 26, 10, 0), utc(2026, 11, 26, 3, 0)),
    "exactly at the slot": ("0 3 * * *", "UTC", utc(2026, 11, 26, 3, 0), utc(2026, 11, 26, 3, 0)),
    "before today's slot": ("0 3 * * *", "UTC", utc(2026, 11, 26, 2, 59), utc(2026, 11, 25, 3, 0)),
    "weekly": ("0 3 * * mon", "UTC", utc(2026, 11, 26, 10, 0), utc(2026, 11, 23, 3, 0)),
    "yearly": ("0 0 1 1 *", "UTC", utc(2026, 11, 26, 10, 0), utc(2026, 1, 1, 0, 0)),
    "Paris": ("0 3 * * *", "Europe/Paris", utc(2026, 11, 26, 10, 0), utc(2026, 11, 26, 2, 0)),
}


@pytest.mark.parametrize(("expr", "tz", "now", "expected"), LATEST.values(), ids=list(LATEST))
def test_the_latest_slot_at_or_before_now(expr, tz, now, expected):
    assert CronSchedule(expr, tz).latest_at_or_before(now) == expected


BAD_CRON = {
    "four fields": (
        "0 3 * *",
        "cron expression '0 3 * *' has 4 fields; write five fields: minute hour day-of-month month "
        "day-of-week, e.g. '0 3 * * *' (03:00 daily)",
    ),
    "minute out of range": (
        "61 3 * * *",
        "invalid cron expression '61 3 * * *': the last value (61) is higher than the maximum value (59); "
        "write five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * *' (03:00 daily)",
    ),
    "weekday out of range": (
        "0 3 * * 8",
        "day of week 8 in '0 3 * * 8' is out of range; use 0-7 (0 and 7 are Sunday) or sun-sat",
    ),
    "backwards weekday range": (
        "0 3 * * 5-1",
        "day of week range '5-1' in '0 3 * * 5-1' runs backwards; write it as two parts, e.g. 5-6,0",
    ),
}


@pytest.mark.parametrize(("expr", "message"), BAD_CRON.values(), ids=list(BAD_CRON))
def test_a_bad_cron_expression_says_what_to_write(expr, message):
    assert cron_problem(expr) == message


# -- the runner's schedule, with an in-memory control plane -----------------------------------


class FakeControlPlane:
    """Runs are SUCCEEDED as soon as they exist; CreateRun of an existing name: ALREADY_EXISTS."""

    def __init__(self) -> None:
        self.runs: dict[str, RunSummary] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.creates: list[str] = []
        self.create_error: ControlPlaneError | None = None
        self.list_error: ControlPlaneError | None = None
        self.add("ref1", outputs={"accuracy": 0.93})

    def add(
        self,
        name: str,
        outputs: Mapping[str, Any],
        phase: str = "SUCCEEDED",
        *,
        labels: Mapping[str, str] | None = None,
        relation: RunRef | None = None,
    ) -> None:
        self.runs[name] = RunSummary(
            RunRef("ml", "prod", name),
            phase,
            task="train.fit",
            labels=dict(labels or {}),
            relation=relation,
            relation_known=True,
        )
        self.outputs[name] = dict(outputs)

    async def get_run(self, ref: RunRef) -> RunSummary:
        if ref.name not in self.runs:
            raise NotFoundError(f"run {ref} not found", rpc="GetRunDetails", code="not_found")
        return self.runs[ref.name]

    async def find_latest_run(self, project: str, domain: str, **kwargs: Any) -> RunSummary | None:
        if self.list_error is not None:
            raise self.list_error
        return self.runs.get("ref1")

    async def read_outputs(self, ref: RunRef) -> dict[str, Any]:
        return self.outputs[ref.name]

    async def create_rerun(self, request: RerunRequest) -> RunRef:
        self.creates.append(request.name)
        if self.create_error is not None:
            raise self.create_error
        if request.name in self.runs:
            raise AlreadyExistsError(f"run {request.name!r} exists", rpc="CreateRun", code="already_exists")
        self.add(
            request.name, self.outputs[request.source.name], labels=request.labels, relation=request.source
        )
        return request.target

    def console_url(self, ref: RunRef) -> str:
        return f"https://console/{ref}"


def nightly(**kwargs: Any) -> ReproCheck:
    return ReproCheck(
        name="nightly",
        schedule=kwargs.pop("schedule", "0 3 * * *"),
        source=ReproSource(task="train.fit", project="ml", domain="prod"),
        **kwargs,
    )


def runner(
    check: ReproCheck,
    cp: FakeControlPlane | None = None,
    ledger: Ledger | None = None,
    metrics: Metrics | None = None,
) -> ReproRunner:
    return ReproRunner(
        cp or FakeControlPlane(),  # type: ignore[arg-type]
        checks=lambda: [check],
        schedules=CronSchedule,
        metrics=metrics or Metrics(CollectorRegistry()),
        clock=utcnow,
        ledger=ledger,
        poll_interval=0.01,
    )


def slots(r: ReproRunner, now: datetime) -> list[datetime]:
    return [slot for _, slot in r.due(now)]


def test_the_first_start_fires_the_latest_slot_once_then_each_new_slot():
    r = runner(nightly())

    assert slots(r, utc(2026, 11, 26, 10, 0)) == [utc(2026, 11, 26, 3, 0)]
    assert slots(r, utc(2026, 11, 26, 10, 1)) == []
    assert slots(r, utc(2026, 11, 27, 2, 59)) == []
    assert slots(r, utc(2026, 11, 27, 3, 0)) == [utc(2026, 11, 27, 3, 0)]
    assert slots(r, utc(2026, 11, 27, 3, 0, 30)) == []


def record(ledger: Ledger, slot: datetime) -> None:
    ledger.record_reproduction(
        {
            "check": "nightly",
            "scheduled_for": slot.isoformat(),
            "manual": False,
            "result": "match",
            "reason": "ok",
        },
        now=slot,
    )


def test_missed_firings_after_downtime_run_once_on_start_not_once_per_slot(tmp_path):
    ledger = Ledger(tmp_path / "rerund.db")
    record(ledger, utc(2026, 11, 23, 3, 0))  # Monday's firing, then the daemon was down until Thursday

    r = runner(nightly(), ledger=ledger)

    assert slots(r, utc(2026, 11, 26, 10, 0)) == [utc(2026, 11, 26, 3, 0)]
    assert slots(r, utc(2026, 11, 26, 10, 0)) == []


def test_an_hourly_check_down_for_five_hours_fires_once(tmp_path):
    ledger = Ledger(tmp_path / "rerund.db")
    record(ledger, utc(2026, 11, 26, 5, 0))

    r = runner(nightly(schedule="0 * * * *"), ledger=ledger)

    assert slots(r, utc(2026, 11, 26, 10, 20)) == [utc(2026, 11, 26, 10, 0)]


def test_a_restart_after_the_slot_was_recorded_does_not_fire_it_again(tmp_path):
    ledger = Ledger(tmp_path / "rerund.db")
    record(ledger, utc(2026, 11, 26, 3, 0))

    assert slots(runner(nightly(), ledger=ledger), utc(2026, 11, 26, 10, 0)) == []


def test_a_missed_firing_older_than_the_misfire_grace_waits_for_the_next_slot():
    r = runner(nightly(misfire_grace=timedelta(hours=1)))

    assert slots(r, utc(2026, 11, 26, 10, 0)) == []
    assert slots(r, utc(2026, 11, 27, 3, 30)) == [utc(2026, 11, 27, 3, 0)]


def test_the_schedule_follows_the_checks_timezone():
    r = runner(nightly(timezone="Europe/Paris"))

    assert slots(r, utc(2026, 11, 26, 1, 59)) == [utc(2026, 11, 25, 2, 0)]
    assert slots(r, utc(2026, 11, 26, 2, 0)) == [utc(2026, 11, 26, 2, 0)]
    assert r.next_wakeup(utc(2026, 11, 26, 2, 0)) == utc(2026, 11, 27, 2, 0)


def test_two_replicas_firing_the_same_slot_issue_one_rerun_and_both_record_the_result(tmp_path):
    cp = FakeControlPlane()
    check = nightly()
    ledgers = [Ledger(tmp_path / "a.db"), Ledger(tmp_path / "b.db")]
    a, b = runner(check, cp, ledgers[0]), runner(check, cp, ledgers[1])

    async def both() -> list[Any]:
        with freeze_time("2026-11-26T10:00:00Z", real_asyncio=True):
            tasks = a.tick(utcnow()) + b.tick(utcnow())
            return list(await asyncio.gather(*tasks))

    results = asyncio.run(both())

    name = repro_run_name("nightly", utc(2026, 11, 26, 3, 0))
    assert cp.creates == [name, name]
    assert [n for n in cp.runs if n != "ref1"] == [name]
    assert [(r.result, r.rerun) for r in results] == [("match", name), ("match", name)]
    assert [lg.reproduction_history("nightly")[0]["rerun"] for lg in ledgers] == [name, name]


def test_a_firing_name_held_by_a_run_that_is_not_the_firing_takes_the_next_salted_name(tmp_path, caplog):
    """Issue 22.1: a run someone named like the firing is no firing to follow and judge."""
    caplog.set_level("WARNING", logger="rerund.repro")
    cp = FakeControlPlane()
    slot = utc(2026, 11, 26, 3, 0)
    cp.add(repro_run_name("nightly", slot), outputs={"accuracy": 0.0})  # squatted: no label, no relation
    r = runner(nightly(), cp, Ledger(tmp_path / "a.db"))

    result = asyncio.run(r.fire(nightly(), slot))

    salted = repro_run_name("nightly", slot, salt=1)
    assert salted != repro_run_name("nightly", slot)
    assert (result.result, result.rerun) == ("match", salted)
    assert cp.runs[salted].labels["rerund-repro"] == "nightly"
    assert (
        "check nightly: rerun name ml/prod/rp-nightly-202611260300 is taken by a run that is not a "
        "firing of the check; the firing takes its next salted name"
    ) in caplog.text


def test_firing_the_same_slot_twice_in_one_process_follows_the_existing_rerun(tmp_path):
    cp = FakeControlPlane()
    metrics = Metrics(CollectorRegistry())
    r = runner(nightly(), cp, Ledger(tmp_path / "a.db"), metrics)
    slot = utc(2026, 11, 26, 3, 0)

    async def twice() -> list[Any]:
        return [await r.fire(nightly(), slot), await r.fire(nightly(), slot)]

    first, second = asyncio.run(twice())

    assert len(cp.runs) == 2
    assert first.result == second.result == "match"
    assert (
        metrics.registry.get_sample_value(  # counted once: the ledger knows the slot
            "rerund_reproduction_runs_total", {"check": "nightly", "result": "match"}
        )
        == 1
    )


def test_an_unknown_check_name_says_which_checks_exist():
    r = runner(nightly())

    with pytest.raises(KeyError, match="no reproduction check named 'nightlyy'; the checks are: nightly"):
        r.check("nightlyy")


# -- what a firing reports when it cannot compare --------------------------------------------

T0 = utc(2026, 11, 26, 3, 0)


def fire_once(check: ReproCheck, cp: FakeControlPlane) -> Any:
    """One firing with a clock that only moves when the runner waits."""
    now = [T0]

    async def sleep(seconds: float) -> None:
        now[0] += timedelta(seconds=seconds)

    r = ReproRunner(
        cp,  # type: ignore[arg-type]
        checks=lambda: [check],
        schedules=CronSchedule,
        metrics=Metrics(CollectorRegistry()),
        clock=lambda: now[0],
        poll_interval=1.0,
        sleep=sleep,
    )
    return asyncio.run(r.fire(check, T0))


def by_run(run: str, **kwargs: Any) -> ReproCheck:
    return ReproCheck(
        name="fixed", schedule="0 3 * * *", source=ReproSource(run=run, project="ml", domain="prod"), **kwargs
    )


def test_a_reference_run_that_does_not_exist_reports_failed():
    result = fire_once(by_run("gone"), FakeControlPlane())

    assert (result.result, result.reason) == (
        "failed",
        "check 'fixed': reference run 'gone' does not exist in ml/prod; fix source.run",
    )


def test_a_reference_run_still_running_reports_failed():
    cp = FakeControlPlane()
    cp.add("busy", {}, phase="RUNNING")

    result = fire_once(by_run("busy"), cp)

    assert (result.result, result.reason) == (
        "failed",
        "check 'fixed': reference run 'busy' is RUNNING, not terminal; a reference must have finished",
    )
    assert cp.creates == []


def test_a_rerun_the_control_plane_refuses_reports_failed_with_its_reason():
    cp = FakeControlPlane()
    cp.create_error = PermanentControlPlaneError(
        "CreateRun rejected the request as invalid: bad name", rpc="CreateRun", code="invalid_argument"
    )

    result = fire_once(by_run("ref1"), cp)

    assert (result.result, result.reason) == (
        "failed",
        "check 'fixed': the control plane refused to create rerun 'rp-fixed-202611260300' of 'ref1': "
        "CreateRun rejected the "
        "request as invalid: bad name",
    )


def test_a_control_plane_down_until_the_timeout_reports_failed_after_retrying():
    cp = FakeControlPlane()
    cp.list_error = TransientControlPlaneError(
        "ListRuns failed (unavailable)", rpc="ListRuns", code="unavailable"
    )
    check = ReproCheck(
        name="nightly",
        schedule="0 3 * * *",
        source=ReproSource(task="train.fit", project="ml", domain="prod"),
        timeout=timedelta(minutes=5),
    )

    result = fire_once(check, cp)

    assert (result.result, result.reason) == (
        "failed",
        "check 'nightly': the control plane kept failing until the timeout of 5m ran out "
        "(last: ListRuns failed (unavailable))",
    )


def test_a_rerun_that_never_ends_times_out_by_the_injected_clock():
    cp = FakeControlPlane()
    real_create = cp.create_rerun

    async def create_running(request: RerunRequest) -> RunRef:
        ref = await real_create(request)
        cp.add(request.name, {}, phase="RUNNING")
        return ref

    cp.create_rerun = create_running  # type: ignore[method-assign]

    result = fire_once(by_run("ref1", timeout=timedelta(minutes=10)), cp)

    assert result.result == "timeout"
    assert result.reason.endswith("was not terminal after the timeout of 10m; counted as timeout")


def test_a_source_without_project_or_scope_reports_failed():
    check = ReproCheck(name="x", schedule="0 3 * * *", source=ReproSource(task="t"))

    result = fire_once(check, FakeControlPlane())

    assert result.reason == (
        "check 'x': its source names no project/domain and the daemon has no scope that names both "
        "(under a wildcard scope such as */* it cannot run); set source.project and source.domain"
    )


@pytest.mark.parametrize(
    ("schedule", "timezone", "day_start", "fired"),
    [
        ("30 1 * * *", "America/New_York", utc(2026, 11, 1, 4, 0), [utc(2026, 11, 1, 5, 30)]),
        ("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 22, 0), [utc(2026, 10, 25, 0, 30)]),
        ("30 2 * * *", "America/New_York", utc(2026, 3, 8, 5, 0), [utc(2026, 3, 8, 7, 30)]),
        ("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 23, 0), [utc(2026, 3, 29, 1, 30)]),
    ],
    ids=["New York falls back", "Berlin falls back", "New York springs forward", "Berlin springs forward"],
)
def test_a_daily_check_ticked_every_minute_through_a_dst_change_fires_once(
    schedule, timezone, day_start, fired
):
    r = runner(nightly(schedule=schedule, timezone=timezone))
    r.due(day_start)  # the first start fires the previous day's slot; not counted

    got = [slot for m in range(1, 24 * 60 + 1) for slot in slots(r, day_start + timedelta(minutes=m))]

    assert got == fired


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3 * 24 * 60), min_size=1, max_size=30))
def test_whatever_the_ticks_each_slot_fires_at_most_once_and_the_latest_due_slot_always_fires(minutes):
    schedule = CronSchedule("0 */3 * * *")  # every three hours
    r = runner(nightly(schedule="0 */3 * * *"))
    start = utc(2026, 11, 26, 0, 30)
    fired: list[datetime] = []
    for now in sorted(start + timedelta(minutes=m) for m in minutes):
        got = slots(r, now)
        latest = schedule.latest_at_or_before(now)
        if not fired or latest > fired[-1]:
            assert got == [latest]  # the latest slot is due: it fires, alone (coalesced)
        else:
            assert got == []
        fired += got
    assert len(fired) == len(set(fired))


def test_a_rerun_followed_after_a_restart_times_out_from_when_it_started_not_from_now():
    cp = FakeControlPlane()
    started = T0 - timedelta(minutes=9)  # issued 9 minutes ago, by this daemon before a restart
    cp.runs["rp-fixed-202611260300"] = RunSummary(
        RunRef("ml", "prod", "rp-fixed-202611260300"),
        "RUNNING",
        created_at=started,
        labels={"rerund-repro": "fixed"},
        relation=RunRef("ml", "prod", "ref1"),
        relation_known=True,
    )
    polls: list[str] = []
    real_get = cp.get_run

    async def get_run(ref: RunRef) -> RunSummary:
        polls.append(ref.name)
        return await real_get(ref)

    cp.get_run = get_run  # type: ignore[method-assign]

    result = fire_once(by_run("ref1", timeout=timedelta(minutes=10)), cp)

    assert result.result == "timeout"
    assert cp.creates == ["rp-fixed-202611260300"]  # ALREADY_EXISTS: followed
    assert polls.count("rp-fixed-202611260300") < 100  # about a minute of 1 s polls, not ten minutes
