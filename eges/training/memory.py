"""Keep freed memory in the process instead of handing it back to the kernel after each step.

A training step allocates and frees the same few MB-sized tensors every time (dense gradient
tables, per-position work arrays). glibc's malloc serves allocations above its mmap threshold
with fresh ``mmap`` calls and gives the top of the heap back once it exceeds its trim
threshold, so every step pays page faults and the kernel's zeroing of those pages again. On
ml-latest-small that was more than half of the C step's time (bench/results.md). Raising both
thresholds makes such memory stay in the heap, reused by the next step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest: allocations up to 32 MB come from the heap
# give heap memory back once 256 MB of it is free: as few page faults as with 1 GB (a step's
# temporaries are tens of MB; bench/results.md, 2026-12-06), and a process — and the DataLoader
# workers forked from it — holds at most this much freed memory
TRIM_THRESHOLD = 256 << 20


def retain_freed_memory(trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Raise glibc malloc's mmap and trim thresholds for this process (no-op elsewhere).

    Args:
        trim_threshold: bytes of free memory at the top of the heap kept for reuse.

    Returns:
        Whether the thresholds were set (False off glibc).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS): nothing to do
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
    if not ok:
        log.debug("mallopt refused the thresholds; the allocator keeps its defaults")
    return ok
