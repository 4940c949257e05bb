"""report.html rendered by a real headless browser: the headline numbers, the patient
filter (set from the page's address) and a layout that fits a phone and a desktop."""

from __future__ import annotations

import csv
import html as html_lib
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
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


LONG_ID = "LONGID-" + "X" * 120  # the id of the last patient of the export
# A few patients with known statuses: fired patterns, a guard that suppresses them, nothing
# abnormal (every rule not_fired or indeterminate), censored results and a 127-character id.
SMALL_EXPORT = (Path(__file__).parent / "fixtures" / "report_patients.csv").read_text("utf-8")


class _PatientRows(HTMLParser):
    """(patient id, shown) per row of the rendered patient table, and the count shown."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, bool]] = []
        self.count = ""
        self._in_table = self._in_count = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._in_table = a.get("id") == "patient-table"
        elif tag == "tr" and self._in_table and "data-id" in a:
            self.rows.append((a["data-id"] or "", "hidden" not in a))
        self._in_count = a.get("id") == "patient-shown"

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_table = False

    def handle_data(self, data: str) -> None:
        if self._in_count:
            self.count += data
            self._in_count = False


def _shown(tmp_path: Path, report: Path, fragment: str) -> tuple[set[str], int, str]:
    page = _PatientRows()
    page.feed(_chromium(tmp_path, "--dump-dom", report.as_uri() + fragment))
    return {pid for pid, shown in page.rows if shown}, len(page.rows), page.count


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/system-deps.sh)")
def test_patient_filter_from_the_address_runs_in_the_browser(tmp_path: Path) -> None:
    (tmp_path / "export.csv").write_text(SMALL_EXPORT, encoding="utf-8")
    labinterp.audit(tmp_path / "export.csv", tmp_path / "out")
    report = tmp_path / "out" / "report.html"
    with (tmp_path / "out" / "patients.csv").open(encoding="utf-8") as f:
        patients = list(csv.DictReader(f))
    rules = [
        r
        for r in (
            "hypomagnesemia_hypocalcemia",
            "hypomagnesemia_hypokalemia",
            "vitamin_d_resistance",
            "edta_contamination",
        )
        if r in patients[0]
    ]
    statuses = {p["patient_id"]: {p[r].split(":")[0] for r in rules} for p in patients}
    everyone = set(statuses)

    shown, listed, count = _shown(tmp_path, report, "")
    assert shown == everyone and listed == len(everyone)
    assert count == f"Shown {listed} of {listed} patients."

    # "fired" is a word of fired:concurrent, not the end of not_fired
    shown, _, count = _shown(tmp_path, report, "#q=fired")
    assert shown == {pid for pid, s in statuses.items() if "fired" in s}
    assert "NORMAL-01" in everyone and "NORMAL-01" not in shown and "COMP-01" in shown
    assert count == f"Shown {len(shown)} of {listed} patients."

    # the select matches a status cell exactly
    for status in ("indeterminate", "suppressed"):
        shown, _, _ = _shown(tmp_path, report, f"#status={status}")
        assert shown == {pid for pid, s in statuses.items() if status in s}, status
    shown, _, _ = _shown(tmp_path, report, "#status=nothing_fired")
    assert shown == {pid for pid, s in statuses.items() if "fired" not in s}

    # the text box matches part of a patient id, case aside; every word typed must match
    shown, _, count = _shown(tmp_path, report, "#q=longid")
    assert shown == {LONG_ID} and count == f"Shown 1 of {listed} patients."
    shown, _, _ = _shown(tmp_path, report, "#q=comp+fired&status=fired")
    assert shown == {"COMP-01"}
    shown, _, count = _shown(tmp_path, report, "#q=nobody")
    assert shown == set() and count == f"Shown 0 of {listed} patients."


# Measures the page as laid out: what sticks out of the viewport, how many rows the
# headline cards take, and the smallest text of the charts (its box height in px).
LAYOUT_PROBE = """<script>(function () {
  var vw = document.documentElement.clientWidth, out = [], tops = {}, text = 1e9;
  document.querySelectorAll(
    "section, .card, #filter-text, #filter-status, .scroll, .hscroll, .chart-scroll"
  ).forEach(function (e) {
    if (e.getBoundingClientRect().right > vw + 0.5) out.push(e.id || e.className);
  });
  document.querySelectorAll(".card").forEach(function (c) {
    tops[Math.round(c.getBoundingClientRect().top)] = true;
  });
  document.querySelectorAll("#prevalence svg text, #distributions svg text").forEach(function (t) {
    text = Math.min(text, t.getBoundingClientRect().height);
  });
  document.body.setAttribute("data-probe", JSON.stringify({
    width: vw, page: document.documentElement.scrollWidth, out: out,
    card_rows: Object.keys(tops).length, chart_text: text
  }));
})();</script></body>"""


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/system-deps.sh)")
def test_report_layout_fits_a_phone_and_a_desktop(tmp_path: Path) -> None:
    (tmp_path / "export.csv").write_text(SMALL_EXPORT, encoding="utf-8")
    labinterp.audit(tmp_path / "export.csv", tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    probe = tmp_path / "out" / "probe.html"
    probe.write_text(html.replace("</body>", LAYOUT_PROBE), encoding="utf-8")
    for size in ("400,2000", "1280,2000"):
        dom = _chromium(tmp_path, f"--window-size={size}", "--dump-dom", probe.as_uri())
        match = re.search(r'data-probe="([^"]*)"', dom)
        assert match, size
        got = json.loads(html_lib.unescape(match.group(1)))
        # nothing wider than the window: wide tables and charts scroll inside their card
        assert got["page"] <= got["width"] and got["out"] == [], (size, got)
        assert got["chart_text"] >= 9, (size, got)  # no 3px chart text
        if got["width"] < 700:  # headless chromium may widen a 400px window to 500
            assert got["card_rows"] >= 2, got
        else:
            assert got["card_rows"] == 1, got


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/system-deps.sh)")
def test_a_cut_list_counts_every_patient_in_the_browser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A patient left out of a cut list must not look like a patient without findings:
    the count is out of every patient, and says how many are listed."""
    from labinterp.audit import report as report_module

    monkeypatch.setattr(report_module, "PATIENT_LIST_MAX", 3)
    (tmp_path / "export.csv").write_text(SMALL_EXPORT, encoding="utf-8")
    summary = labinterp.audit(tmp_path / "export.csv", tmp_path / "out")
    total = summary["patients"]
    assert total > 3
    report = tmp_path / "out" / "report.html"
    tail = f"of {total} patients, the first 3 listed (those with findings first; every patient"
    _, listed, count = _shown(tmp_path, report, "")
    assert listed == 3 and count.startswith(f"Shown 3 {tail}")
    _, _, count = _shown(tmp_path, report, "#q=nobody")
    assert count.startswith(f"Shown 0 {tail}")


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/system-deps.sh)")
def test_nothing_fired_leaves_out_a_fired_context_finding(tmp_path: Path) -> None:
    """DEMO-018 of the bundled sample has hypercalcemia_hypomagnesemia fired: it is not
    "nothing fired", and the context filter and column show it."""
    labinterp.audit(Path(labinterp.__file__).parent / "sample_data", tmp_path / "out")
    report = tmp_path / "out" / "report.html"
    with (tmp_path / "out" / "findings.csv").open(encoding="utf-8") as f:
        fired = [r for r in csv.DictReader(f) if r["status"] == "fired"]
    context = {r["patient_id"] for r in fired if r["kind"] == "context"}
    any_fired = {r["patient_id"] for r in fired}
    assert "DEMO-018" in context
    shown, _, _ = _shown(tmp_path, report, "#status=nothing_fired")
    assert "DEMO-018" not in shown
    assert shown and not shown & any_fired
    shown, _, _ = _shown(tmp_path, report, "#status=context_fired")
    assert shown == context
    html = report.read_text(encoding="utf-8")
    assert re.search(r'data-id="DEMO-018".*?<td class="st ctx">High Ca with low Mg', html, re.S)
