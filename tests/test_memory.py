"""The allocator settings applied on import (labinterp.memory)."""

from __future__ import annotations

import platform
import sys

import pytest

from labinterp import memory


def test_tuning_applies_on_glibc_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABINTERP_MALLOC", "default")
    assert memory.tune_allocator() is False
    monkeypatch.delenv("LABINTERP_MALLOC")
    on_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert memory.tune_allocator() is on_glibc


def test_arrow_pool_is_jemalloc_unless_the_user_chose_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa

    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")
    assert memory.use_retaining_arrow_pool() is False
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL")
    monkeypatch.setenv("LABINTERP_MALLOC", "default")
    assert memory.use_retaining_arrow_pool() is False
    monkeypatch.delenv("LABINTERP_MALLOC")
    has_jemalloc = "jemalloc" in pa.supported_memory_backends()
    linux = sys.platform.startswith("linux")
    assert memory.use_retaining_arrow_pool() is (has_jemalloc and linux)
    if has_jemalloc and linux:
        assert pa.default_memory_pool().backend_name == "jemalloc"


def _rss_mb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_release_retained_hands_kept_memory_back() -> None:
    """What the allocators keep for reuse goes back to the kernel (before the audit forks)."""
    import numpy as np
    import pyarrow as pa

    if not memory.tune_allocator():
        pytest.skip("malloc keeps nothing for reuse here (not glibc, or LABINTERP_MALLOC=default)")
    arrays = [np.ones(1024 * 1024 // 8) for _ in range(200)]  # 1 MB each: kept when freed
    buffers = [pa.allocate_buffer(1024 * 1024) for _ in range(200)]
    for buffer in buffers:
        np.frombuffer(buffer, dtype=np.uint8)[:] = 1
    del arrays, buffers
    kept = _rss_mb()
    memory.release_retained()
    assert _rss_mb() < kept - 100
