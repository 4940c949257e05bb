"""Every format the audit reads in batches gives, batch by batch, what reading the whole
file gives: workbooks by rows, JSON Lines of records by lines (HL7 v2 and FHIR NDJSON have
their own tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import labinterp
from labinterp.errors import InputFileError
from labinterp.reading import deduplicate, iter_batches, read

COLUMNS = ["source_row", "patient_id", "analyte", "value", "comment", "collected_at"]


def batched(path: Path, batch_rows: int) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The results and rejected rows of `path` read in batches, deduplicated as the audit
    does, and how many batches there were."""
    batches = list(iter_batches(path, batch_rows=batch_rows))
    results = pd.concat([b.results for b in batches], ignore_index=True)
    rejected = pd.concat([b.rejected for b in batches], ignore_index=True)
    results, dropped = deduplicate(results)
    return results, pd.concat([rejected, dropped], ignore_index=True), len(batches)


def assert_same(path: Path, batch_rows: int) -> int:
    whole = read(path)
    results, rejected, n = batched(path, batch_rows)
    pd.testing.assert_frame_equal(
        results[COLUMNS].sort_values(["source_row", "analyte"]).reset_index(drop=True),
        whole.results[COLUMNS].sort_values(["source_row", "analyte"]).reset_index(drop=True),
    )
    key = ["source_row", "reason"]
    pd.testing.assert_frame_equal(
        rejected[key].sort_values(key).reset_index(drop=True),
        whole.rejected[key].sort_values(key).reset_index(drop=True),
    )
    return n


def rows(count: int) -> list[dict]:
    """Results of 6 patients, with a repeat, an out-of-scope test and, late in the file,
    a field no earlier row has."""
    out = []
    for i in range(count):
        out.append(
            {
                "patient_id": f"P{i % 6}",
                "collected_at": f"2024-03-{1 + i // 6:02d} 08:30",
                "test": ("Magnesium", "Calcium", "Potassium", "Sodium")[i % 4],
                "result": f"{1.0 + (i % 9) / 10:.1f}",
                "unit": ("mg/dL", "mg/dL", "mmol/L", "mmol/L")[i % 4],
            }
        )
    out.append(dict(out[3]))  # the same result twice: a duplicate
    out[-5]["comment"] = "hemolyzed"  # a field only this row has
    return out


@pytest.mark.parametrize("batch_rows", [1, 7, 1000])
def test_workbook_rows_in_batches(tmp_path: Path, batch_rows: int) -> None:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    records = rows(40)
    header = ["patient_id", "collected_at", "test", "result", "unit", "comment"]
    ws.append(header)
    for k, rec in enumerate(records):
        ws.append([rec.get(h) for h in header])
        if k == 10:
            ws.append([None] * len(header))  # a blank row: skipped, numbering goes on
    path = tmp_path / "export.xlsx"
    wb.save(path)
    n = assert_same(path, batch_rows)
    # no more batches than the sheet gives; fewer where a draw is carried into the next
    assert 1 <= n <= (-(-len(records) // batch_rows) if batch_rows < 1000 else 1)


@pytest.mark.parametrize("batch_rows", [1, 7, 1000])
def test_json_lines_of_records_in_batches(tmp_path: Path, batch_rows: int) -> None:
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows(40)) + "\n\n", encoding="utf-8")
    assert_same(path, batch_rows)
    # the field only a late line has is a column of every batch: the comment is read
    results, _, _ = batched(path, 7)
    assert (results["comment"] == "hemolyzed").sum() == 1


def test_a_json_line_that_is_not_a_record_is_refused_before_any_batch(tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join([*(json.dumps(r) for r in rows(20)), "[1, 2]"]) + "\n")
    batches = iter_batches(path, batch_rows=2)
    with pytest.raises(InputFileError, match="not a list of flat records"):
        next(batches)


def test_audit_of_a_workbook_in_small_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["patient_id", "collected_at", "test", "result", "unit", "reference_range"])
    for p in range(30):
        for test, value, unit, rng in (
            ("Magnesium", 1.1, "mg/dL", "1.6-2.6"),
            ("Calcium", 7.5, "mg/dL", "8.5-10.5"),
            ("Potassium", 3.1, "mmol/L", "3.5-5.0"),
        ):
            ws.append([f"P{p}", "2024-03-01 08:30", test, value, unit, rng])
    path = tmp_path / "export.xlsx"
    wb.save(path)
    whole = labinterp.audit(path, tmp_path / "whole")
    core = importlib.import_module("labinterp.audit.core")  # labinterp.audit is the function
    monkeypatch.setattr(core, "_BATCH_ROWS", 8)
    batched_summary = labinterp.audit(path, tmp_path / "batched", n_buckets=2)
    assert whole["rows_in"] == batched_summary["rows_in"] == 90
    findings = (tmp_path / "whole" / "findings.csv").read_bytes()
    assert findings == (tmp_path / "batched" / "findings.csv").read_bytes()
    assert whole["counts"]["hypomagnesemia_hypocalcemia"]["fired"] == {
        "possible": 30
    }  # total Ca, no albumin: possible


