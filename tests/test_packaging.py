"""The wheel carries the data folders, and the public API stays small and sorted."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import labinterp

REPO = Path(__file__).resolve().parent.parent


def test_public_api_is_small_and_sorted() -> None:
    assert labinterp.__all__ == sorted(labinterp.__all__)
    assert labinterp.__all__ == ["audit", "ctcae_grade", "interpret", "read", "render_handout"]
    for name in labinterp.__all__:
        assert callable(getattr(labinterp, name)), name


@pytest.mark.slow
def test_wheel_contains_reference_data_templates_and_sample(tmp_path: Path) -> None:
    pytest.importorskip("build")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    wheel = next(tmp_path.glob("labinterp-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "labinterp/reference_ranges/analytes.csv",
        "labinterp/reference_ranges/fallback_ranges.csv",
        "labinterp/reference_ranges/unit_aliases.csv",
        "labinterp/reference_ranges/units.txt",
        "labinterp/reference_ranges/presets/mimic_items.csv",
        "labinterp/sample_data/clinic_export.csv",
    ):
        assert required in names, required
    assert any(n.startswith("labinterp/templates/handout/") for n in names)
    assert any(n.startswith("labinterp/templates/audit/") for n in names)
    assert not any("tests/" in n for n in names)
