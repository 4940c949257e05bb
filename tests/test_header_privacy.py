"""Files whose columns cannot be read: the messages and warnings say what was found and
the fix, and never quote the file's cells (a headerless export's first line, a cover
sheet or JSON keys may be a patient's id and results). `labinterp check` lists them,
when the user asks for a report of the file."""

from __future__ import annotations

import logging
from pathlib import Path

import openpyxl
import pytest

from labinterp import read
from labinterp.cli import main
from labinterp.errors import ColumnDetectionError, MappingFileError
from labinterp.readers.columns import looks_like_data

SECRETS = ("ZZSECRET123", "JOHNDOE", "1.234567", "2024-03-01", "1.23", "Mar 2024")


def _clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.parametrize(
    "line",
    [
        "ZZSECRET123,2024-03-01T08:30:00,Magnesium,1.234567,mg/dL",
        "ZZSECRET123,01 Mar 2024,Magnesium,1.23 mg/dL",
        "ZZSECRET123,Mar 1 2024 08:30,Magnesium,1.23 mg/dL",
        "ZZSECRET123;JOHNDOE;Magnesium;low",
    ],
)
def test_a_headerless_export_is_not_quoted(tmp_path: Path, line: str, capsys) -> None:
    path = tmp_path / "dump.csv"
    path.write_text(line + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ColumnDetectionError) as info:
        read(path)
    _clean(str(info.value))
    assert "dump.csv" in str(info.value) and "--mapping" in str(info.value)
    assert main(["check", str(path), "--format", "json"]) == 2
    _clean(capsys.readouterr().err)


def test_iso_times_month_names_and_values_with_units_look_like_data() -> None:
    assert looks_like_data(["P1", "2024-03-01T08:30:00", "Magnesium", "1.234567", "mg/dL"])
    assert looks_like_data(["P1", "01 Mar 2024", "Magnesium", "1.23 mg/dL"])
    assert looks_like_data(["P1", "Mar 1, 2024", "08:30", "Mg"])
    assert not looks_like_data(["Patient", "Collected", "Test", "Result", "Unit"])
    assert not looks_like_data(["MRN", "25-OH Vitamin D (ng/mL)", "Mg (mg/dL)", "K+ mmol/L"])


def test_the_error_says_how_many_columns_and_which_were_recognised(tmp_path: Path) -> None:
    path = tmp_path / "odd.csv"
    path.write_text("Patient,ZZSECRET123,Result\nP1,x,1.4\n", encoding="utf-8")
    with pytest.raises(ColumnDetectionError) as info:
        read(path)
    message = str(info.value)
    _clean(message)
    assert "3 column names" in message
    assert "patient_id (column 1)" in message and "value_raw (column 3)" in message


def test_json_keyed_by_patient_id_is_not_quoted(tmp_path: Path) -> None:
    path = tmp_path / "by_patient.json"
    path.write_text('{"ZZSECRET123": {"Magnesium": 1.234567}}', encoding="utf-8")
    with pytest.raises(ColumnDetectionError) as info:
        read(path)
    _clean(str(info.value))
    assert "1 column name " in str(info.value)


def test_a_mapping_naming_missing_columns_does_not_quote_the_file(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("ZZSECRET123,JOHNDOE,Magnesium\nA,B,C\n", encoding="utf-8")
    mapping = tmp_path / "m.toml"
    mapping.write_text('[columns]\npatient_id = "MRN"\n', encoding="utf-8")
    with pytest.raises(MappingFileError) as info:
        read(path, mapping=mapping)
    _clean(str(info.value))
    assert "['MRN']" in str(info.value)  # the mapping's own text is the user's


def test_a_cover_sheet_naming_the_patient_is_not_logged(tmp_path: Path, caplog) -> None:
    path = tmp_path / "book.xlsx"
    wb = openpyxl.Workbook()
    cover = wb.active
    cover.title = "Cover"
    cover.append(["Report for patient ZZSECRET123 JOHNDOE"])
    cover.append(["Mg 1.234567"])
    results = wb.create_sheet("Results")
    results.append(["patient_id", "collected_at", "test", "result", "unit"])
    results.append(["P1", "2024-02-01 08:30", "Magnesium", 1.5, "mg/dL"])
    odd = wb.create_sheet("Odd")
    odd.append(["ZZSECRET123", "JOHNDOE", "Magnesium", "low"])
    wb.save(path)
    with caplog.at_level(logging.INFO, logger="labinterp"):
        result = read(path)
    assert result.rows_used == 1
    warnings = " ".join(result.files[0].warnings)
    assert "sheet 'Cover' skipped" in warnings and "sheet 'Odd' skipped" in warnings
    _clean(warnings)
    _clean(caplog.text)


def test_check_lists_the_names_read_when_asked(tmp_path: Path, capsys) -> None:
    path = tmp_path / "dump.csv"
    path.write_text("ZZSECRET123;JOHNDOE;Magnesium;low\n", encoding="utf-8")
    assert main(["check", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "column 1: 'ZZSECRET123'" in out  # the report the user asked for
    _clean(err)
