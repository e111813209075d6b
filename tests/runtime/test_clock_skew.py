"""A daemon whose clock is off from the control plane's misses nothing and waits for nothing
(issue 22.9).

The real ``rerund run`` runs under Debian's ``faketime`` (libfaketime: its wall clock only,
``FAKETIME_DONT_FAKE_MONOTONIC``) 30 minutes ahead of, or 10 minutes behind, the sandbox it
talks to (the sandbox reads the real clock, serves its run timestamps and the HTTP ``Date``
header from it, as Flyte's Go server does). Polling alone (``watch: false``) so the resync's
watermark is what finds the failures. Before the fix, ahead: every resync listed from a time
after the failures (none rerun, ``/readyz`` ready, no warning); behind: reruns with no backoff
waited 10 minutes. ``make test`` installs ``faketime`` (see the Makefile).
"""

from __future__ import annotations

import logging
import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon_support import DaemonProcess, daemons, settle, total
from rerund.clock import ControlPlaneClock, utcnow
from rerund.policy import load_policies
from rerund.runtime.skew import SkewWatch
from rerund.sandbox.testing import start_sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

WORKLOAD: dict[str, Any] = {
    "tasks": {
        "clock.flaky": {
            "duration": "0.1s",
            "behaviour": ["fail", "succeed"],
            "error": {
                "kind": "SYSTEM",
                "code": "ConnectionResetError",
                "message": "ConnectionResetError: reset",
            },
        }
    }
}

POLICIES: dict[str, Any] = {
    "apiVersion": "rerund/v1",
    "defaults": {"max_attempts": 3, "backoff": {"initial": "0s", "factor": 1, "max": "0s", "jitter": 0}},
    "policies": [{"name": "transient", "match": {"error": {"kinds": ["SYSTEM"]}}, "retry": {"scope": "run"}}],
}


def faketime() -> str:
    found = shutil.which("faketime")
    assert found is not None, "faketime is not installed: run `make clock-tools` (Debian's faketime)"
    return found


@pytest.mark.parametrize(
    ("offset", "skew"),
    [("+30m", -1800.0), ("-10m", 600.0)],
    ids=["daemon 30 min ahead", "daemon 10 min behind"],
)
def test_a_daemon_whose_clock_is_off_reruns_every_owed_failure_promptly(
    tmp_path: Path, offset: str, skew: float
) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump(POLICIES, sort_keys=False))
    policies = load_policies([path])
    with start_sandbox(workload=WORKLOAD, time_scale=1.0) as sb:
        d = DaemonProcess(
            tmp_path / "d",
            sb,
            path,
            extra={"watch": False},
            prefix=(faketime(), "-f", offset),
            env={"FAKETIME_DONT_FAKE_MONOTONIC": "1"},
        )
        with daemons(d):
            d.wait_ready()  # a pass is done: the watermark is set
            sb.launch("clock.flaky", count=3)

            # Promptly: the reruns are owed now (0 s backoff); 10 minutes late would time out here.
            result = settle(sb, [d], policies, timeout=120)

            assert result.owed == 3
            assert result.exact(), result.problems()
            measured = total(d.metrics(), "rerund_clock_skew_seconds")
            assert skew - 30 < measured < skew + 30, d.logs()
            warnings = [line for line in d.logs(10**7).splitlines() if "clock" in line and "WARNING" in line]
            assert len(warnings) == 1, d.logs()
            assert "rerund uses the control plane's time for watermarks and due times" in warnings[0]


# -- the warnings, on an in-process daemon (no pass run: ``SkewWatch.check`` is what each pass calls) ----


def daemon(tmp_path: Path) -> SkewWatch:
    """What a daemon whose control plane it built itself (the flyte adapter) checks after each pass."""
    return SkewWatch(ControlPlaneClock(), dates_expected=True)


def warnings_and_infos(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "rerund.daemon"]


def test_a_skew_is_warned_once_whatever_the_answers_and_its_end_is_told_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = daemon(tmp_path)
    with caplog.at_level(logging.INFO, logger="rerund.daemon"):
        for _ in range(3):  # three passes, many answers each, 30 min apart
            d.cp_clock.observe(utcnow() - timedelta(minutes=30))
            d.check()
        d.cp_clock.observe(utcnow())
        d.check()

    [(level, message), (level2, message2)] = warnings_and_infos(caplog)
    assert level == "WARNING"
    assert re.fullmatch(
        r"this host's clock is 180\ds ahead of the control plane's \(measured on its answers' HTTP Date\); "
        r"rerund uses the control plane's time for watermarks and due times, so nothing is missed or "
        r"delayed, but fix the host's time sync \(NTP\): the log's times and this host's other programs "
        r"are off by as much",
        message,
    )
    assert (level2, message2) == (
        "INFO",
        "this host's clock agrees with the control plane's again (within 0s)",
    )


def test_a_control_plane_without_date_headers_is_warned_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = daemon(tmp_path)
    with caplog.at_level(logging.INFO, logger="rerund.daemon"):
        d.check()
        d.check()

    assert warnings_and_infos(caplog) == [
        (
            "WARNING",
            "the control plane's answers carry no HTTP Date header, so rerund cannot measure the clock skew "
            "and uses this host's clock for watermarks and due times; keep the host's time in sync (NTP): a "
            "clock ahead of the control plane's misses failures",
        )
    ]
