"""Failure fingerprints: the normalisation on real-world messages, and the fingerprint's
invariants (same when only variable parts change, different when a word, the task, the kind,
the class or the code changes)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rerund.core.fingerprints import (
    MAX_NORMALISED_CHARS,
    error_fingerprint,
    failure_fingerprint,
    fingerprint,
    normalise,
)
from rerund.core.model import ErrorInfo, Failure, Phase, bounded_text

T0 = datetime(2026, 12, 5, 5, 0, tzinfo=UTC)

TRACEBACK = """Traceback (most recent call last):
  File "/usr/local/lib/python3.11/site-packages/flyte/_internal/runtime/entrypoints.py", line 151, in main
    await run_task(tctx)
  File "/root/.venv/lib/python3.12/site-packages/s3fs/core.py", line 113, in _error_wrapper
    return await func(*args, **kwargs)
  File "/tmp/tmpq8z2k1/workflows/etl.py", line 42, in load
    frame = read(path)
ValueError: <pandas.core.frame.DataFrame object at 0x7f3a2c1d9e80> has 1532 rows, expected 2000"""

# (id, message, its normalised form)
NORMALISED = [
    (
        "k8s-oom-killed",
        "\r\n[primary] terminated with exit code (137). Reason [OOMKilled]. Message: \n.",
        "[primary] terminated with exit code (<n>). reason [oomkilled]. message: .",
    ),
    (
        "k8s-eviction",
        "The node was low on resource: memory. Container primary was using 3876Mi, which exceeds its "
        "request of 2Gi.",
        "the node was low on resource: memory. container primary was using <n>, which exceeds its "
        "request of <n>",
    ),
    (
        "python-traceback",
        TRACEBACK,
        'traceback (most recent call last): file "<path>", line <n>, in main await run_task(tctx) '
        'file "<path>", line <n>, in _error_wrapper return await func(*args, **kwargs) file "<path>", '
        "line <n>, in load frame = read(path) valueerror: <pandas.core.frame.dataframe object at <n>> "
        "has <n> rows, expected <n>",
    ),
    (
        "s3-slowdown",
        "An error occurred (SlowDown) when calling the PutObject operation (reached max retries: 4): "
        "Please reduce your request rate. RequestId: 4442587FB7D0A2F9, "
        "HostId: eftixk72aD6Ap51TnqcoF8eFidJG9Z/2mkiDFu8yU9AS1ed4OpIszj7UDNEHGran=",
        "an error occurred (slowdown) when calling the putobject operation (reached max retries: <n>): "
        "please reduce your request rate. requestid=<id>, hostid=<id>",
    ),
    (
        "s3-slowdown-xml",
        "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
        "<RequestId>4442587FB7D0A2F9</RequestId></Error>",
        "<error><code>slowdown</code><message>please reduce your request rate.</message>"
        "<requestid><n></requestid></error>",
    ),
    (
        "grpc-unavailable",
        'rpc error: code = Unavailable desc = connection error: desc = "transport: Error while dialing: '
        'dial tcp 10.0.3.17:8080: connect: connection refused" '
        "x-request-id: 9f8e7d6c-5b4a-3c2d-1e0f-a1b2c3d4e5f6",
        'rpc error: code = unavailable desc = connection error: desc = "transport: error while dialing: '
        'dial tcp <n> connect: connection refused" x-request-id=<id>',
    ),
    (
        "http-503-url-request-id",
        "HTTP 503 Service Unavailable from https://api.example.com/v1/models/m-7?token=abc at "
        "2026-12-05T05:04:53.123Z (request_id='req_b7c6d5e4')",
        "http <n> service unavailable from https://api.example.com/<path> at <n> (request_id=<id>')",
    ),
    (
        "timestamps",
        "Sat, 05 Dec 2026 05:04:53 GMT timeout; Dec  5 05:04:53 kernel; 2026-12-05 05:04:53,123 +0000 UTC; "
        "1764911093.5",
        "<n> <n> <n> gmt timeout; <n> <n> kernel; <n> <n>,<n> <n> utc; <n>",
    ),
    (
        "uuid-and-pod",
        "pod default/train-7d9f8b6c5d-x2v4k (uid 123e4567-e89b-12d3-a456-426614174000) evicted",
        "pod default/<n> (uid <n>) evicted",
    ),
    (
        "run-names",
        "run 'r3kx9f2a7bq8zz-retry-2' failed, see rabcd1234efgh",
        "run '<n>' failed, see <n>",
    ),
    (
        "paths",
        "cannot open ./data/part-00012.parquet nor C:\\work\\in.csv nor ~/x; /tmp alone stays, and/or too",
        "cannot open .<path> nor c:<path> nor ~/x; /tmp alone stays, and/or too",
    ),
    (
        "truncated",
        bounded_text("head 1 " + "x" * 9000 + " tail 2", 100),
        "head <n> " + "x" * 43 + " <truncated> " + "x" * 43 + " tail <n>",
    ),
    ("request-id-word-is-not-a-key", "the request id is missing", "the request id is missing"),
    ("empty", "", ""),
]


@pytest.mark.parametrize(("message", "expected"), [c[1:] for c in NORMALISED], ids=[c[0] for c in NORMALISED])
def test_normalise_removes_the_variable_parts_of_real_messages(message, expected):
    assert normalise(message) == expected


@pytest.mark.parametrize("message", [c[1] for c in NORMALISED], ids=[c[0] for c in NORMALISED])
def test_normalise_is_idempotent(message):
    assert normalise(normalise(message)) == normalise(message)


# (id, two messages of one cause): the same fingerprint
SAME = [
    (
        "oom-other-exit-code",
        "\r\n[primary] terminated with exit code (137). Reason [OOMKilled]. Message: \n.",
        "[primary] terminated with exit code (9). Reason [OOMKilled]. Message: .",
    ),
    (
        "eviction-other-usage",
        "The node was low on resource: memory. Container primary was using 3876Mi, which exceeds its "
        "request of 2Gi.",
        "The node was low on resource: memory. Container primary was using 4012Mi, which exceeds its "
        "request of 4Gi.",
    ),
    (
        "traceback-other-lines-paths-address",
        TRACEBACK,
        TRACEBACK.replace("151", "152")
        .replace("python3.11", "python3.12")
        .replace("tmpq8z2k1", "tmp0a9xyz")
        .replace("0x7f3a2c1d9e80", "0x7f0000aa0010")
        .replace("1532", "17"),
    ),
    (
        "s3-other-request-ids",
        "SlowDown: Please reduce your request rate. RequestId: 4442587FB7D0A2F9, HostId: eftixk72aD6Ap51Tn",
        "SlowDown: Please reduce your request rate. RequestId: ZZQWERTYPLKJ, HostId: abcdefghijkl",
    ),
    (
        "grpc-other-ip-and-request-id",
        "rpc error: code = Unavailable desc = dial tcp 10.0.3.17:8080: refused (x-request-id=a1b2)",
        "rpc error: code = Unavailable desc = dial tcp 10.0.9.2:8081: refused (x-request-id=zz)",
    ),
    (
        "timestamps-other-formats-same-place",
        "upstream timed out at 2026-12-05T05:04:53Z",
        "upstream timed out at 2027-01-31T23:59:59.999+01:00",
    ),
    (
        "http-date-other-day",
        "Date: Sat, 05 Dec 2026 05:04:53 GMT: 503",
        "Date: Mon, 07 Dec 2026 11:00:00 GMT: 502",
    ),
    (
        "run-name-and-its-rerun",
        "lost connection while running rxkqz81mpa0c",
        "lost connection while running rxkqz81mpa0c-retry-3",
    ),
    (
        "uuids",
        "job 123e4567-e89b-12d3-a456-426614174000 failed",
        "job ABCDEF01-0000-4000-8000-00000000FFFF failed",
    ),
    ("case-and-blanks", "Connection  Refused\r\n", "connection refused"),
]


@pytest.mark.parametrize(("a", "b"), [c[1:] for c in SAME], ids=[c[0] for c in SAME])
def test_messages_differing_only_in_variable_parts_share_a_fingerprint(a, b):
    def fp(message: str) -> str:
        return fingerprint(
            task="etl.load", kind="SYSTEM", classes={"system"}, code="Unavailable", message=message
        )

    assert fp(a) == fp(b)


# (id, two messages of different causes): different fingerprints
DIFFERENT = [
    ("oom-vs-evicted", "Reason [OOMKilled]", "Reason [Evicted]"),
    (
        "refused-vs-reset",
        "dial tcp 10.0.3.17:8080: connection refused",
        "dial tcp 10.0.3.17:8080: connection reset",
    ),
    ("other-exception", TRACEBACK, TRACEBACK.replace("ValueError", "KeyError")),
    ("other-host", "GET https://s3.amazonaws.com/b/k failed", "GET https://gcs.googleapis.com/b/k failed"),
    ("memory-vs-disk", "low on resource: memory", "low on resource: ephemeral-storage"),
]


@pytest.mark.parametrize(("a", "b"), [c[1:] for c in DIFFERENT], ids=[c[0] for c in DIFFERENT])
def test_messages_with_other_words_have_other_fingerprints(a, b):
    def fp(message: str) -> str:
        return fingerprint(task="etl.load", kind="USER", classes={"user"}, code="", message=message)

    assert fp(a) != fp(b)


BASE = {"task": "etl.load", "kind": "SYSTEM", "classes": frozenset({"system"}), "code": "Unavailable"}


@pytest.mark.parametrize(
    "change",
    [
        {"task": "etl.save"},
        {"kind": "USER"},
        {"classes": frozenset({"system", "resource_exhausted"})},
        {"code": "SlowDown"},
    ],
    ids=["task", "kind", "class", "code"],
)
def test_another_task_kind_class_or_code_gives_another_fingerprint(change):
    message = "upstream connect error"
    assert fingerprint(**BASE, message=message) != fingerprint(**{**BASE, **change}, message=message)


def test_parts_cannot_shift_into_each_other():
    assert fingerprint(task="a b", kind="USER", classes=set(), code="", message="c") != fingerprint(
        task="a", kind="USER", classes=set(), code="", message="b c"
    )


def test_a_fingerprint_is_12_hex_characters_and_shows_no_part_of_a_secret():
    secret = "postgres://admin:hunter2@db.internal:5432/prod password=hunter2"
    fp = fingerprint(task="t", kind="USER", classes={"user"}, code="", message=secret)
    assert re.fullmatch(r"[0-9a-f]{12}", fp)
    assert "hunter2" not in normalise(secret)  # the URL's path and the number go; the hash shows nothing


def test_a_failure_is_fingerprinted_by_its_failing_actions_task_not_its_run():
    error = ErrorInfo(kind="SYSTEM", code="Unavailable", message="dial tcp 10.0.0.1:443: i/o timeout")
    one = Failure(run="r1aaaaaaaa", task="wf.main", action_task="wf.fetch", error=error, failed_at=T0)
    other = Failure(
        run="r2bbbbbbbb-retry-1", root="r2bbbbbbbb", attempt=1, project="p2", task="wf.other",
        action_task="wf.fetch", error=error, failed_at=T0.replace(hour=9), labels={"team": "x"},
    )  # fmt: skip
    assert failure_fingerprint(one) == failure_fingerprint(other) == error_fingerprint("wf.fetch", error)
    timed_out = one.model_copy(update={"phase": Phase.TIMED_OUT})  # class "timeout" joins
    assert failure_fingerprint(timed_out) != failure_fingerprint(one)


def test_only_the_head_and_tail_of_a_long_message_are_normalised():
    half = MAX_NORMALISED_CHARS // 2
    a = "A " * half + "middle one " + "Z " * half
    b = "A " * half + "middle two " + "Z " * half
    assert normalise(a) == normalise(b)
    assert normalise("head " + "x " * MAX_NORMALISED_CHARS + " KeyError") != normalise(
        "head " + "x " * MAX_NORMALISED_CHARS + " ValueError"
    )


@pytest.mark.parametrize(
    "message",
    [
        "a-" * 5000,
        "1" * 10240,
        "a" * 10240,
        "/a" * 5000,
        "0x" + "f" * 10240,
        "request-id" * 1000,
        ":" * 10240,
    ],
    ids=["dashes", "digits", "letters", "slashes", "hex", "keys", "colons"],
)
def test_pathological_messages_are_normalised(message):
    # Linear time is measured in bench/bench_fingerprint.py; here: they finish and are idempotent.
    assert normalise(normalise(message)) == normalise(message)


_VARIABLE_KINDS = (
    st.integers(min_value=0, max_value=10**12).map(str),
    st.uuids().map(str),
    st.integers(min_value=0, max_value=2**64).map(hex),
    st.from_regex(r"r[a-z0-9]{9}[0-9](-retry-[1-9])?", fullmatch=True),
    st.from_regex(r"/(tmp|var|home)/[a-z]{1,8}[0-9]{1,4}/[a-z]{1,8}\.py", fullmatch=True),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    st.from_regex(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}:[0-9]{2,5}", fullmatch=True),
)
# two values of one kind (two request ids, two paths, two timestamps, ...)
_TWO_OF_A_KIND = st.sampled_from(_VARIABLE_KINDS).flatmap(lambda kind: st.tuples(kind, kind))
_VARIABLE = st.one_of(*_VARIABLE_KINDS)
_WORDS = st.lists(st.from_regex(r"[A-Za-z]{1,10}", fullmatch=True), min_size=1, max_size=6).map(" ".join)


@given(words=_WORDS, pair=_TWO_OF_A_KIND)
def test_fingerprint_is_the_same_when_only_variable_parts_change(words, pair):
    first, second = pair

    def fp(variable: str) -> str:
        return fingerprint(
            task="t", kind="USER", classes={"user"}, code="E", message=f"{words} at {variable}: failed"
        )

    assert fp(first) == fp(second)


@given(first=_WORDS, second=_WORDS, variable=_VARIABLE)
def test_fingerprint_differs_when_the_words_differ(first, second, variable):
    def fp(words: str) -> str:
        return fingerprint(task="t", kind="USER", classes={"user"}, code="E", message=f"{words}: {variable}")

    if first.lower().split() != second.lower().split():
        assert fp(first) != fp(second)


_PIECES = st.sampled_from(
    [*"abcxyz0189 -_.:/\\,='\"<>()[]{}@+~\t\n\x00", "id", "request", "://", "dec", "sat", "0x", "-retry-"]
)


@given(st.lists(_PIECES, max_size=60).map("".join))
def test_normalise_is_idempotent_on_any_text(message):
    once = normalise(message)
    assert normalise(once) == once
