"""Shared test fixtures.

`shared_data` points at the real-world exports kept beside the project (../shared/data).
They are never copied into the repository; tests that use them skip cleanly when absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _shared_data_dir() -> Path:
    override = os.environ.get("LABINTERP_SHARED_DATA")
    return Path(override) if override else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = _shared_data_dir()
    if not path.is_dir():
        pytest.skip("shared real-world exports not present beside the project")
    return path


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES
