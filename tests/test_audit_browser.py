"""report.html rendered by a real headless browser shows the headline numbers."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import labinterp
from benchmarks.make_export import generate

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(tmp_path: Path, *args: str) -> str:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/system-deps.sh)")
def test_report_headline_in_rendered_dom(tmp_path: Path) -> None:
    generate(tmp_path / "export.csv", 5000, seed=5)
    summary = labinterp.audit(tmp_path / "export.csv", tmp_path / "out")
    report = tmp_path / "out" / "report.html"
    dom = _chromium(tmp_path, "--dump-dom", report.as_uri())
    for element, key in (
        ("rows-in", "rows_in"),
        ("rows-used", "rows_used"),
        ("rows-rejected", "rows_rejected"),
        ("patients", "patients"),
    ):
        value = summary[key]
        match = re.search(rf'id="{element}" data-value="(\d+)">([\d,]+)<', dom)
        assert match, element
        assert int(match.group(1)) == value
        assert match.group(2) == f"{value:,}"
    assert "<svg" in dom and "Pattern prevalence" in dom
    assert 'id="patient-table"' in dom
    # the follow-up table: one row per rule that fired, in the report's rule order
    outcomes = ("followed_up", "not_followed_up", "undated")
    shown = [r for r, f in summary["follow_up"].items() if any(f[k] for k in outcomes)]
    cells = re.findall(r'id="not-followed-\d+">([\d,]+)<', dom)
    assert len(cells) == len(shown) > 0
    assert sorted(int(c.replace(",", "")) for c in cells) == sorted(
        summary["follow_up"][rule]["not_followed_up"] for rule in shown
    )
