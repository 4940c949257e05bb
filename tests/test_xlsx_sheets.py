"""Workbooks: results on several sheets, sheets that hold no results table, and merged
group labels above the header row."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import openpyxl
import pytest
from openpyxl.chart import BarChart, Reference

from labinterp.cli import main
from labinterp.reading import iter_batches, read

DRAW = dt.datetime(2024, 3, 1, 8, 0)


def _two_results_sheets(path: Path) -> None:
    """A summary, two results sheets with different columns (the Mg result on both), a
    chart sheet and an empty sheet."""
    wb = openpyxl.Workbook()
    summary = wb.active
    summary.title = "Summary"
    summary["A1"], summary["A2"], summary["B2"] = "Lab results export", "Generated", DRAW
    chem = wb.create_sheet("Chemistry")
    chem.append(["MRN", "Collected", "Test", "Result", "Units"])
    chem.append(["1001", DRAW, "Magnesium", 1.1, "mg/dL"])
    chem.append(["1001", DRAW, "Calcium", 7.5, "mg/dL"])
    endo = wb.create_sheet("Endocrine")
    endo.append(["Patient ID", "Specimen date", "Analyte", "Value", "Unit", "Comment"])
    endo.append(["1001", DRAW, "PTH", 25, "pg/mL", ""])
    endo.append(["1001", DRAW, "25-OH Vitamin D", 12, "ng/mL", ""])
    endo.append(["1001", DRAW, "Magnesium", 1.1, "mg/dL", "repeat"])
    chart = wb.create_chartsheet("Trend")
    bars = BarChart()
    bars.add_data(Reference(chem, min_col=4, min_row=1, max_row=3))
    chart.add_chart(bars)
    wb.create_sheet("Blank")
    wb.save(path)


def test_every_results_sheet_is_read_under_its_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "lab.xlsx"
    _two_results_sheets(path)
    res = read(path)
    assert res.rows_in == 5 and res.rows_used == 4 and res.rows_rejected == 1
    used = sorted(zip(res.results["source_file"], res.results["source_row"], strict=True))
    assert used == [
        ("lab.xlsx[Chemistry]", 2),
        ("lab.xlsx[Chemistry]", 3),
        ("lab.xlsx[Endocrine]", 2),
        ("lab.xlsx[Endocrine]", 3),
    ]
    # the Mg result given on both sheets is one result
    (dup,) = res.rejected.itertuples()
    assert (dup.source_file, dup.source_row, dup.reason) == ("lab.xlsx[Endocrine]", 4, "duplicate")
    assert (
        dup.detail == "same result as lab.xlsx[Chemistry] row 2; nothing to fix: that one is read"
    )
    # each sheet has its own column plan and its own count
    chem, endo = res.files
    assert (chem.name, chem.rows_in, chem.rows_used, chem.rows_rejected) == (
        "lab.xlsx[Chemistry]",
        2,
        2,
        0,
    )
    assert (endo.name, endo.rows_in, endo.rows_used, endo.rows_rejected) == (
        "lab.xlsx[Endocrine]",
        3,
        2,
        1,
    )
    assert 'test_name = "Test"' in chem.mapping_toml
    assert 'test_name = "Analyte"' in endo.mapping_toml
    # the sheets that are no results table are named, with why
    notes = " ".join(chem.warnings)
    assert "sheet 'Summary' skipped" in notes
    assert "sheet 'Trend' skipped, not a results table: the sheet 'Trend' is a chart" in notes
    assert "sheet 'Blank' skipped, not a results table: the worksheet 'Blank' is empty" in notes
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "== lab.xlsx[Endocrine]" in out and "sheet 'Summary' skipped" in out

    # the audit's batches read the same sheets (repeats are the audit's to drop)
    batches = list(iter_batches(path, batch_rows=1))
    assert sum(b.rows_in for b in batches) == 5 and sum(b.rows_used for b in batches) == 5
    assert {f.name for b in batches for f in b.files} == {
        "lab.xlsx[Chemistry]",
        "lab.xlsx[Endocrine]",
    }
    assert "sheet 'Blank' skipped" in " ".join(batches[0].files[0].warnings)


def test_one_results_sheet_among_others_keeps_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "lab.xlsx"
    _two_results_sheets(path)
    wb = openpyxl.load_workbook(path)
    del wb["Endocrine"]
    wb.save(path)
    res = read(path)
    assert set(res.results["source_file"]) == {"lab.xlsx"}
    assert res.files[0].format == "xlsx, sheet 'Chemistry'"


def _merged_group_header(path: Path, group: list[str | None], merges: list[str]) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(group)
    for cells in merges:
        ws.merge_cells(cells)
    ws.append(["MRN", "Collected", "Test", "Value", "Units", "Range"])
    ws.append(["2001", DRAW, "Magnesium", 1.1, "mg/dL", "1.7-2.2"])
    ws.append(["2001", DRAW, "Potassium", 3.0, "mmol/L", "3.5-5.1"])
    wb.save(path)


def test_merged_group_labels_above_the_header_are_skipped(tmp_path: Path) -> None:
    """'Patient' merged over MRN and Collected, 'Result' over the rest: the row below
    names the columns."""
    path = tmp_path / "grouped.xlsx"
    _merged_group_header(
        path, ["Patient", None, "Specimen", None, "Result", None], ["A1:B1", "C1:D1", "E1:F1"]
    )
    res = read(path)
    assert res.rows_used == 2 and list(res.results["source_row"]) == [3, 4]
    assert res.files[0].header_line == 2


def test_a_header_with_one_merged_name_stays_the_header(tmp_path: Path) -> None:
    """A header row that names most columns is the header, even with a merged cell: the
    row below it is a result, not the header."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["MRN", "Collected", "Test", "Value", "Units", "Range", None])
    ws.merge_cells("F1:G1")
    ws.append(["2001", DRAW, "Magnesium", 1.1, "mg/dL", "1.7-2.2", None])
    path = tmp_path / "merged_name.xlsx"
    wb.save(path)
    res = read(path)
    assert res.rows_used == 1 and res.files[0].header_line == 1


def test_a_formula_saved_without_its_value_is_named(tmp_path: Path) -> None:
    """openpyxl (like some report tools) writes a formula without computing it: the cell
    reads as empty, and the report says why, by row and column."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["MRN", "Collected", "Test", "Result", "Units"])
    ws.append(["3001", DRAW, "Magnesium", 1.1, "mg/dL"])
    ws.append(["3001", DRAW, "Potassium", "=3.5-0.4", "mmol/L"])
    path = tmp_path / "formulas.xlsx"
    wb.save(path)
    res = read(path)
    assert list(res.rejected["source_row"]) == [3]
    (note,) = res.files[0].warnings
    assert "formula whose value was not saved" in note
    assert "sheet 'Sheet', row 3 (column 'Result')" in note  # every sheet has a row 3
    assert "save it again" in note
    (batch,) = iter_batches(path, batch_rows=10)
    assert batch.files[0].warnings == (note,)
