"""Microseconds per decision with 10, 100 and 1,000 policies of 5 RE2 patterns each, over
64 KiB error messages.

Each size is measured three ways: the failure matches the first policy, the last policy, or
no policy. For contrast, ``naive`` runs one ``re2.search`` per pattern per message (what a
simple loop over policies would do); rerund scans each message once with one RE2 set.
The first decision on a fresh policy set (RE2 builds its DFA lazily) is reported apart as
``cold_us``. Goal: under 1 ms at 1,000 policies, and growth well below linear.

Run: .venv/bin/python bench/bench_decide.py   (prints JSON and a table, writes
bench/results/decide.json; takes well under a minute)
"""

from __future__ import annotations

import json
import platform
import random
import statistics
import string
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import re2

from rerund.core.decide import decide
from rerund.core.model import Failure
from rerund.policy import load_policies

SIZES = (10, 100, 1000)
PATTERNS_PER_POLICY = 5
MESSAGE_BYTES = 64 * 1024
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
RESULTS = Path(__file__).resolve().parent / "results" / "decide.json"


def word(rng: random.Random, n: int = 7) -> str:
    return "".join(rng.choices(string.ascii_lowercase, k=n))


def policy_patterns(rng: random.Random, i: int) -> list[str]:
    """Five realistic patterns, distinct per policy: literals, classes, alternations, \\d."""
    a, b, c, d, e = (word(rng) for _ in range(5))
    return [
        f"(?i){a}{i} (reset|refused|timed out)",
        f"{b.capitalize()}Error: {c}{i}",
        f"code {i}[0-9]{{2}}\\b",
        f"{d}-{e}-{i}",
        f"(?i)failed to {a}{i} after \\d+ attempts",
    ]


def policies_yaml(n: int, seed: int = 7) -> tuple[str, list[list[str]]]:
    rng = random.Random(seed)
    lines = ["apiVersion: rerund/v1", "policies:"]
    all_patterns = []
    for i in range(n):
        patterns = policy_patterns(rng, i)
        all_patterns.append(patterns)
        quoted = ", ".join("'" + p.replace("'", "''") + "'" for p in patterns)
        lines.append(f"  - name: p{i}")
        lines.append(f"    match: {{error: {{kinds: [SYSTEM], patterns: [{quoted}]}}}}")
    return "\n".join(lines) + "\n", all_patterns


def message(rng: random.Random, tail: str) -> str:
    """About 64 KiB of log lines and a traceback, ending with ``tail``."""
    out: list[str] = []
    size = 0
    step = 0
    while size < MESSAGE_BYTES - len(tail) - 200:
        step += 1
        line = (
            f"2026-11-24 10:{step // 60 % 60:02d}:{step % 60:02d},{rng.randrange(1000):03d} INFO "
            f"worker-{rng.randrange(64)} step {step} loss={rng.random():.4f} lr=0.001 "
            f"{word(rng, 5)} {word(rng, 9)} batch {rng.randrange(10_000)}\n"
        )
        if step % 97 == 0:
            line += (
                'Traceback (most recent call last):\n  File "/app/train.py", line 88, in fit\n'
                "    loss.backward()\nRuntimeError: retrying after transient error\n"
            )
        out.append(line)
        size += len(line)
    return "".join(out) + tail


def measure(fn, repeat: int) -> float:
    """Median microseconds of ``fn()`` over ``repeat`` runs."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


def naive_scan(compiled: list, text: str) -> int:
    return sum(1 for r in compiled if r.search(text))


def bench_size(n: int, tmp: Path) -> dict:
    text, patterns = policies_yaml(n)
    path = tmp / f"policies-{n}.yaml"
    path.write_text(text)
    start = time.perf_counter()
    policies = load_policies([path])
    load_ms = (time.perf_counter() - start) * 1e3
    rng = random.Random(n)
    cases = {
        "first": message(rng, f"\nfatal: {patterns[0][3]} while reading\n"),
        "last": message(rng, f"\nfatal: {patterns[-1][3]} while writing\n"),
        "none": message(rng, "\nfatal: something nobody planned for\n"),
    }
    failures = {
        k: Failure(run="bench1", error={"kind": "SYSTEM", "message": m}, failed_at=NOW)
        for k, m in cases.items()
    }
    start = time.perf_counter()
    cold = decide(failures["first"], policies, NOW)
    cold_us = (time.perf_counter() - start) * 1e6
    expected = {"first": "p0", "last": f"p{n - 1}", "none": None}
    result: dict = {"policies": n, "patterns": n * PATTERNS_PER_POLICY, "load_ms": round(load_ms, 1)}
    result["cold_us"] = round(cold_us, 1)
    assert cold.policy == "p0", cold.reason
    for case, failure in failures.items():
        got = decide(failure, policies, NOW)
        assert got.policy == expected[case], (case, got.reason)
        for _ in range(20):  # warm the lazily built DFA on this message
            decide(failure, policies, NOW)
        result[f"{case}_us"] = round(measure(lambda f=failure: decide(f, policies, NOW), 200), 1)
    options = re2.Options()
    options.log_errors = False
    compiled = [re2.compile(p, options) for ps in patterns for p in ps]
    naive_text = cases["none"]
    naive_scan(compiled, naive_text)
    result["naive_us"] = round(measure(lambda: naive_scan(compiled, naive_text), 5 if n >= 1000 else 20), 1)
    return result


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench_size(n, Path(tmp)) for n in SIZES]
    doc = {
        "benchmark": "decide",
        "unit": "microseconds per decision (median)",
        "message_bytes": MESSAGE_BYTES,
        "patterns_per_policy": PATTERNS_PER_POLICY,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "goal": "under 1000 us at 1000 policies; growth well below linear",
        "results": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    columns = ("policies", "patterns", "first_us", "last_us", "none_us", "cold_us", "naive_us", "load_ms")
    header = " ".join(f"{c:>10}" for c in columns)
    print()
    print(header)
    for r in rows:
        print(" ".join(f"{r[c]:>10}" for c in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
