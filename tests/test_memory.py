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
