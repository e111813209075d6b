"""Log lines: UTC ISO-8601 with a Z in both formats; JSON lines carry the decision fields."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from rerund.runtime.logs import configure_logging


@pytest.fixture
def stream():
    out = io.StringIO()
    yield out
    configure_logging("INFO")  # back to stderr for the rest of the session


def test_json_lines_carry_run_lineage_policy_and_decision(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream)
    logging.getLogger("rerund.decisions").info(
        "rerun   p/d/r: policy 'x' reruns run 'r'",
        extra={"run": "p/d/r", "lineage": "r", "policy": "x", "decision": "rerun", "attempt": 1},
    )
    record = json.loads(stream.getvalue().splitlines()[-1])
    assert record["time"].endswith("Z") and re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"]
    )
    assert {k: record[k] for k in ("level", "logger", "run", "lineage", "policy", "decision", "attempt")} == {
        "level": "INFO",
        "logger": "rerund.decisions",
        "run": "p/d/r",
        "lineage": "r",
        "policy": "x",
        "decision": "rerun",
        "attempt": 1,
    }


def test_text_lines_start_with_a_utc_time_with_a_z(stream: io.StringIO) -> None:
    configure_logging("DEBUG", "text", stream)
    logging.getLogger("rerund.daemon").debug("resync pass: %d failed runs", 3)
    logging.getLogger("rerund.decisions").info("ignore  p/d/r: no policy matches")
    first, second = stream.getvalue().splitlines()
    assert re.fullmatch(r"\S+Z DEBUG rerund.daemon: resync pass: 3 failed runs", first)
    assert re.fullmatch(r"\S+Z ignore  p/d/r: no policy matches", second)


def test_debug_is_off_at_info(stream: io.StringIO) -> None:
    configure_logging("INFO", "text", stream)
    logging.getLogger("rerund.daemon").debug("hidden")
    assert stream.getvalue() == ""


@pytest.mark.parametrize(
    "fmt, args, message",
    [
        (
            "%-7s %s: %s",
            ("rerun", "p/d/r", "policy 'x'  keeps  its spaces"),
            "rerun p/d/r: policy 'x'  keeps  its spaces",
        ),
        ("repro   %-8s %s", ("match", "check 'c' reproduced"), "repro match check 'c' reproduced"),
        (
            "exists  %s: rerun %s was already issued",
            ("p/d/r", "r-retry-1"),
            "exists p/d/r: rerun r-retry-1 was already issued",
        ),
    ],
    ids=["decision", "repro", "exists"],
)
def test_a_json_decision_message_has_no_column_padding_but_keeps_the_values(
    stream: io.StringIO, fmt: str, args: tuple[str, ...], message: str
) -> None:
    """Issue 28.8: the text form pads the kind into a column; JSON's message is plain text."""
    configure_logging("INFO", "json", stream)
    logging.getLogger("rerund.decisions").info(fmt, *args)

    assert json.loads(stream.getvalue().splitlines()[-1])["message"] == message


def test_the_text_form_keeps_its_columns(stream: io.StringIO) -> None:
    configure_logging("INFO", "text", stream)
    logging.getLogger("rerund.decisions").info("%-7s %s: %s", "rerun", "p/d/r", "why")

    assert stream.getvalue().rstrip("\n").endswith(" rerun   p/d/r: why")
