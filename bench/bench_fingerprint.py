"""Microseconds to fingerprint one failure (``rerund.core.fingerprints``), by message size and
kind: a Python traceback, log lines with timestamps and request ids, and adversarial text (one
long token, digits only, slashes) that would expose a backtracking pattern.

Goal (issue 27): under 50 us at 10 KB messages. A message longer than ``MAX_NORMALISED_CHARS``
is normalised by its head and tail only, so the cost stops growing there. Each measurement
fingerprints a distinct message: a message seen lately is served from a cache (a failure
decided again), which this does not measure.

Run: .venv/bin/python bench/bench_fingerprint.py   (prints JSON and a table, writes
bench/results/fingerprint.json; takes a few seconds)
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

from rerund.core.fingerprints import MAX_NORMALISED_CHARS, fingerprint

SIZES = (200, 1024, 4 * 1024, 10 * 1024, 64 * 1024)
RESULTS = Path(__file__).resolve().parent / "results" / "fingerprint.json"

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/usr/local/lib/python3.11/site-packages/s3fs/core.py", line 113, in _error_wrapper\n'
    "    return await func(*args, **kwargs)\n"
    '  File "/tmp/tmpq8z2k1/workflows/etl.py", line 42, in load\n'
    "ValueError: <DataFrame object at 0x7f3a2c1d9e80> has 1532 rows\n"
)
LOG = (
    "2026-12-05T05:04:53.123Z ERROR upstream 503 SlowDown x-amz-request-id: 4442587FB7D0A2F9 "
    "from https://s3.amazonaws.com/bucket/key-00012?X-Amz-Signature=abc run r3kx9f2a7bq8-retry-2\n"
)
KINDS = {
    "traceback": TRACEBACK,
    "log_lines": LOG,
    "one_token": "a",
    "digits": "1",
    "slashes": "/a",
}


def text(kind: str, size: int) -> str:
    unit = KINDS[kind]
    return (unit * (size // len(unit) + 1))[:size]


def measure(message: str, repeat: int) -> float:
    """Median microseconds of one fingerprint of ``message`` over ``repeat`` runs, each of a
    distinct copy (a number in front), so none is served from the cache of recent messages."""
    samples = []
    copies = [
        f"{i} {message}"[: max(len(message), 1)] if len(message) > 8 else f"{i} {message}"
        for i in range(repeat)
    ]
    for message in copies:
        start = time.perf_counter()
        fingerprint(task="etl.load", kind="SYSTEM", classes={"system"}, code="SlowDown", message=message)
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


def run(sizes: tuple[int, ...] = SIZES, repeat: int = 300) -> dict:
    rows = []
    for size in sizes:
        row: dict = {"bytes": size}
        for kind in KINDS:
            row[f"{kind}_us"] = round(measure(text(kind, size), repeat), 1)
        rows.append(row)
    columns = ["bytes", *(f"{k}_us" for k in KINDS)]
    return {
        "benchmark": "fingerprint",
        "unit": "microseconds per fingerprint (median)",
        "normalised_chars": MAX_NORMALISED_CHARS,
        "goal": "under 50 us at 10 KB messages",
        "machine": {"python": platform.python_version(), "machine": platform.machine()},
        "results": rows,
        "table": {"columns": columns, "rows": rows},
    }


def main() -> int:
    doc = run()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    columns = doc["table"]["columns"]
    print()
    print(" ".join(f"{c:>13}" for c in columns))
    for r in doc["results"]:
        print(" ".join(f"{r[c]:>13}" for c in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
