"""Allocator settings for array-heavy work (Linux; the malloc ones with glibc only).

Every stage of labinterp makes and drops many numpy and pandas arrays of a few MB. With its
default settings glibc's malloc gives most of them fresh pages from the kernel (large blocks
are mapped and unmapped one by one, and freed memory at the top of the heap is handed back
at once), so each stage pays page faults for memory the stage before it has just freed.
Mapping only blocks above 32 MB (the largest threshold glibc allows), keeping up to 1 GiB
of freed memory and growing the heap 256 MB at a time lets later arrays reuse those pages.
Measured on a 1M-row export: reading takes 15-20% less CPU (benchmarks/bench_read.py). The
price is memory kept for reuse rather than returned: the audit's peak RSS at 1M rows went
from 1.40 to 1.48-1.58 GiB.

Arrow's own buffers (the reader's columns, the engine's evidence text) come from Arrow's
memory pool, mimalloc by default, which releases freed pages to the kernel within
milliseconds, so the next stage's buffers are faulted in again; on virtual machines, where
a fresh page is costly, that was up to a third of the CPU time of a 1M-row run, in the
kernel. Arrow's jemalloc pool keeps freed pages for reuse. Measured on a 1M-row export
(benchmarks/bench_findings.py, 6 runs each, alternated): read -> findings 2.6-3.2 s with
jemalloc, 3.6-3.8 s with mimalloc; the 1M audit 6.4-6.5 s and 1.15 GiB peak RSS against
6.8-7.6 s and 1.5 GiB. A user who chose a pool with ARROW_DEFAULT_MEMORY_POOL keeps it.

Both are applied when labinterp is imported; set LABINTERP_MALLOC=default to leave malloc
and Arrow's pool as they are.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

SETTINGS = (
    (_M_MMAP_THRESHOLD, 32 * 1024 * 1024),
    (_M_TRIM_THRESHOLD, 1024 * 1024 * 1024),
    (_M_TOP_PAD, 256 * 1024 * 1024),
)


def _wanted() -> bool:
    return os.environ.get("LABINTERP_MALLOC") != "default" and sys.platform.startswith("linux")


def tune_allocator() -> bool:
    """Apply SETTINGS to this process's malloc; False where that is not possible or wanted."""
    if not _wanted():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # glibc returns 1 on success; musl's stub returns 0 and changes nothing
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)


def use_retaining_arrow_pool() -> bool:
    """Make Arrow's jemalloc pool the default one; False where it is not available, not
    wanted, or the user chose a pool (ARROW_DEFAULT_MEMORY_POOL)."""
    if not _wanted() or os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return False
    import pyarrow as pa

    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without jemalloc
        return False
    pa.set_memory_pool(pool)
    return True


def release_retained() -> None:
    """Hand the memory kept for reuse back to the kernel (Arrow's pool, then malloc's).

    Called before forking workers: every page the parent still holds is shared with the
    children until someone writes to it, and the parent writing to its kept pages while it
    reads the input then copies each one (the second audit in one process read 1.98-2.11 s
    against 1.67-1.77 s with this, 3 audits in a row each).
    """
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(None).malloc_trim(0)
