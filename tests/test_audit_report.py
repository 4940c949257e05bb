"""report.html as rendered (no browser): the patient list's cells and attributes the
page's filter reads, censored values, long ids, the chart sizes, no network."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

import labinterp
from labinterp.audit import report
from labinterp.audit.report import (
    _CHAR_W,
    _distributions,
    _latest_cell,
    _patient_list,
    _prevalence,
)

LONG_ID = "LONGID-" + "X" * 120  # the id of the last patient of the export
# A few patients with known statuses: fired patterns, a guard that suppresses them, nothing
# abnormal (every rule not_fired or indeterminate), censored results and a 127-character id.
EXPORT = (Path(__file__).parent / "fixtures" / "report_patients.csv").read_text("utf-8")


def _report(tmp_path: Path) -> str:
    (tmp_path / "export.csv").write_text(EXPORT, encoding="utf-8")
    labinterp.audit(tmp_path / "export.csv", tmp_path / "out")
    return (tmp_path / "out" / "report.html").read_text(encoding="utf-8")


def _patients(comparators: bool) -> pa.Table:
    cols: dict[str, list[object]] = {
        "patient_id": ["A", "B", "C"],
        "hypomagnesemia_hypocalcemia": ["fired:possible", "not_fired", None],
        "hypomagnesemia_hypokalemia": ["fired:concurrent", "not_fired", "indeterminate"],
        "magnesium_latest": [0.20571898786257975, 0.8, None],
        "calcium_latest": [0.499, 2.3, 2.2],
        "potassium_latest": [10.0, 4.0, 4.1],
    }
    if comparators:
        cols |= {
            "magnesium_comparator": ["<", "", None],
            "calcium_comparator": ["<=", "", ""],
            "potassium_comparator": [">", None, ">="],
        }
    return pa.table(cols)


def test_censored_latest_values_keep_their_comparator() -> None:
    listing = _patient_list(_patients(comparators=True))
    assert listing["patient_latest"] == ["Mg", "Ca", "K"]
    cells = {p["patient_id"]: [c["text"] for c in p["latest"]] for p in listing["patients"]}
    assert cells == {
        "A": ["<0.206", "\u22640.499", ">10"],
        "B": ["0.8", "2.3", "4"],
        "C": ["", "2.2", "\u22654.1"],
    }
    assert _latest_cell("0.206", "<")["title"] == "reported as below a limit: <0.206"
    assert _latest_cell("10", ">=")["title"].startswith("reported as above")
    assert _latest_cell("", "<") == {"text": "", "mark": "", "title": ""}


def test_latest_values_of_a_hemolyzed_or_contaminated_sample_are_marked() -> None:
    patients = _patients(comparators=True).append_column(
        "potassium_quality", pa.array(["hemolyzed", "", "hemolyzed;edta_suspected"])
    )
    cells = {p["patient_id"]: p["latest"][2] for p in _patient_list(patients)["patients"]}
    assert cells["A"]["text"] == ">10" and cells["A"]["mark"] == "hem."
    assert cells["A"]["title"].startswith("reported as above a limit: >10; the sample was")
    assert cells["B"] == {"text": "4", "mark": "", "title": ""}
    assert cells["C"]["mark"] == "hem. EDTA?"
    assert "EDTA contamination" in cells["C"]["title"]


def test_patient_rows_carry_their_exact_statuses() -> None:
    listing = _patient_list(_patients(comparators=False))
    by_id = {p["patient_id"]: p for p in listing["patients"]}
    assert [p["patient_id"] for p in listing["patients"]] == ["A", "B", "C"]  # findings first
    assert by_id["A"]["status_set"] == "fired"
    assert by_id["B"]["status_set"] == "not_fired"
    assert by_id["C"]["status_set"] == "indeterminate"  # a missing status is no status
    assert [s["status"] for s in by_id["A"]["statuses"]] == ["fired", "fired"]


def test_report_patient_table_filter_and_long_ids(tmp_path: Path) -> None:
    html = _report(tmp_path)
    # inputs are labelled, table headers are headers
    assert '<label class="grow" for="filter-text">' in html
    assert '<label for="filter-status">' in html
    assert '<th scope="col">patient</th>' in html
    assert re.search(r'<tr data-id="NORMAL-01" data-status="[a-z_ ]*">', html)
    normal = re.search(r'<tr data-id="NORMAL-01"[^>]*>', html)
    assert normal and 'data-status="fired' not in normal.group(0)
    assert '<span id="patient-shown"' in html and "Shown 4 of 4 patients." in html
    # the long id wraps in a column of its own width, the whole of it in the title
    assert f'<td class="pid" title="{LONG_ID}"><span class="long">{LONG_ID}</span></td>' in html
    assert '<td class="pid" title="COMP-01">COMP-01</td>' in html
    # a censored latest value keeps its comparator (patients.csv <analyte>_comparator)
    assert '<td class="num" title="reported as below a limit: &lt;1.5">&lt;1.5</td>' in html


def test_report_is_self_contained_and_responsive(tmp_path: Path) -> None:
    html = _report(tmp_path)
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "repeat(auto-fit" in html and "@media print" in html
    # the prevalence chart is as wide as its labels need, and never drawn smaller
    svg = re.search(r'<svg viewBox="0 0 (\d+) \d+" style="--min-w: (\d+)px"', html)
    assert svg and svg.group(1) == svg.group(2)
    notes = re.findall(
        r'<text x="([\d.]+)" y="[\d.]+">([\d,]+ of [\d,]+ patients fired[^<]*)</text>', html
    )
    assert notes
    for x, note in notes:
        assert float(x) + _CHAR_W * len(note) <= int(svg.group(1))


def test_a_cut_list_says_how_many_it_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "PATIENT_LIST_MAX", 2)
    html = _report(tmp_path)
    # the count a filter shows is out of every patient, not of those listed
    assert "Shown 2 of 4 patients, the first 2 listed" in html
    assert "Shown 2 of 2" not in html
    assert 'data-total="4"' in html
    assert "The list holds 2 of 4 patients, those with findings first" in html
    assert len(re.findall(r"<tr data-id=", html)) == 2


def _summary(patients: int, counts: dict) -> dict:
    return {"patients": patients, "counts": counts}


def test_prevalence_bars_are_shares_of_every_patient() -> None:
    """2 suppressed of 5,905 patients is a sliver (still visible), not a full bar; the
    note gives n of N and the share."""
    chart = _prevalence(
        _summary(
            5905,
            {
                "hypomagnesemia_hypocalcemia": {"suppressed": {"": 2}, "not_fired": {"": 5903}},
                "edta_contamination": {"fired": {"core_signature": 2}},
                "hypomagnesemia_hypokalemia": {"fired": {"concurrent": 2952}},
            },
        )
    )
    rows = {r["rule"]: r for r in chart["rows"]}
    suppressed = rows["hypomagnesemia_hypocalcemia"]["segments"]
    assert [s["label"] for s in suppressed] == ["suppressed"]
    assert 0 < suppressed[0]["w"] <= 5  # visible, and nowhere near the 400 px of all
    half = rows["hypomagnesemia_hypokalemia"]["segments"][0]["w"]
    assert half == pytest.approx(chart["bar_w"] / 2, abs=1)
    assert rows["hypomagnesemia_hypocalcemia"]["note"].startswith("0 of 5,905 patients fired")
    assert "2 suppressed (0.034%)" in rows["hypomagnesemia_hypocalcemia"]["note"]
    assert rows["hypomagnesemia_hypokalemia"]["note"].startswith(
        "2,952 of 5,905 patients fired (50%)"
    )


def test_tier_colours_follow_strength() -> None:
    """The strongest tier of each rule is drawn first and darkest, whatever the alphabet
    says (possible < supported, concurrent < refractory, serial < single)."""
    chart = _prevalence(
        _summary(
            100,
            {
                "hypomagnesemia_hypocalcemia": {"fired": {"possible": 27, "supported": 4}},
                "hypomagnesemia_hypokalemia": {"fired": {"concurrent": 24, "refractory": 2}},
                "vitamin_d_resistance": {"fired": {"serial": 3, "single": 5}},
                "edta_contamination": {
                    "fired": {"core_signature": 22, "with_supporting_evidence": 2}
                },
            },
        )
    )
    strongest = {"supported", "refractory", "serial", "with_supporting_evidence"}
    colours: dict[str, set[str]] = {"strong": set(), "weak": set()}
    for row in chart["rows"]:
        first, second = row["segments"]
        assert first["label"].removeprefix("fired: ") in strongest
        colours["strong"].add(first["colour"])
        colours["weak"].add(second["colour"])
    assert colours == {"strong": {"#b2182b"}, "weak": {"#ef8a62"}}


def test_a_fired_context_finding_is_listed_and_is_not_nothing_fired() -> None:
    patients = _patients(comparators=False).append_column(
        "hypercalcemia_hypomagnesemia", pa.array([None, "fired", None])
    )
    patients = patients.append_column("ckd_context", pa.array([None, "fired", None]))
    listing = _patient_list(patients)
    assert listing["patient_context"]
    by_id = {p["patient_id"]: p for p in listing["patients"]}
    assert by_id["B"]["context"] == "High Ca with low Mg; CKD context (low eGFR)"
    assert by_id["B"]["status_set"] == "context_fired not_fired"
    assert by_id["C"]["context"] == "" and by_id["C"]["status_set"] == "indeterminate"
    # a context finding lists its patient before one with nothing
    assert [p["patient_id"] for p in listing["patients"]] == ["A", "B", "C"]


def _distribution_summary(ranges: dict) -> dict:
    from labinterp.audit.collapse import bins

    counts = [0] * (len(bins("magnesium")) + 1)
    counts[9], counts[10] = 321, 226
    against = {"below": 186, "within": 300, "above": 61, "no_range": 0}
    return {
        "distributions": {
            "histograms": {"magnesium": counts},
            "against_ranges": {"magnesium": against},
            "ranges": ranges,
        }
    }


def test_distributions_have_a_count_axis_and_name_their_range() -> None:
    from labinterp.audit.report import _count_ticks

    assert _count_ticks(321) == [0, 100, 200, 300, 400]
    assert _count_ticks(0) == [0, 1]
    assert _count_ticks(7) == [0, 2, 4, 6, 8]
    summary = _distribution_summary(
        {"magnesium": [{"low": 0.7, "high": 1.05, "origin": "bundled", "results": 547}]}
    )
    mg = next(d for d in _distributions(summary) if d["analyte"] == "magnesium")
    assert [t["label"] for t in mg["y_ticks"]] == ["0", "100", "200", "300", "400"]
    assert mg["y_ticks"][0]["y"] == mg["base"]  # 0 on the base line
    tallest = max(b["h"] for b in mg["bars"])
    assert tallest == pytest.approx(321 / 400 * (mg["base"] - mg["y_ticks"][-1]["y"]), abs=0.01)
    assert mg["shade"] == (
        "the range most results were read with, 0.7-1.05 mmol/L "
        "(the bundled adult fallback; 547 of 547 results with a range)"
    )
    printed = _distribution_summary(
        {
            "magnesium": [
                {"low": 0.6583, "high": 1.0697, "origin": "row", "results": 500},
                {"low": 0.7, "high": 1.0, "origin": "row", "results": 47},
            ]
        }
    )
    mg = next(d for d in _distributions(printed) if d["analyte"] == "magnesium")
    assert "0.658-1.07 mmol/L (printed with the results; 500 of 547" in mg["shade"]
    assert "other ranges for the rest" in mg["shade"]


def test_report_says_which_ranges_the_distributions_are_against(tmp_path: Path) -> None:
    html = _report(tmp_path)
    assert "each row's own range" not in html
    assert "Results per bin (left axis)" in html
    summary = (tmp_path / "out" / "summary.json").read_text(encoding="utf-8")
    ranges = json.loads(summary)["distributions"]["ranges"]
    assert ranges["magnesium"][0]["origin"] in {"row", "bundled"}
    counts = [r["results"] for r in ranges["magnesium"]]
    assert counts == sorted(counts, reverse=True)


def test_rejected_preview_lists_rows_to_fix_first(tmp_path: Path) -> None:
    """Out-of-scope tests and duplicates come first in file order; the preview lists the
    implausible value, the unknown unit and the unreadable value before them."""
    lines = ["patient_id,collected_at,test_name,value,unit"]
    lines += [f"P{i},2024-01-0{1 + i % 9} 08:00,Sodium,140,mmol/L" for i in range(250)]
    lines += [
        "P1,2024-02-01 08:00,Magnesium,0.8,mmol/L",
        "P1,2024-02-01 08:00,Magnesium,0.8,mmol/L",  # a duplicate
        "P2,2024-02-01 08:00,Calcium,2.7,mg/dL",  # implausible: a unit error
        "P3,2024-02-01 08:00,Potassium,4.1,furlongs",
        "P4,2024-02-01 08:00,Magnesium,0.8.1,mmol/L",
    ]
    (tmp_path / "export.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = labinterp.audit(tmp_path / "export.csv", tmp_path / "out")
    assert summary["rows_rejected"] > report.TABLE_MAX
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    preview = html[html.index('<section id="rejected">') :]
    shown = re.findall(r'<td class="num">\d+</td><td>([^<]*)</td><td>([a-z_]+)</td>', preview)
    assert len(shown) == report.TABLE_MAX
    fixable = {("P2", "implausible_value"), ("P3", "unknown_unit"), ("P4", "unparseable_value")}
    assert set(shown[:3]) == fixable  # each with its patient
    assert "first the rows a lab can fix" in preview


def test_headline_says_when_no_magnesium_was_read(tmp_path: Path) -> None:
    lines = ["patient_id,collected_at,test_name,value,unit"]
    lines += [f"P{i},2024-01-01 08:00,Calcium,{2.0 + i / 10},mmol/L" for i in range(5)]
    lines += [f"P{i},2024-01-01 08:00,Potassium,3.2,mmol/L" for i in range(5)]
    (tmp_path / "export.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    labinterp.audit(tmp_path / "export.csv", tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert 'id="no-magnesium"' in html and "No magnesium value was read" in html
    (tmp_path / "with_mg").mkdir()
    assert 'id="no-magnesium"' not in _report(tmp_path / "with_mg")
