"""Header spellings, unused columns, headerless files and stray lines inside a table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labinterp import read
from labinterp.cli import main
from labinterp.errors import ColumnDetectionError

LONG = "Patient,Collected,Test,Result,Unit"
ROW = "P1,2024-02-01 07:00,Magnesium,1.4,mg/dL"


def _csv(tmp_path: Path, text: str, name: str = "export.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "header",
    [
        "Ref",
        "Ref.",
        "Reference Ranges",
        "Normal",
        "Normal Range",
        "Reference Range (Units)",
        "Expected Range",
        "Ref Interval",
    ],
)
def test_range_column_spellings_are_read(tmp_path: Path, header: str) -> None:
    path = _csv(tmp_path, f'{LONG},"{header}"\n{ROW},1.7-2.4\n')
    res = read(path)
    assert res.files[0].unused_columns == ()
    assert res.results["range_origin"].tolist() == ["row"]
    assert res.results["range_low_reported"].tolist() == [1.7]


@pytest.mark.parametrize(
    "header",
    [
        "Result Comments",
        "Lab Comments",
        "Specimen Comment",
        "Comment(s)",
        "Kommentare",
        "Commentaires",
    ],
)
def test_comment_column_spellings_are_read(tmp_path: Path, header: str) -> None:
    path = _csv(tmp_path, f'{LONG},"{header}"\n{ROW},Specimen hemolyzed\n')
    res = read(path)
    assert res.files[0].unused_columns == ()
    assert "comment" in res.files[0].fields


def test_normal_is_a_range_only_when_no_other_column_is_one(tmp_path: Path) -> None:
    path = _csv(tmp_path, f"{LONG},Reference Range,Normal\n{ROW},1.7-2.4,N\n")
    res = read(path)
    assert res.results["range_low_reported"].tolist() == [1.7]
    assert res.files[0].unused_columns == ("Normal",)


def test_draw_date_is_the_collection_time(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        "Patient,Draw Date,Test,Result,Unit\n"
        "A-01,2024-05-01 08:00,Magnesium,1.3,mg/dL\n"
        "A-01,2024-05-03 08:00,Magnesium,1.5,mg/dL\n",
    )
    res = read(path)
    assert res.rows_used == 2 and not res.files[0].undated


def test_check_lists_the_columns_not_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _csv(tmp_path, f"{LONG},Lab Tech,Empty\n{ROW},JS,\n")
    assert main(["check", "--format", "json", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    # a column holding nothing loses nothing: only "Lab Tech" was ignored
    assert info["files"][0]["unused_columns"] == ["Lab Tech"]
    assert main(["check", str(path)]) == 0
    captured = capsys.readouterr()
    assert "1 column not used: 'Lab Tech'" in captured.out
    assert "JS" not in captured.err  # headers are named, never values


def test_interpret_warns_once_about_columns_not_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _csv(
        tmp_path, f"{LONG},Lab Tech\n{ROW},JS\nP2,2024-02-01 07:00,Magnesium,1.9,mg/dL,JS\n"
    )
    main(["interpret", str(path)])
    err = capsys.readouterr().err
    assert err.count("1 column not used: 'Lab Tech'") == 1
    assert "--mapping" in err and "JS" not in err.replace("'Lab Tech'", "")


@pytest.mark.parametrize(
    ("header", "analyte", "unit"),
    [
        ("K+ mmol/L", "potassium", "mmol/L"),
        ("Potassium mmol/L", "potassium", "mmol/L"),
        ("Magnesium mmol/L", "magnesium", "mmol/L"),
        ("Mg (mg/dL)", "magnesium", "mg/dL"),
    ],
)
def test_wide_header_with_a_unit_after_the_name(
    tmp_path: Path, header: str, analyte: str, unit: str
) -> None:
    path = _csv(tmp_path, f"Patient,Collected,{header}\nA-01,2024-05-01 08:00,0.9\n")
    res = read(path)
    assert res.results["analyte"].tolist() == [analyte]
    assert res.results["unit_reported"].tolist() == [unit]


def test_unreadable_wide_column_is_listed_as_not_used(tmp_path: Path) -> None:
    path = _csv(tmp_path, "Patient,Collected,Mg (mg/dL),Na mmol/L\nA-01,2024-05-01 08:00,1.9,139\n")
    res = read(path)
    assert res.rows_used == 1
    assert res.files[0].unused_columns == ("Na mmol/L",)


HEADERLESS = (
    "0801234,2024-02-01 07:00,Magnesium,1.4,mg/dL,1.6-2.6,L\n"
    "0801234,2024-02-01 07:00,Potassium,3.1,mmol/L,3.5-5.1,L\n"
)


def test_headerless_file_error_does_not_quote_the_data(tmp_path: Path) -> None:
    path = _csv(tmp_path, HEADERLESS)
    with pytest.raises(ColumnDetectionError) as info:
        read(path)
    message = str(info.value)
    assert "0801234" not in message and "1.4" not in message
    assert "looks like a row of results" in message and "header line" in message


def test_headerless_file_in_a_folder_audit_keeps_the_data_out_of_the_summary(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _csv(folder, f"{LONG}\n{ROW}\n", "good.csv")
    _csv(folder, HEADERLESS, "dump.csv")
    out = tmp_path / "out"
    assert main(["audit", str(folder), "-o", str(out), "-q"]) == 0
    summary = (out / "summary.json").read_text(encoding="utf-8")
    assert "dump.csv" in summary
    assert "0801234" not in summary and "3.5-5.1" not in summary


def test_repeated_header_and_footer_lines_are_not_result_rows(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        "Patient ID,Collected,Test,Result,Units,Reference Range,Flag\n"
        "1001,2024-02-01 07:00,Magnesium,1.4,mg/dL,1.6-2.6,L\n"
        ",,,Page 1 of 2,,,\n"
        "Patient ID,Collected,Test,Result,Units,Reference Range,Flag\n"
        "1001,2024-02-01 07:00,Potassium,3.1,mmol/L,3.5-5.1,L\n",
    )
    res = read(path)
    assert res.rows_in == res.rows_used + res.rows_rejected == 4
    rejected = res.rejected.set_index("source_row")
    assert rejected.loc[3, "reason"] == "malformed_row"
    assert "not a result row" in rejected.loc[3, "detail"]
    assert rejected.loc[4, "reason"] == "malformed_row"
    assert "repeat of the header" in rejected.loc[4, "detail"]
    assert "out_of_scope" not in set(res.rejected["reason"])


def test_row_short_only_of_trailing_optional_fields_is_read(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        "Patient ID,Collected,Test,Result,Units,Reference Range,Comment\n"
        "0501,2024-02-01 07:00,Magnesium,1.5,mg/dL,1.6-2.6,\n"
        "0503,2024-02-01 07:00,Magnesium,1.5,mg/dL,1.6-2.6\n"  # no trailing comma
        "0504,2024-02-01 07:00,Magnesium,1.5\n",  # short of its unit: not read
    )
    res = read(path)
    assert sorted(res.results["patient_id"]) == ["0501", "0503"]
    assert res.rejected["source_row"].tolist() == [4]
    assert res.rejected["reason"].tolist() == ["malformed_row"]
