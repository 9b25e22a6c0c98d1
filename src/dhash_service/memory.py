"""Give memory back to the system after a large request (``malloc_trim``).

glibc keeps freed heap pages: after one 64-megapixel decode a worker stayed at 1.7 GB resident
though nothing referenced the pixels any more. ``malloc_trim(0)`` returns the free pages at the
top of every arena (measured: bench/bench_bounded.py). Decoder children are replaced instead
(``dhash_service.sandbox.pool``). Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import cache

# Requests whose decoded pixels reach this many are followed by a trim (a 1920x1080 photo is 2 MP
# and costs nothing extra; a trim after it would cost more than it returns).
TRIM_AFTER_PIXELS = 16_000_000
TRIM_AFTER_BYTES = 8 * 1024 * 1024  # or whose upload was this large (refused ones included)


@cache
def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


def trim() -> bool:
    """Return free heap memory to the system; False where the C library cannot."""
    function = _malloc_trim()
    if function is None:
        return False
    function(0)
    return True


def resident_bytes(pid: int | str = "self") -> int:
    """A process's resident set size, from ``/proc/<pid>/statm`` (0 where there is none)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
