"""``rerund run`` fixes glibc's mmap threshold so large transient blocks (a 5 MB error message)
go back to the OS when freed instead of raising the heap's high-water mark."""

from __future__ import annotations

import ctypes.util
import sys

import pytest

from rerund.runtime.heap import return_large_blocks


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or "musl" in (ctypes.util.find_library("c") or ""),
    reason="glibc only",
)
def test_the_threshold_is_set_on_glibc() -> None:
    assert return_large_blocks() is True
