"""Keep freed activation memory in the process between training steps (glibc only).

A CPU training step frees and reallocates the same few hundred MB of activations every step.
glibc's allocator serves blocks above its mmap threshold (128 KiB, raised dynamically) with fresh
``mmap`` calls and returns the freed top of the heap to the kernel once it exceeds the trim
threshold, so each step faults its activations back in page by page: about 30,000 minor page
faults and a tenth of a second of kernel time per step for a 256 x 6 model on two cores here
(``benchmarks/train_throughput.py``). Raising both thresholds (``mallopt(3)``: ``M_MMAP_THRESHOLD``
to its 32 MiB maximum on 64-bit, ``M_TRIM_THRESHOLD`` to 2 GiB) keeps those pages mapped and
reused; it is what the ``GLIBC_TUNABLES`` and tcmalloc/jemalloc advice for PyTorch CPU training
achieves, without a preload. The process keeps its peak heap until it exits, which a training
process reuses anyway. ``SCALING_MALLOC_TUNE=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit (glibc malloc/malloc.c)
TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int

_done: bool | None = None


def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True when they are in effect."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("SCALING_MALLOC_TUNE", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok
