"""Log lines: text for a terminal, or one JSON object per line for log pipelines.

Every time is UTC ISO-8601 with a ``Z`` (``2026-11-30T19:00:47.123Z``), in both formats: the
same instant reads the same in a log line, ``rerund history``, ``/decisions`` and the page.

Decision lines (logger ``rerund.decisions``) carry structured fields — ``run``, ``lineage``,
``policy``, ``decision``, ``attempt``, ``fingerprint`` (the failure's) — passed as ``extra=``;
the JSON format emits them as keys, the text format shows the short human line (without the
fingerprint: ``rerund history --format json`` and ``explain`` show it). Secrets never reach a
log record: reasons and settings are logged in their public form. The text format is read on
a terminal, so its messages are escaped for one (``rerund.core.encode.for_terminal``): an error message or a
label with ESC, OSC, CR or LF cannot recolour it, retitle it or forge a log line; the JSON
format escapes them as JSON does.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from rerund.core.encode import for_terminal

__all__ = ["DECISION_FIELDS", "JsonFormatter", "TextFormatter", "configure_logging", "utc_stamp"]

DECISION_FIELDS = ("run", "lineage", "policy", "decision", "attempt", "rerun", "fingerprint")
FORMATS = ("text", "json")


def utc_stamp(created: float) -> str:
    """A log record's time as UTC ISO-8601 with milliseconds and a ``Z``."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message>``; decision lines as ``<time> <message>``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = utc_stamp(record.created)
        message = for_terminal(record.getMessage())
        if record.name == "rerund.decisions":
            return f"{stamp} {message}"
        text = f"{stamp} {record.levelname} {record.name}: {message}"
        if record.exc_info:  # a traceback is several lines by design; what it quotes is escaped
            text += "\n" + for_terminal(self.formatException(record.exc_info), keep="\n")
        return text


_PADDED = re.compile(r"%-\d+s")
_SPACES = re.compile(r" {2,}")


@functools.lru_cache(maxsize=64)
def _unpadded_format(fmt: str) -> str:
    """``fmt`` without its column padding: rerund's decision lines use a handful of format
    strings, each unpadded once (at most 64 kept)."""
    return _SPACES.sub(" ", _PADDED.sub("%s", fmt))


def _unpadded(record: logging.LogRecord) -> str:
    """A decision line's message without the column padding of its text form (``%-7s``, the
    spaces after ``repro``): the format string is rerund's own, so only it is unpadded; the
    values (a reason, a run name) are kept as they are."""
    fmt = _unpadded_format(str(record.msg))
    try:
        return fmt % record.args if record.args else fmt
    except (TypeError, ValueError):
        return record.getMessage()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message`` and, on decision
    lines, the structured fields (``run``, ``lineage``, ``policy``, ``decision``, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": utc_stamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": _unpadded(record) if record.name == "rerund.decisions" else record.getMessage(),
        }
        for key in DECISION_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Log to stderr (or ``stream``) in ``fmt`` (``text`` or ``json``) at ``level`` for rerund's
    own loggers; third-party libraries only from WARNING."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("rerund").setLevel(level)
    for noisy in ("apscheduler", "flyte", "httpx", "uvicorn"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
