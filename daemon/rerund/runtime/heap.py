"""The C heap of a long-running daemon: large blocks go back to the operating system.

An error message of 5 MB passes through rerund as several transient 5 MB buffers (the HTTP
body, the parsed answer, the Python string, its UTF-8 bytes for the hash in ``bounded_text``).
glibc's malloc serves blocks above its mmap threshold with their own mappings, returned on
``free`` — but it raises that threshold to the size of each such block freed (up to 32 MB), so
after the first large message every later one comes from the heap, which keeps its high-water
mark with nothing alive in it (the figures: bench/README.md, §9 and "Figures behind choices
in the code"). Fixing the threshold (``mallopt(M_MMAP_THRESHOLD)``)
turns the adjustment off, so blocks of ``threshold`` bytes and more are always their own
mappings and are returned when freed. Smaller allocations (all the daemon's usual ones) are
unaffected. Only ``rerund run`` calls it: it is the process's choice, not a library's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["return_large_blocks"]

_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def return_large_blocks(threshold: int = 1024 * 1024) -> bool:
    """Serve every allocation of ``threshold`` bytes or more from its own mapping, returned to
    the OS when freed (glibc only). True when set; False where there is no glibc (musl, macOS):
    there the allocator's own policy stands."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))
