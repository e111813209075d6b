"""The control plane's clock as the daemon keeps it (``rerund.clock.ControlPlaneClock``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rerund.clock import ControlPlaneClock

HOST = datetime(2026, 12, 5, 10, 30, 0, 400_000, tzinfo=UTC)  # this host's wall clock, 30 min ahead
CONTROL_PLANE = datetime(2026, 12, 5, 10, 0, 0, tzinfo=UTC)  # its Date header, truncated to the second


def test_without_an_answer_the_control_planes_time_is_the_hosts():
    clock = ControlPlaneClock(wall=lambda: HOST)
    assert not clock.measured
    assert clock.skew == timedelta(0)
    assert clock.now() == HOST


def test_an_answers_date_sets_the_skew_and_the_time_on_either_clock():
    clock = ControlPlaneClock(wall=lambda: HOST)
    clock.observe(CONTROL_PLANE)

    assert clock.measured
    assert clock.skew == CONTROL_PLANE - HOST  # negative: the host is ahead
    assert clock.now() == CONTROL_PLANE
    due = CONTROL_PLANE + timedelta(minutes=5)  # a rerun due in 5 min, on the control plane's clock
    assert clock.local(due) == HOST + timedelta(minutes=5)  # when the host's timer must fire


def test_the_last_answer_counts_so_a_step_of_either_clock_is_followed():
    wall = [HOST]
    clock = ControlPlaneClock(wall=lambda: wall[0])
    clock.observe(CONTROL_PLANE)
    wall[0] = CONTROL_PLANE - timedelta(minutes=10)  # NTP stepped the host back, past the control plane
    clock.observe(CONTROL_PLANE)
    assert clock.skew == timedelta(minutes=10)


def test_a_time_the_control_plane_stamped_is_the_least_its_clock_reads_but_never_far_ahead():
    clock = ControlPlaneClock(wall=lambda: HOST)
    clock.observe(CONTROL_PLANE)  # Date truncated: the control plane is already past it
    failed_at = CONTROL_PLANE + timedelta(milliseconds=850)  # a run's end, from the watch stream
    clock.saw(failed_at)
    assert clock.now() == failed_at  # a rerun with no backoff is due at once

    clock.saw(CONTROL_PLANE + timedelta(minutes=5))  # stamped before the control plane's clock stepped back
    assert clock.now() == failed_at  # more than STAMP_LEAD ahead of the Date: not used
