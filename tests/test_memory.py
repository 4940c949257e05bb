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
