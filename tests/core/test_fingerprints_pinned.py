"""The fingerprints of the real-world test messages are pinned: making fingerprinting faster
(issue 27.9) must not change any of them — a fingerprint is stored in the ledger, and an
incident or an evidence count would split in two across an upgrade."""

from __future__ import annotations

import pytest
from test_fingerprints import DIFFERENT, NORMALISED, SAME

from rerund.core.fingerprints import fingerprint

# Fingerprints of the messages above as computed before fingerprinting was made faster (issue
# 27.9: ASCII fast paths, a shorter normalised head and tail): pinned, they must never change.
PINNED = {
    "normalised/k8s-oom-killed": "8ac6ff5cf5e7",
    "normalised/k8s-eviction": "97d154281d6c",
    "normalised/python-traceback": "06faab1bdad9",
    "normalised/s3-slowdown": "d1176126489e",
    "normalised/s3-slowdown-xml": "ab3cb8db63f4",
    "normalised/grpc-unavailable": "352de43e59c4",
    "normalised/http-503-url-request-id": "96218a164b4c",
    "normalised/timestamps": "1a0ef55f9aff",
    "normalised/uuid-and-pod": "a6069c480833",
    "normalised/run-names": "85b2501c5609",
    "normalised/paths": "20a9b0dfb287",
    "normalised/truncated": "56ea8fad89a6",
    "normalised/request-id-word-is-not-a-key": "84bc23d1a8ea",
    "normalised/empty": "9b694db614a3",
    "same/oom-other-exit-code": ("8ac6ff5cf5e7", "8ac6ff5cf5e7"),
    "same/eviction-other-usage": ("97d154281d6c", "97d154281d6c"),
    "same/traceback-other-lines-paths-address": ("06faab1bdad9", "06faab1bdad9"),
    "same/s3-other-request-ids": ("bc1eea330a0f", "bc1eea330a0f"),
    "same/grpc-other-ip-and-request-id": ("84e367100369", "84e367100369"),
    "same/timestamps-other-formats-same-place": ("212887153beb", "212887153beb"),
    "same/http-date-other-day": ("d03153fc0ff5", "d03153fc0ff5"),
    "same/run-name-and-its-rerun": ("e793939916ab", "e793939916ab"),
    "same/uuids": ("061b01b07253", "061b01b07253"),
    "same/case-and-blanks": ("6be7ee1c9b97", "6be7ee1c9b97"),
    "different/oom-vs-evicted": ("92c1b690d599", "0f19bf560195"),
    "different/refused-vs-reset": ("9140190c7261", "b14d8e14132b"),
    "different/other-exception": ("06faab1bdad9", "9b42c978facd"),
    "different/other-host": ("c651f419445e", "d0104982cbbb"),
    "different/memory-vs-disk": ("a2a72ee485eb", "91ff2def239b"),
}


def _fp(message: str) -> str:
    return fingerprint(task="etl.load", kind="SYSTEM", classes={"system"}, code="E", message=message)


@pytest.mark.parametrize(
    ("case", "message"), [(c[0], c[1]) for c in NORMALISED], ids=[c[0] for c in NORMALISED]
)
def test_the_fingerprint_of_each_normalised_message_is_pinned(case: str, message: str) -> None:
    assert _fp(message) == PINNED[f"normalised/{case}"]


@pytest.mark.parametrize(
    ("table", "case"),
    [("same", c) for c in SAME] + [("different", c) for c in DIFFERENT],
    ids=[f"same/{c[0]}" for c in SAME] + [f"different/{c[0]}" for c in DIFFERENT],
)
def test_the_fingerprints_of_each_pair_are_pinned(table: str, case: tuple) -> None:
    assert tuple(_fp(m) for m in case[1:] if isinstance(m, str)) == PINNED[f"{table}/{case[0]}"]