def test_mimic_iv_json_lines_in_batches(shared_data: Path) -> None:
    path = shared_data / "mimic_iv_demo_v1_json" / "analyte_rows.jsonl.gz"
    if not path.exists():
        pytest.skip("the MIMIC-IV v1 JSON export is not beside the project")
    assert assert_same(path, 500) > 1


def test_workbook_rows_keep_their_sheet_numbers(tmp_path: Path) -> None:
    """A sheet whose table starts lower down and further right: each result is numbered
    by its row in the sheet, as a user finds it in the spreadsheet program."""
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws["C3"], ws["D3"], ws["E3"], ws["F3"], ws["G3"] = "patient", "date", "test", "result", "unit"
    ws["C4"], ws["D4"], ws["E4"], ws["F4"], ws["G4"] = 93705, "2024-03-01", "Mg", 1.2, "mg/dL"
    ws["C6"], ws["D6"], ws["E6"], ws["F6"], ws["G6"] = 93705, "2024-03-02", "Mg", 2, "mg/dL"
    path = tmp_path / "export.xlsx"
    wb.save(path)
    res = read(path)
    assert list(res.results["source_row"]) == [4, 6]
    assert list(res.results["patient_id"]) == ["93705", "93705"]
    assert list(res.results["value_raw"]) == ["1.2", "2"]  # a whole number as the sheet shows it


@pytest.mark.parametrize("block", [4097, 65_536])
def test_utf16_text_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    """A spreadsheet's "Unicode text" (UTF-16 with a byte-order mark, tabs, CRLF) is read
    in pieces, transcoded as it is read; an odd piece size cuts characters in two."""
    from labinterp.readers import table

    monkeypatch.setattr(table, "STREAM_BLOCK_BYTES", block)
    monkeypatch.setattr(table, "FAST_BLOCK_BYTES", block)
    header = "patient_id\tcollected_at\ttest\tresult\tunit\tcomment\r\n"
    lines = [
        f"P{r['patient_id'][1:]}\t{r['collected_at']}\t{r['test']}\t{r['result']}"
        f"\t{r['unit']}\t{'Hämolyse µ' if i % 7 == 0 else ''}\r\n"
        for i, r in enumerate(rows(3000))
    ]
    path = tmp_path / "export.txt"
    path.write_bytes((header + "".join(lines)).encode("utf-16"))
    whole = read(path)
    results, rejected, n = batched(path, 100)
    assert n > 1
    columns = ["source_row", "patient_id", "analyte", "value", "comment"]
    pd.testing.assert_frame_equal(
        results[columns].sort_values(["source_row", "analyte"]).reset_index(drop=True),
        whole.results[columns].sort_values(["source_row", "analyte"]).reset_index(drop=True),
    )
    assert len(rejected) == len(whole.rejected)
    assert (
        (results["comment"] == "Hämolyse µ").sum()
        == (whole.results["comment"] == "Hämolyse µ").sum()
        > 10
    )


def test_a_workbook_whose_first_sheet_is_a_summary(tmp_path: Path) -> None:
    # workbooks often open on a cover or summary sheet: the results sheet is found
    import openpyxl

    from labinterp.cli import main
    from labinterp.errors import ColumnDetectionError

    wb = openpyxl.Workbook()
    summary = wb.active
    summary.title = "Summary"
    summary.append(["Report", "Lab results, clinic A"])
    summary.append(["Patients", 1])
    results = wb.create_sheet("Results")
    results.append(["patient_id", "collected_at", "test", "result", "unit"])
    results.append(["P1", "2024-03-01 08:30", "Magnesium", 0.5, "mmol/L"])
    results.append(["P1", "2024-03-01 08:30", "Calcium", 1.9, "mmol/L"])
    path = tmp_path / "export.xlsx"
    wb.save(path)
    res = read(path)
    assert res.rows_used == 2 and list(res.results["source_row"]) == [2, 3]
    assert res.files[0].format == "xlsx, sheet 'Results'"
    assert [b.rows_used for b in iter_batches(path, batch_rows=1)] == [2]  # one draw
    assert main(["check", str(path)]) == 0

    del wb["Results"]
    wb.create_sheet("Notes").append(["reviewed by", "lab lead", "2024-03-05"])
    wb.save(path)
    with pytest.raises(
        ColumnDetectionError, match=r"No other sheet has them either \(Summary, Notes\)"
    ):
        read(path)
