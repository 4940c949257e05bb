"""The reader on small exports written the ways real systems write them."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import pandas as pd
import pytest

from labinterp import schema
from labinterp.errors import (
    ColumnDetectionError,
    DamagedFileError,
    DateFormatError,
    InputFileError,
    InputNotFoundError,
    LabinterpError,
    MappingFileError,
)
from labinterp.reading import read

HEADER = "patient_id,collected_at,test,result,unit,reference_range,comment\n"


def write(tmp_path: Path, text: str, name: str = "export.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def one(tmp_path: Path, body: str, **kw) -> pd.DataFrame:
    res = read(write(tmp_path, HEADER + body), **kw)
    assert res.rows_in == res.rows_used + res.rows_rejected
    return res.results


def test_tables_match_their_schemas(tmp_path: Path) -> None:
    res = read(write(tmp_path, HEADER + "P1,2024-03-01 08:30,Magnesium,1.2,mg/dL,1.6-2.6,\n"))
    schema.check(res.results, schema.RESULTS, "results")
    schema.check(res.rejected, schema.REJECTED, "rejected")


def test_conventional_magnesium_is_converted_with_the_row_range(tmp_path: Path) -> None:
    r = one(tmp_path, "P1,2024-03-01 08:30,Magnesium,1.2,mg/dL,1.6-2.6,\n").iloc[0]
    assert r["analyte"] == "magnesium"
    assert r["value"] == pytest.approx(1.2 * 10 / 24.305)
    assert r["value_reported"] == 1.2 and r["unit_reported"] == "mg/dL"
    assert r["unit_system"] == "conventional"
    assert r["range_origin"] == "row"
    assert r["range_low"] == pytest.approx(1.6 * 10 / 24.305)
    assert r["range_high_reported"] == 2.6
    assert r["collected_at"] == pd.Timestamp("2024-03-01 08:30")
    assert r["source_row"] == 2


def test_bundled_range_when_the_row_has_none_and_its_source(tmp_path: Path) -> None:
    r = one(tmp_path, "P1,2024-03-01,Potassium,3.1,mmol/L,,\n").iloc[0]
    assert (r["range_origin"], r["range_low"], r["range_high"]) == ("bundled", 3.5, 5.0)
    assert r["range_source"] == "S43"


def test_children_get_no_adult_range(tmp_path: Path) -> None:
    text = (
        "patient_id,birth_date,collected_at,test,result,unit\n"
        "C1,2020-01-01,2024-03-01,Phosphate,5.5,mg/dL\n"
    )
    r = read(write(tmp_path, text)).results.iloc[0]
    assert r["age_years"] < 18
    assert r["range_origin"] == "unknown" and math.isnan(r["range_low"])


@pytest.mark.parametrize(
    ("text", "comparator", "number"),
    [
        ("<0.5", "<", 0.5),
        ("< 0.5", "<", 0.5),
        (">= 200", ">=", 200.0),
        ("LESS THAN 0.4", "<", 0.4),
        ("GREATER THAN 10", ">", 10.0),
        ("≤1.0", "<=", 1.0),
        ("7.90", "", 7.9),
    ],
)
def test_censored_values_keep_their_comparator(
    tmp_path: Path, text: str, comparator: str, number: float
) -> None:
    r = one(tmp_path, f'P1,2024-03-01,CRP,"{text}",mg/L,,\n').iloc[0]
    assert (r["comparator"], r["value_reported"]) == (comparator, number)


def test_censored_values_are_checked_only_on_the_side_they_prove(tmp_path: Path) -> None:
    res = read(
        write(
            tmp_path,
            HEADER + "P1,2024-03-01,Potassium,<0.5,mmol/L,,\n"
            "P1,2024-03-02,Potassium,<0.9,mmol/L,,\nP1,2024-03-03,Potassium,>20,mmol/L,,\n",
        )
    )
    assert list(res.rejected["reason"]) == ["implausible_value", "implausible_value"]
    assert list(res.results["value_raw"]) == ["<0.9"]


@pytest.mark.parametrize(
    "text", ["hemolyzed", "UNABLE TO REPORT DUE TO CONTAMINATION", "See Comments", "___", "NEG"]
)
def test_text_results_stay_text(tmp_path: Path, text: str) -> None:
    r = one(tmp_path, f"P1,2024-03-01,Calcium,{text},mg/dL,,\n").iloc[0]
    assert r["text_result"] == text
    assert math.isnan(r["value"]) and math.isnan(r["value_reported"])


def test_quality_flags_from_comments(tmp_path: Path) -> None:
    res = one(
        tmp_path,
        "P1,2024-03-01,Potassium,6.1,mmol/L,,HEMOLYSIS FALSELY ELEVATES K..\n"
        "P1,2024-03-02,Potassium,4.1,mmol/L,,VERIFIED.  NOT HEMOLYZED.\n"
        "P1,2024-03-03,Calcium,hemolyzed,mg/dL,,\n"
        "P1,2024-03-04,Calcium,5.0,mg/dL,,possible EDTA contamination\n",
    )
    assert list(res["quality"]) == [
        "hemolyzed",
        "not_hemolyzed",
        "hemolyzed",
        "contamination_comment",
    ]


@pytest.mark.parametrize(
    ("range_text", "low", "high"),
    [
        ("3.5-5.0", 3.5, 5.0),
        ("3.5 - 5.0", 3.5, 5.0),
        ("3.5 to 5.0", 3.5, 5.0),
        ("<10", None, 10.0),
        (">= 60", 60.0, None),
        ("3.5-5.0 mmol/L", 3.5, 5.0),
        ("3.5 - 5.1 mmol/L (adult)", 3.5, 5.1),
        ("Adult: 3.5-5.1", 3.5, 5.1),
        ("Ref. 3.5-5.1", 3.5, 5.1),
        ("[3.5-5.1]", 3.5, 5.1),
        ("(3.5 to 5.1)", 3.5, 5.1),
        ("3,5-5,1", 3.5, 5.1),  # decimal commas in a file that uses points
        ("3.5–5.1", 3.5, 5.1),
        ("3.5-5.1 mmol/L (new range since 2019-01-05)", 3.5, 5.1),
        ("less than 10", None, 10.0),
        ("Greater than or equal to 60 mmol/L", 60.0, None),  # the unit is the row's
        ("up to 10", None, 10.0),
    ],
)
def test_reference_range_strings(tmp_path: Path, range_text: str, low, high) -> None:
    r = one(tmp_path, f'P1,2024-03-01,Potassium,4.0,mmol/L,"{range_text}",\n').iloc[0]
    assert r["range_origin"] == "row"
    assert (None if math.isnan(r["range_low"]) else r["range_low"]) == low
    assert (None if math.isnan(r["range_high"]) else r["range_high"]) == high


@pytest.mark.parametrize(
    "range_text",
    ["M: 3.5-5.0; F: 3.4-4.8", "3.5-5.0 (men) 3.4-4.8 (women)", "see report", "pending"],
)
def test_a_printed_range_that_cannot_be_used_is_noted_not_guessed(
    tmp_path: Path, range_text: str
) -> None:
    """Ranges for several groups of patients are not picked from, and text without a limit
    is not read; the bundled range applies and the row says the lab's one was not used."""
    r = one(tmp_path, f'P1,2024-03-01,Potassium,4.0,mmol/L,"{range_text}",\n').iloc[0]
    assert r["range_origin"] == "bundled"
    assert "unreadable_range" in r["quality"]


def test_a_blood_test_on_another_specimen_is_rejected_not_read_as_blood(tmp_path: Path) -> None:
    """An export with a specimen type column: a magnesium measured on urine is not a serum
    magnesium (it would read as high); serum, plasma and blood rows are kept."""
    res = read(
        write(
            tmp_path,
            "patient_id,collected_at,test,result,unit,Specimen Type\n"
            "P1,2024-03-01 08:00,Magnesium,1.9,mg/dL,Serum\n"
            "P1,2024-03-01 08:00,Magnesium,5.2,mg/dL,Urine\n"
            "P1,2024-03-01 08:00,Potassium,3.0,mmol/L,CSF\n"
            "P1,2024-03-01 08:00,Potassium,4.1,mmol/L,Plasma\n"
            "P1,2024-03-01 08:00,Calcium,9.1,mg/dL,Whole blood\n"
            "P1,2024-03-01 08:00,Sodium,140,mmol/L,Urine\n"
            "P1,2024-03-01 08:00,Magnesium,2.0,mg/dL,\n",
        )
    )
    assert res.rows_in == res.rows_used + res.rows_rejected == 7
    assert sorted(res.results["value_reported"]) == [1.9, 2.0, 4.1, 9.1]
    rejected = res.rejected.set_index("source_row")
    assert rejected.loc[3, "reason"] == rejected.loc[4, "reason"] == "non_blood_specimen"
    assert "'Urine', not blood" in rejected.loc[3, "detail"]
    assert rejected.loc[7, "reason"] == "out_of_scope"  # sodium: out of scope whatever the specimen
    assert 'specimen_type = "Specimen Type"' in res.files[0].mapping_toml


@pytest.mark.parametrize(
    ("row", "fits"),
    [
        ("Magnesium,0.8,mg/dL,0.70-1.00", "mmol/L"),  # an SI range on a conventional unit
        ("Potassium,4.1,mg/dL,3.5-5.1", "mmol/L"),
        ("Calcium,2.3,mg/dL,2.15-2.55", "mmol/L"),
        ("Albumin,3.8,g/L,3.5-5.0", "g/dL"),
        ("Magnesium,1.9,mg/dL,1.6-2.6", None),
        ("Magnesium,1.9,mEq/L,1.4-2.1", None),  # close to mg/dL, but it is a mEq/L range
        ("Phosphate,5.9,mg/dL,4.0-7.0", None),  # a child's range, 1.6x the adult one
        ("25-OH Vitamin D,32,ng/mL,30-100", None),
        ("CRP,0.8,mg/L,<1.0", None),  # one-sided: an hs-CRP cut-off, not checked
    ],
)
def test_a_printed_range_that_fits_another_unit_is_a_suspected_unit_error(
    tmp_path: Path, row: str, fits: str | None
) -> None:
    res = read(
        write(
            tmp_path, HEADER + f'P1,2024-03-01,{row.rsplit(",", 1)[0]},"{row.rsplit(",", 1)[1]}",\n'
        )
    )
    assert res.rows_in == res.rows_used + res.rows_rejected == 1
    if fits is None:
        assert res.rows_used == 1
    else:
        (reason,) = res.rejected["reason"]
        assert reason == "implausible_value"
        assert f"fits {fits}" in res.rejected["detail"].iloc[0]


def test_of_the_same_result_in_two_exports_the_one_with_the_printed_range_is_kept(
    tmp_path: Path,
) -> None:
    """The same Mg in an export without ranges (read first) and one with the lab's range:
    the lab's range must not be lost to the bundled one."""
    bare = write(tmp_path, HEADER + "P1,2024-03-01 08:00,Magnesium,1.65,mg/dL,,\n", "a.csv")
    ranged = write(
        tmp_path, HEADER + "P1,2024-03-01 08:00,Magnesium,1.65,mg/dL,1.6-2.6,\n", "b.csv"
    )
    res = read([bare, ranged])
    (kept,) = res.results.itertuples()
    assert (kept.source_file, kept.range_origin, kept.range_low_reported) == ("b.csv", "row", 1.6)
    (dup,) = res.rejected.itertuples()
    assert (dup.source_file, dup.reason, dup.detail) == (
        "a.csv",
        "duplicate",
        "same result as b.csv row 2; nothing to fix: that one is read",
    )
    # without a range on either side the earliest row is kept, as before
    res = read(
        [bare, write(tmp_path, HEADER + "P1,2024-03-01 08:00,Magnesium,1.65,mg/dL,,\n", "c.csv")]
    )
    assert list(res.results["source_file"]) == ["a.csv"]


def test_low_high_columns(tmp_path: Path) -> None:
    text = "mrn,charttime,component,value,units,ref_low,ref_high\nA,2024-01-01,CRP,12,mg/L,,5\n"
    r = read(write(tmp_path, text)).results.iloc[0]
    assert r["analyte"] == "crp" and r["range_high"] == 5.0 and math.isnan(r["range_low"])


@pytest.mark.parametrize(
    ("delimiter", "encoding", "bom"),
    [
        (",", "utf-8", False),
        (";", "utf-8", False),
        ("\t", "utf-8", False),
        (",", "utf-8", True),
        (";", "latin-1", False),
        ("\t", "utf-16", False),
    ],
)
def test_delimiters_and_encodings(tmp_path: Path, delimiter: str, encoding: str, bom: bool) -> None:
    rows = [
        ["Patient", "Date", "Test", "Result", "Unit", "Comment"],
        ["P1", "2024-03-01", "Magnesium", "1.9", "mg/dL", "prélèvement hémolysé"],
        ["P2", "2024-03-01", "Potassium", "3.2", "mmol/L", ""],
    ]
    text = "\n".join(delimiter.join(r) for r in rows) + "\n"
    data = ("\ufeff" if bom else "") + text
    res = read(write(tmp_path, data, encoding=encoding))
    assert res.rows_used == 2
    assert res.results["comment"].iloc[0] == "prélèvement hémolysé"
    assert res.results["quality"].iloc[0] == "hemolyzed"


@pytest.mark.parametrize("bom", [False, True])
def test_damaged_utf8_bytes_become_replacement_characters(tmp_path: Path, bom: bool) -> None:
    # Damage past the part the encoding is guessed from (the file is taken for UTF-8): a
    # byte that is not UTF-8 in a text column, and in a column whose header is a number
    # (one pyarrow would take for binary). Both read, as U+FFFD; no row is lost.
    valid = 8000  # about 300 KB of clean rows
    body = (
        b"patient_id,collected_at,test,result,unit,2024\n"
        + b"P1,2024-03-01,Magnesium,1.9,mg/dL,ok\n" * valid
        + b"P2,2024-03-01,Potassium,3.2,mmol/L,b\xe9d\n"
        + b"P\xff3,2024-03-01,Potassium,3.4,mmol/L,x\n"
    )
    path = tmp_path / "damaged.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + body)
    res = read(path)
    assert res.rows_in == valid + 2
    last = res.results.sort_values("source_row").tail(2)
    assert list(last["patient_id"]) == ["P2", "P\ufffd3"]
    assert list(last["source_row"]) == [valid + 2, valid + 3]


def test_decimal_commas_quoted_fields_and_blank_lines(tmp_path: Path) -> None:
    text = (
        "Patient;Date;Test;Result;Unit;Ref range\n\n"
        'P1;01.03.2024 08:30;Magnesium;0,62;mmol/L;"0,70-1,05"\n\n'
        'P1;01.03.2024 08:30;"Calcium, total";2,01;mmol/L;"2,12-2,62"\n'
    )
    res = read(write(tmp_path, text))
    r = res.results
    assert list(r["value"]) == [0.62, 2.01]
    assert list(r["range_low"]) == [0.70, 2.12]
    assert list(r["source_row"]) == [3, 5]  # physical lines, blank lines counted
    assert r["collected_at"].iloc[0] == pd.Timestamp("2024-03-01 08:30")


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_windows_and_old_mac_line_ends_keep_line_numbers(tmp_path: Path, newline: str) -> None:
    lines = [
        HEADER.strip(),
        "P1,2024-03-01,Magnesium,1.2,mg/dL,,",
        "P1,2024-03-01,Potassium,3.1,mmol/L,,",
    ]
    res = read(write(tmp_path, newline.join(lines) + newline))
    assert list(res.results["source_row"]) == [2, 3]
    assert list(res.results["value_reported"]) == [1.2, 3.1]


def test_trailing_blank_line_is_not_a_row(tmp_path: Path) -> None:
    res = read(write(tmp_path, HEADER + "P1,2024-03-01,Magnesium,1.2,mg/dL,,\n\n"))
    assert (res.rows_in, res.rows_used) == (1, 1)
    assert list(res.results["source_row"]) == [2]


def test_us_dates_detected_per_file(tmp_path: Path) -> None:
    r = one(
        tmp_path,
        "P1,8/16/2148 0:00,Magnesium,2,mg/dL,,\nP1,3/5/2148 1:47 PM,Magnesium,2.1,mg/dL,,\n",
    )
    assert list(r["collected_at"]) == [pd.Timestamp("2148-08-16"), pd.Timestamp("2148-03-05 13:47")]


def test_ambiguous_slash_dates_ask_for_a_format(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "P1,3/5/2024,Magnesium,2,mg/dL,,\n")
    with pytest.raises(DateFormatError, match="--date-format"):
        read(path)
    r = read(path, date_format="%d/%m/%Y").results.iloc[0]
    assert r["collected_at"] == pd.Timestamp("2024-05-03")


def test_two_digit_years_are_rejected_not_guessed(tmp_path: Path) -> None:
    res = read(
        write(
            tmp_path,
            HEADER
            + "P1,11/19/38 18:08,Magnesium,2,mg/dL,,\nP1,11/20/2038 18:08,Magnesium,2,mg/dL,,\n",
        )
    )
    assert list(res.rejected["reason"]) == ["ambiguous_two_digit_year"]
    assert res.rows_used == 1


def test_offsets_become_utc_and_are_kept(tmp_path: Path) -> None:
    r = one(
        tmp_path,
        "P1,2018-05-26T23:21:43-07:00,Potassium,4.9,mmol/L,,\n"
        "P1,2018-05-26T09:00:00.5+0530,Potassium,4.8,mmol/L,,\n"
        "P1,2018-05-26T09:00:00Z,Potassium,4.7,mmol/L,,\n"
        "P1,2018-05-26 09:00,Potassium,4.6,mmol/L,,\n"
        "P1,2018-05-26,Potassium,4.5,mmol/L,,\n",
    )
    assert list(r["collected_at"]) == [
        pd.Timestamp("2018-05-27 06:21:43"),
        pd.Timestamp("2018-05-26 03:30:00.5"),
        pd.Timestamp("2018-05-26 09:00"),
        pd.Timestamp("2018-05-26 09:00"),
        pd.Timestamp("2018-05-26"),
    ]
    # the offset printed (minutes east of UTC): "Z" is 0, no offset is missing
    assert r["utc_offset_min"].tolist() == [-420, 330, 0, pd.NA, pd.NA]


@pytest.mark.parametrize("serial", ["45352", "45352.354166"])
def test_a_spreadsheet_date_serial_is_rejected_with_its_own_fix(
    tmp_path: Path, serial: str
) -> None:
    res = read(write(tmp_path, HEADER + f"P1,{serial},Magnesium,1.9,mg/dL,,\n"))
    row = res.rejected.iloc[0]
    assert row["reason"] == "unparseable_date"
    assert "format the column as dates" in row["detail"]


def test_every_rejection_reason_is_accounted(tmp_path: Path) -> None:
    body = (
        "P1,2024-03-01,Sodium,140,mmol/L,,\n"  # out_of_scope
        ",2024-03-01,Magnesium,1.9,mg/dL,,\n"  # missing_patient_id
        "P1,,Magnesium,1.9,mg/dL,,\n"  # missing_date
        "P1,yesterday,Magnesium,1.9,mg/dL,,\n"  # unparseable_date
        "P1,2024-03-01,Magnesium,,mg/dL,,\n"  # missing_value
        "P1,2024-03-01,Magnesium,1.9,K/uL,,\n"  # unknown_unit
        "P1,2024-03-01,Magnesium,1.9,U/L,,\n"  # unit_not_valid_for_analyte
        "P1,2024-03-01,Magnesium,17,mmol/L,,\n"  # implausible_value
        "P1,2024-03-01,CRP,235,mg/dL,,\n"  # implausible_value
        "P1,2024-03-01,,1.9,mg/dL,,\n"  # missing_test
        "P1,2024-03-02,Magnesium,1.9,mg/dL,,\n"  # used
        "P1,2024-03-02,Magnesium,1.9,mg/dL,,\n"  # duplicate
    )
    res = read(write(tmp_path, HEADER + body))
    assert res.rows_in == 12 and res.rows_used == 1
    assert list(res.rejected.sort_values("source_row")["reason"]) == [
        "out_of_scope",
        "missing_patient_id",
        "missing_date",
        "unparseable_date",
        "missing_value",
        "unknown_unit",
        "unit_not_valid_for_analyte",
        "implausible_value",
        "implausible_value",
        "missing_test",
        "duplicate",
    ]
    crp = res.rejected[res.rejected["source_row"] == 10].iloc[0]
    assert "fits mg/L" in crp["detail"]


def test_same_result_in_two_unit_systems_is_one_result(tmp_path: Path) -> None:
    res = read(
        write(
            tmp_path,
            HEADER + "P1,2024-03-01,Calcium,9.3,mg/dL,,\nP1,2024-03-01,Calcium,2.325,mmol/L,,\n",
        )
    )
    assert res.rows_used == 1 and list(res.rejected["reason"]) == ["duplicate"]


def test_wide_layout_with_units_in_headers(tmp_path: Path) -> None:
    text = "MRN,Date,Mg (mg/dL),Calcium [mmol/L],K (mmol/L)\nA,2024-01-02,1.5,2.01,\n"
    res = read(write(tmp_path, text))
    assert res.rows_in == 3 and res.rows_used == 2
    assert sorted(res.results["analyte"]) == ["calcium", "magnesium"]
    assert list(res.rejected["reason"]) == ["missing_value"]


def test_mapping_file_for_unusual_headers(tmp_path: Path) -> None:
    text = "Pt No,When,Analysis,Res,Dim\nA,2024-01-02,CA TOT,8.1,mg/dL\n"
    path = write(tmp_path, text)
    with pytest.raises(ColumnDetectionError):
        read(path)
    mapping = tmp_path / "m.toml"
    mapping.write_text(
        '[columns]\npatient_id = "Pt No"\ncollected_at = "When"\ntest_name = "Analysis"\n'
        'value_raw = "Res"\nunit_raw = "Dim"\n[tests]\n"CA TOT" = "calcium"\n'
    )
    r = read(path, mapping=mapping).results.iloc[0]
    assert r["analyte"] == "calcium"
    mapping.write_text('[columns]\npatient_id = "Nope"\n')
    with pytest.raises(MappingFileError, match="Nope"):
        read(path, mapping=mapping)


def test_a_mapping_adds_to_the_columns_recognised(tmp_path: Path) -> None:
    """A mapping names what detection missed or got wrong; the rest stays as detected: a
    mapping with only [tests] (or only [options]) does not turn detection off, and one
    naming only the odd patient column reads the file."""
    text = "patient_id,collected_at,test,result,unit\nP1,2024-03-01 08:30,CA TOT,2.0,mmol/L\n"
    path = write(tmp_path, text)
    mapping = tmp_path / "m.toml"
    mapping.write_text('[tests]\n"CA TOT" = "calcium"\n')
    res = read(path, mapping=mapping)
    assert res.rows_used == 1 and res.results["analyte"].tolist() == ["calcium"]
    odd = write(
        tmp_path, "Pt No,collected_at,test,result,unit\nP1,2024-03-01 08:30,Mg,0.5,mmol/L\n"
    )
    with pytest.raises(ColumnDetectionError, match="still recognised"):
        read(odd)
    mapping.write_text('[columns]\npatient_id = "Pt No"\n')
    assert read(odd, mapping=mapping).results["patient_id"].tolist() == ["P1"]
    # a field neither the mapping nor the headers give is still an error naming it
    mapping.write_text('[columns]\ntest_name = "unit"\n')
    with pytest.raises(ColumnDetectionError, match="patient_id"):
        read(odd, mapping=mapping)


def test_xlsx_export(tmp_path: Path) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Patient", "Collected", "Test", "Result", "Units"])
    ws.append(["P1", "2024-03-01 08:30", "Magnesium", 1.2, "mg/dL"])
    ws.append([None, None, None, None, None])
    ws.append(["P1", "2024-03-01 08:30", "Potassium", "<2.5", "mmol/L"])
    path = tmp_path / "export.xlsx"
    wb.save(path)
    res = read(path)
    assert list(res.results["source_row"]) == [2, 4]
    assert list(res.results["comparator"]) == ["", "<"]


@pytest.mark.parametrize(
    ("content", "error", "words"),
    [
        (b"", InputFileError, "empty"),
        (b"\x00\x01\x02binary\x00" * 50, InputFileError, "binary"),
        (b"%PDF-1.7 stuff", InputFileError, "PDF"),
        (b"   \n\n  ", InputFileError, "no data"),
        (b"a,b,c\n1,2,3\n", ColumnDetectionError, "no column"),
        (b"MSH|^~\\&|LAB\r", InputFileError, "HL7"),
    ],
)
def test_bad_input_names_file_and_fix(
    tmp_path: Path, content: bytes, error: type, words: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(error) as info:
        read(path)
    message = str(info.value)
    assert "bad.csv" in message and words in message and "Fix:" in message
    assert isinstance(info.value, LabinterpError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        read(tmp_path / "nope.csv")


def test_a_folder_is_read_with_its_side_tables_skipped(tmp_path: Path) -> None:
    """Every command reads folders as the audit does: the exports inside (also in
    subfolders), with tables that are not exports (an item dictionary) skipped and listed."""
    (tmp_path / "in" / "2024").mkdir(parents=True)
    write(tmp_path / "in", HEADER + "P1,2024-03-01 08:30,Magnesium,1.2,mg/dL,,\n", "a.csv")
    write(tmp_path / "in" / "2024", HEADER + "P2,2024-03-02 08:30,Magnesium,1.9,mg/dL,,\n", "b.csv")
    write(tmp_path / "in", "itemid,label\n50960,Magnesium\n", "D_LABITEMS.csv")
    write(tmp_path / "in", "# where these came from\n", "SOURCE.md")
    write(tmp_path / "in", "MSH|^~\\&|LAB\r", "message.hl7")
    res = read(tmp_path / "in")
    assert sorted(res.results["patient_id"]) == ["P1", "P2"]
    assert [f.name for f in res.files] == ["b.csv", "a.csv"]  # sorted paths: "2024/" first
    assert [s["file"] for s in res.skipped] == ["D_LABITEMS.csv", "message.hl7"]
    assert "item dictionary read beside an export of MIMIC-III" in res.skipped[0]["reason"]
    assert "HL7" in res.skipped[1]["reason"]
    assert res.rows_in == res.rows_used + res.rows_rejected == 2
    # named directly, the same side table is an error, not a silent skip
    with pytest.raises(ColumnDetectionError, match=r"D_LABITEMS\.csv"):
        read([tmp_path / "in" / "a.csv", tmp_path / "in" / "D_LABITEMS.csv"])


def test_a_folder_without_any_export_names_what_it_skipped(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    write(tmp_path / "in", "itemid,label\n50960,Magnesium\n", "items.csv")
    with pytest.raises(InputFileError, match=r"\(items\.csv\)") as info:
        read(tmp_path / "in")
    # file names only: the reasons may quote the files, and `check` says them
    assert "itemid" not in str(info.value) and "labinterp check" in str(info.value)
    assert "Fix:" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputNotFoundError, match="no export files"):
        read(tmp_path / "empty")


def test_a_folder_without_exports_names_the_files_only(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.csv").write_text("ZZSECRET123;JOHNDOE;Magnesium;low\n", encoding="utf-8")
    (folder / "b.json").write_text('{"ZZSECRET123": {"Magnesium": 1.234567}}', encoding="utf-8")
    with pytest.raises(InputFileError) as info:
        read(folder)
    message = str(info.value)
    assert "ZZSECRET123" not in message and "1.234567" not in message
    assert "a.csv" in message and "b.json" in message and "labinterp check" in message


@pytest.mark.parametrize("damaged", ["ndjson", "gzip", "json_cut_short", "fhir_json"])
def test_a_damaged_export_in_a_folder_stops_every_command(tmp_path: Path, damaged: str) -> None:
    """A file that is not an export is skipped; one that is an export but breaks partway
    is not, in `read` and the audit alike: skipping it would drop its rows unseen."""
    import json

    import labinterp

    folder = tmp_path / "in"
    folder.mkdir()
    write(folder, HEADER + "P1,2024-03-01 08:30,Magnesium,1.2,mg/dL,,\n", "a.csv")
    if damaged == "ndjson":
        obs = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "19123-9"}]},
            "subject": {"reference": "Patient/P2"},
            "effectiveDateTime": "2024-03-01T08:30:00Z",
            "valueQuantity": {"value": 1.1, "unit": "mg/dL"},
        }
        name, row = "obs.ndjson", 3
        (folder / name).write_text(f"{json.dumps(obs)}\n{json.dumps(obs)}\n{{oops\n")
    elif damaged == "json_cut_short":  # a copy or download that stopped partway
        records = [
            {
                "patient_id": f"P{i}",
                "collected_at": "2024-03-01 08:30",
                "test": "Magnesium",
                "result": "1.1",
                "unit": "mg/dL",
            }
            for i in range(50)
        ]
        text = json.dumps(records)
        name, row = "c.json", 1
        (folder / name).write_text(text[: len(text) // 2])
    elif damaged == "fhir_json":  # whole, but not JSON: a FHIR Bundle with a stray comma
        name, row = "bundle.json", 1
        (folder / name).write_text('{"resourceType": "Bundle", "type": "collection",, "entry": []}')
    else:  # a gzip export cut short: the damage shows past the first bytes
        body = HEADER + "".join(
            f"P{i},2024-03-01 08:30,Magnesium,{1 + i % 10 / 10},mg/dL,,\n" for i in range(60_000)
        )
        packed = gzip.compress(body.encode())
        name, row = "b.csv.gz", None
        (folder / name).write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DamagedFileError) as info:
        read(folder)
    assert info.value.file == name and info.value.row == row
    with pytest.raises(DamagedFileError):
        labinterp.audit(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_malformed_json_file_that_may_not_be_an_export_is_skipped_in_a_folder(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder, HEADER + "P1,2024-03-01 08:30,Magnesium,1.2,mg/dL,,\n", "a.csv")
    (folder / "settings.json").write_text('{"theme": "dark",, "size": 3}\n')
    res = read(folder)
    assert res.rows_used == 1
    assert [s["file"] for s in res.skipped] == ["settings.json"]


def test_huge_line_is_refused_with_its_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from labinterp.readers import table

    monkeypatch.setattr(table, "MAX_LINE_BYTES", 1000)
    path = write(
        tmp_path, HEADER + "P1,2024-03-01,Magnesium,1.2,mg/dL,,\n" + "P1," + "x" * 5000 + "\n"
    )
    with pytest.raises(InputFileError, match="line 3"):
        read(path)


def test_fhir_observation_keeps_comparator_range_and_interpretation(tmp_path: Path) -> None:
    import json

    obs = {
        "resourceType": "Observation",
        "id": "k1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}], "text": "Potassium"},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-03-01T08:30:00Z",
        "valueQuantity": {"value": 2.5, "comparator": "<", "unit": "mmol/L"},
        "referenceRange": [{"low": {"value": 3.5}, "high": {"value": 5.1}}],
        "interpretation": [{"coding": [{"code": "LL"}]}],
        "note": [{"text": "Specimen hemolysed"}],
    }
    path = write(tmp_path, json.dumps(obs), name="obs.json")
    r = read(path).results.iloc[0]
    assert (r["comparator"], r["value"], r["range_high"], r["flag"]) == ("<", 2.5, 5.1, "LL")
    assert r["quality"] == "hemolyzed"
    bad = dict(obs, valueQuantity={"value": "not a number", "unit": "mmol/L"})
    path.write_text(json.dumps(bad))
    res = read(path)
    assert res.rows_in == 1 and list(res.rejected["reason"]) == ["malformed_row"]


def test_fhir_observation_on_a_urine_specimen_is_not_a_blood_result(tmp_path: Path) -> None:
    import json

    def mg(oid: str, specimen: dict) -> dict:
        return {
            "resourceType": "Observation",
            "id": oid,
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "19123-9"}]},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2024-03-01T08:30:00Z",
            "valueQuantity": {"value": 5.2, "unit": "mg/dL"},
            "specimen": specimen,
        }

    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": {"resourceType": "Specimen", "id": "s1", "type": {"text": "Urine"}}},
            {"resource": mg("m1", {"reference": "Specimen/s1"})},
            {"resource": mg("m2", {"reference": "Specimen/s2", "display": "Serum"})},
            {"resource": mg("m3", {"display": "Random urine"})},
        ],
    }
    res = read(write(tmp_path, json.dumps(bundle), name="bundle.json"))
    assert res.rows_in == 3 and res.rows_used == 1
    assert list(res.rejected["reason"]) == ["non_blood_specimen"] * 2


def test_batches_read_slash_dates_in_one_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file streamed in batches decides month/day order once: a later batch whose dates
    are all ambiguous ("3/5/2024") is read the way the first batch showed (US here)."""
    from labinterp.readers import table
    from labinterp.reading import iter_batches

    monkeypatch.setattr(table, "STREAM_BLOCK_BYTES", 512)  # many small batches
    lines = [HEADER.strip()]
    lines += [f"P{i},8/{16 + i % 10}/2024 0:00,Magnesium,2,mg/dL,," for i in range(50)]
    lines += [f"Q{i},3/5/2024 0:00,Magnesium,2,mg/dL,," for i in range(50)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    batches = list(iter_batches(path, batch_rows=10))
    assert len(batches) > 1
    when = pd.concat([b.results for b in batches])["collected_at"]
    assert (when.iloc[50:] == pd.Timestamp("2024-03-05")).all()


def test_batches_decide_what_the_first_leaves_open_from_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first batch's dates could all be day or month first, and its results show no
    decimal separator; a later batch settles both. Every batch reads them as reading the
    whole file does: "25/04/2024" makes the file day-first, "0,55" comma-decimal (so a
    later "1.250" is 1250, as the whole file reads it, not 1.25)."""
    from labinterp.readers import table
    from labinterp.reading import iter_batches

    lines = ["patient_id;collected_at;test;result;unit"]
    lines += [f"A{i};03/04/2024 08:00;PTH;{40 + i % 50};pg/mL" for i in range(60)]
    lines += [
        "Z1;25/04/2024 08:00;Magnesium;0,55;mmol/L",
        "Z1;25/04/2024 08:00;PTH;1.250;pg/mL",
    ]
    path = write(tmp_path, "\n".join(lines) + "\n")
    whole = read(path).results
    monkeypatch.setattr(table, "STREAM_BLOCK_BYTES", 512)  # many small batches
    batches = list(iter_batches(path, batch_rows=10))
    assert len(batches) > 2
    parts = pd.concat([b.results for b in batches], ignore_index=True)
    assert sum(b.rows_rejected for b in batches) == 0
    assert parts["collected_at"].tolist() == whole["collected_at"].tolist()
    assert parts["value_reported"].tolist() == whole["value_reported"].tolist()
    assert parts["collected_at"].iloc[0] == pd.Timestamp("2024-04-03 08:00")
    assert parts["value_reported"].iloc[-2:].tolist() == [0.55, 1250.0]


def _chunked_equals_whole(path: Path, chunk_bytes: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """Read `path` whole and in chunks of `chunk_bytes`; assert the same text, line
    numbers and ragged rows; return the number of chunks."""
    import numpy as np

    from labinterp.readers import sniff, table

    sniffed = sniff.sniff(path)
    whole = table.read_delimited(path, sniffed)
    monkeypatch.setattr(table, "STREAM_BLOCK_BYTES", chunk_bytes)
    parts = list(table.iter_delimited(path, sniffed, batch_rows=1))
    frame = pd.concat([p.frame for p in parts], ignore_index=True)
    assert list(frame.columns) == list(whole.frame.columns)
    for name in frame.columns:
        got = frame[name].astype(object).fillna("<missing>").tolist()
        assert got == whole.frame[name].astype(object).fillna("<missing>").tolist(), name
    assert np.concatenate([p.source_row for p in parts]).tolist() == whole.source_row.tolist()
    ragged = [r for p in parts for r in getattr(p, "ragged", [])]
    assert ragged == getattr(whole, "ragged", [])
    return len(parts)


@pytest.mark.parametrize("ragged", [True, False])
@pytest.mark.parametrize("line_breaks_in_quotes", [True, False])
@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("latin1", [False, True])
def test_a_file_read_in_chunks_reads_as_it_does_whole(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ragged: bool,
    line_breaks_in_quotes: bool,
    gzipped: bool,
    latin1: bool,
) -> None:
    """The audit reads large files in chunks cut at line breaks. Wherever the cuts fall,
    the rows, their text and their line numbers are those of reading the file whole:
    across blank lines, ragged rows, quoted fields with line breaks (never cut inside),
    CRLF line ends, a byte-order mark and damaged UTF-8 (or a Latin-1 file), plain or
    gzip-compressed. (With a ragged row the whole file goes the standard-library way;
    without, pyarrow's.)"""
    rows = []
    for i in range(60):
        comment = {
            7: '"two\nlines"' if line_breaks_in_quotes else '"one line"',
            19: '"a ""quoted"" word, and a comma"',
            31: '"three\r\nmore\nlines"' if line_breaks_in_quotes else "",
            44: "caf\xe9",
        }.get(i, "")
        day = f"2024-03-{1 + i % 28:02d} 08:00"
        rows.append(f"P{i % 7},{day},Magnesium,{1.5 + i / 100},mg/dL,1.6-2.6,{comment}")
    rows.insert(12, "")  # blank lines
    rows.insert(40, "")
    if ragged:
        rows.insert(25, "P9,2024-03-01 08:00,Magnesium,2")
    text = HEADER + "\r\n".join(rows) + "\r\n"
    if latin1:  # a Latin-1 export ("caf\xe9" is its own)
        body = text.encode("latin-1")
    else:  # UTF-8 with a byte-order mark, and one Latin-1 byte in it: damaged UTF-8
        body = ("\ufeff" + text).encode("utf-8").replace("caf\xe9".encode(), b"caf\xe9")
    path = tmp_path / ("export.csv.gz" if gzipped else "export.csv")
    path.write_bytes(gzip.compress(body) if gzipped else body)
    counts = [_chunked_equals_whole(path, size, monkeypatch) for size in (64, 97, 200, 333, 1000)]
    assert max(counts) > 10  # the cuts really did fall all over the file


def test_rows_after_a_quoted_line_break_keep_their_own_line_numbers(tmp_path: Path) -> None:
    """A comment with line breaks inside quotes spans several lines of the file; the rows
    after it are reported at the lines where they really are (the file's line numbers
    are what a user opens the file at)."""
    body = (
        'P1,2024-03-01 08:00,Magnesium,1.5,mg/dL,1.6-2.6,"two\r\nlines"\r\n'
        "P1,2024-03-02 08:00,Magnesium,1.5,furlongs,1.6-2.6,\r\n"
        "P1,2024-03-03 08:00,Magnesium,1.7,mg/dL,1.6-2.6,\r\n"
    )
    res = read(write(tmp_path, HEADER.replace("\n", "\r\n") + body))
    assert res.rejected["source_row"].tolist() == [4]  # header 1, quoted record 2-3
    assert res.results["source_row"].tolist() == [2, 5]
    # the line break inside the value reads as the slow path writes it
    assert res.results["comment"].tolist()[0] == "two\nlines"


def test_a_parquet_export_read_in_batches_reads_as_it_does_whole(tmp_path: Path) -> None:
    """The audit reads Parquet exports in batches of rows; results, rejected rows and row
    numbers are those of reading the file whole."""
    from labinterp.reading import iter_batches

    n = 40
    frame = pd.DataFrame(
        {
            "patient_id": [f"P{i % 6}" for i in range(n)],
            "collected_at": pd.date_range("2024-03-01 08:00", periods=n, freq="7h"),
            "test": ["Magnesium", "Potassium"] * (n // 2),
            "result": [1.2 + i / 50 if i % 9 else float("nan") for i in range(n)],
            "unit": ["mg/dL", "mmol/L"] * (n // 2),
        }
    )
    frame.loc[5, "unit"] = "furlongs"  # a rejected row in the first batch
    frame.loc[33, "unit"] = "furlongs"  # and one in a later batch
    path = tmp_path / "export.parquet"
    frame.to_parquet(path)
    whole = read(path)  # no repeated results here, so the same rows as without dedupe
    batches = list(iter_batches(path, batch_rows=7))
    assert len(batches) == 6
    results = pd.concat([b.results for b in batches], ignore_index=True)
    rejected = pd.concat([b.rejected for b in batches], ignore_index=True)
    pd.testing.assert_frame_equal(results, whole.results)
    pd.testing.assert_frame_equal(rejected, whole.rejected)
    unit = rejected[rejected["reason"] == "unknown_unit"]
    assert unit["source_row"].tolist() == [6, 34]


def test_files_sharing_a_name_stay_apart_and_a_file_named_twice_is_read_once(
    tmp_path: Path,
) -> None:
    from labinterp.readers.sniff import display_names

    body = "P1,2024-03-01 08:30,Magnesium,1.2,mg/dL,1.6-2.6,\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write(tmp_path / "a", HEADER + body)
    b = write(tmp_path / "b", HEADER + body.replace("P1", "P2"))
    res = read([a, b])
    assert sorted(res.results["source_file"]) == ["a/export.csv", "b/export.csv"]
    assert [f.name for f in res.files] == ["a/export.csv", "b/export.csv"]
    assert display_names([a, tmp_path / "c.csv"]) == ["export.csv", "c.csv"]
    deeper = [tmp_path / "x" / "a" / "e.csv", tmp_path / "y" / "a" / "e.csv"]
    assert display_names(deeper) == ["x/a/e.csv", "y/a/e.csv"]

    twice = read([a, a, tmp_path / "a" / ".." / "a" / "export.csv"])
    assert twice.rows_in == 1 and twice.rows_rejected == 0
    assert len(twice.files) == 1


@pytest.mark.parametrize(
    "when",
    [
        # ("03/01/24": a two-digit year is rejected, not a question of order; see
        # test_messy_values.test_a_lone_two_digit_year_is_rejected_not_a_question_of_order)
        *("03/01/2024 8:30 AM", "03/01/2024 08:30:15", "03/01/2024"),
        "03-01-2024 08:30",  # dashes: the suggested format keeps them
    ],
)
def test_the_date_format_a_message_suggests_reads_the_file(tmp_path: Path, when: str) -> None:
    body = f"P1,{when},Magnesium,1.0,mg/dL,1.6-2.6,\n"
    path = write(tmp_path, HEADER + body)
    with pytest.raises(DateFormatError) as err:
        read(path)
    suggested = err.value.fix.split("'")[1]  # the US format, first in the message
    res = read(path, date_format=suggested)
    assert res.rows_used == 1, (when, suggested)


def test_side_table_demographics_match_ids_cleaned_as_results_ids_are(tmp_path: Path) -> None:
    """A Synthea-shaped export whose patient ids were re-saved ("93705.0") or carry an
    invisible character still finds its patients.csv row (sex and birth date)."""
    header = "DATE,PATIENT,ENCOUNTER,CODE,DESCRIPTION,VALUE,UNITS,TYPE\n"
    body = (
        "2024-03-01T08:30:00Z,93705.0,e1,19123-9,Magnesium,1.2,mg/dL,numeric\n"
        "2024-03-01T08:30:00Z,\u200b93706,e2,19123-9,Magnesium,1.2,mg/dL,numeric\n"
    )
    (tmp_path / "observations.csv").write_text(header + body, encoding="utf-8")
    (tmp_path / "patients.csv").write_text(
        "Id,BIRTHDATE,GENDER\n93705,1950-01-01,F\n93706,1960-01-01,M\n", encoding="utf-8"
    )
    res = read(tmp_path / "observations.csv").results.sort_values("patient_id")
    assert list(res["patient_id"]) == ["93705", "93706"]
    assert list(res["sex"]) == ["female", "male"]


def test_side_tables_are_found_gzipped_too(tmp_path: Path) -> None:
    """MIMIC is published as .csv.gz: its item dictionary beside LABEVENTS is read so."""
    import gzip

    (tmp_path / "LABEVENTS.csv").write_text(
        "ROW_ID,SUBJECT_ID,HADM_ID,ITEMID,CHARTTIME,VALUE,VALUENUM,VALUEUOM,FLAG\n"
        "1,7,100,99001,2150-01-03 06:00:00,1.2,1.2,mg/dL,abnormal\n",
        encoding="utf-8",
    )
    with gzip.open(tmp_path / "D_LABITEMS.csv.gz", "wt", encoding="utf-8") as fh:
        fh.write("ROW_ID,ITEMID,LABEL,FLUID,CATEGORY,LOINC_CODE\n1,99001,Magnesium,Blood,,\n")
    res = read(tmp_path / "LABEVENTS.csv")
    assert res.results["analyte"].tolist() == ["magnesium"]


def test_separate_date_and_time_columns_are_joined(tmp_path: Path) -> None:
    header = "patient_id,collection_date,collection_time,test,result,unit,reference_range\n"
    body = (
        "P1,2024-03-01,08:30,Magnesium,1.0,mg/dL,1.6-2.6\n"
        "P1,2024-03-01,14:30,Magnesium,1.0,mg/dL,1.6-2.6\n"  # same value, later draw
        "P1,2024-03-02,,Magnesium,1.1,mg/dL,1.6-2.6\n"  # no time: the date alone
        "P1,2024-03-03,2024-03-03 09:00,Magnesium,1.2,mg/dL,1.6-2.6\n"  # a whole time
        "P1,,10:00,Magnesium,1.3,mg/dL,1.6-2.6\n"  # a time without a date
    )
    res = read(write(tmp_path, header + body))
    assert list(res.results["collected_at"].astype(str)) == [
        "2024-03-01 08:30:00",
        "2024-03-01 14:30:00",
        "2024-03-02 00:00:00",
        "2024-03-03 09:00:00",
    ]
    assert list(res.rejected["reason"]) == ["missing_date"]
    # the time column named first, the date after it: the same pair
    swapped = (
        "patient_id,time,date,test,result,unit,reference_range\n"
        "P1,08:30,2024-03-01,Magnesium,1.0,mg/dL,1.6-2.6\n"
    )
    assert (
        str(read(write(tmp_path, swapped, "b.csv")).results["collected_at"].iloc[0])
        == "2024-03-01 08:30:00"
    )


def test_within_one_file_the_repeat_with_the_printed_range_is_kept(tmp_path: Path) -> None:
    """As across files: one file printing the same result twice, the second time with its
    range, keeps the second (and the audit, deduplicating per patient, keeps the same)."""
    import labinterp

    path = write(
        tmp_path,
        HEADER
        + "P1,2024-03-01 08:00,Magnesium,1.65,mg/dL,,\n"
        + "P1,2024-03-01 08:00,Magnesium,1.65,mg/dL,1.6-2.6,\n",
    )
    res = read(path)
    assert list(res.results["source_row"]) == [3]
    assert list(res.results["range_origin"]) == ["row"]
    assert list(res.rejected["source_row"]) == [2]
    labinterp.audit(path, tmp_path / "out")
    assert list(pd.read_csv(tmp_path / "out" / "rejected_rows.csv")["source_row"]) == [2]


def test_plain_ml_per_minute_is_an_egfr_unit_only_for_a_test_defined_per_body_surface(
    tmp_path: Path,
) -> None:
    """Synthea prints eGFR as "mL/min" under a LOINC code defined per 1.73 m2: read as
    mL/min/1.73 m2. Under a bare "eGFR" name the same unit may be an unindexed clearance:
    rejected, saying the unit does not fit the test."""
    body = (
        "patient_id,collected_at,test,loinc,result,unit\n"
        "P1,2024-03-01,Glomerular filtration rate/1.73 sq M.predicted,33914-3,62,mL/min\n"
        "P1,2024-03-02,eGFR CKD-EPI,98979-8,61,ml/min\n"
        "P1,2024-03-03,eGFR,,60,mL/min\n"
        "P1,2024-03-04,eGFR,,59,mL/min/1.73m2\n"
    )
    res = read(write(tmp_path, body))
    assert res.results["value"].tolist() == [62.0, 61.0, 59.0]
    assert res.results["unit_reported"].tolist() == ["mL/min", "ml/min", "mL/min/1.73m2"]
    assert res.rejected["reason"].tolist() == ["unit_not_valid_for_analyte"]
    assert "mL/min" in res.rejected["detail"].iloc[0]


TITLED = (
    "Lab Results Report - Clinic A{pad}\n"
    "Exported 2024-03-05{pad}\n"
    "{pad}\n"
    "Patient ID,Collected,Test,Result,Units,Reference Range\n"
    "P1,2024-03-01 08:00,Magnesium,1.2,mg/dL,1.6-2.6\n"
    "P1,2024-03-01 08:00,Calcium,7.6,mg/dL,8.5-10.5\n"
    "\n"
    "Total rows: 2{pad}\n"
)


@pytest.mark.parametrize("pad", ["", ",,,,,"], ids=["title_lines", "padded_by_a_spreadsheet"])
def test_a_title_block_above_the_header_is_skipped(tmp_path: Path, pad: str) -> None:
    """Report-style exports print a title and an export date above the table, as lines of
    their own or padded with empty cells to the table's width (a spreadsheet saved as CSV).
    The header is the first row as wide as the table; the rows keep their line numbers;
    a footer line is an input row like any other, rejected with its reason."""
    res = read(write(tmp_path, TITLED.format(pad=pad)))
    assert res.results["analyte"].tolist() == ["magnesium", "calcium"]
    assert res.results["source_row"].tolist() == [5, 6]
    assert res.rejected["source_row"].tolist() == [8]
    assert res.files[0].header_line == 4
    assert res.rows_in == 3


def test_check_says_where_the_header_is_below_a_title(tmp_path: Path, capsys) -> None:
    from labinterp.cli import main

    assert main(["check", str(write(tmp_path, TITLED.format(pad="")))]) == 0
    assert "header on line 4: the lines above it are a title" in capsys.readouterr().out


def test_a_title_block_above_a_large_file_is_skipped_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same title block above a file read in batches (larger than one block)."""
    from labinterp.readers import sniff, table

    body = "".join(f"P{i},2024-03-01 08:00,Magnesium,1.{i % 9},mg/dL,1.6-2.6\n" for i in range(200))
    path = write(tmp_path, TITLED.format(pad=",,,,,").split("P1,")[0] + body)
    _chunked_equals_whole(path, 1024, monkeypatch)
    parts = list(table.iter_delimited(path, sniff.sniff(path), batch_rows=1))
    assert len(parts) > 1 and {p.header_line for p in parts} == {4}
    assert parts[0].source_row[0] == 5


def test_a_title_block_above_the_header_of_a_workbook_is_skipped(tmp_path: Path) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Lab Results Report - Clinic A"])
    ws.append(["Exported", "2024-03-05"])
    ws.append([])
    ws.append(["Patient ID", "Collected", "Test", "Result", "Units", "Reference Range"])
    ws.append(["P1", "2024-03-01 08:00", "Magnesium", 1.2, "mg/dL", "1.6-2.6"])
    path = tmp_path / "report.xlsx"
    wb.save(path)
    res = read(path)
    assert res.results["value_reported"].tolist() == [1.2]
    assert res.results["source_row"].tolist() == [5]
    assert res.files[0].header_line == 4


def test_a_header_with_a_blank_line_above_is_not_a_title(tmp_path: Path) -> None:
    res = read(write(tmp_path, "\n" + HEADER + "P1,2024-03-01,Magnesium,1.9,mg/dL,,\n"))
    assert res.rows_used == 1 and res.files[0].header_line == 1


def test_a_calcium_with_an_ionized_calcium_range_is_read_as_ionized(tmp_path: Path) -> None:
    """Exports name an ionized calcium "Calcium" at times; its printed range tells it from a
    total calcium (about half of it). A LOINC code, when given, decides instead."""
    body = (
        "patient_id,collected_at,test,loinc,result,unit,reference_range\n"
        "P1,2024-03-01 08:00,Calcium,,1.12,mmol/L,1.15-1.32\n"
        "P1,2024-03-02 08:00,Calcium,,4.5,mg/dL,4.6-5.3\n"
        "P1,2024-03-03 08:00,Calcium,,2.30,mmol/L,2.15-2.55\n"
        "P1,2024-03-04 08:00,Calcium,,9.1,mg/dL,8.5-10.5\n"
        "P1,2024-03-05 08:00,Calcium,,1.12,mmol/L,\n"
        "P1,2024-03-06 08:00,Calcium,17861-6,1.12,mmol/L,1.15-1.32\n"
    )
    res = read(write(tmp_path, body))
    assert res.results["analyte"].tolist() == [
        "calcium_ionized",
        "calcium_ionized",
        "calcium",
        "calcium",
        "calcium",  # no range to tell: as named
        "calcium",  # the LOINC code of a total calcium
    ]
    flagged = res.results["quality"].fillna("").str.contains("ionized_calcium_by_range")
    assert flagged.tolist() == [True, True, False, False, False, False]
    assert res.results["value"].round(3).tolist()[:2] == [1.12, 1.123]


def test_a_narrow_header_above_ragged_rows_stays_the_header(tmp_path: Path) -> None:
    """A header of four names above rows of ten fields is no title block: the rows are
    malformed, and say so, rather than one of them becoming the header."""
    body = "patient_id,collected_at,test,result\n"
    body += "P1,2024-03-01,Magnesium,1.9,a,b,c,d,e,f\n" * 3
    res = read(write(tmp_path, body))
    assert res.files[0].header_line == 1
    assert set(res.rejected["reason"]) == {"malformed_row"}


def test_a_malformed_row_says_what_is_wrong_with_it(tmp_path: Path) -> None:
    body = (
        "patient_id,collected_at,test,result,unit\n"
        "P1,2024-03-01 08:00,Magnesium,1,5,mg/dL\n"  # a decimal comma, unquoted
        "P1,2024-03-01 08:00,Potassium,3.1\n"
        "P1,2024-03-01 08:00,Calcium,9.1,mg/dL\n"
        "\nEnd of report\n"
    )
    res = read(write(tmp_path, body))
    assert res.rows_used == 1
    assert res.rejected["detail"].tolist() == [
        "the row has 6 fields and the header 5: a value holding the separator was split; "
        "put quotes around such values in the export",
        "the row has 4 fields and the header 5: fields are missing; correct the row in the export",
        "a line of text without the file's separators (a note, or a footer such as "
        "'End of report'), not a row of the table; nothing to fix",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Laborbefunde - Praxis A\nExportiert am 05.03.2024\n\n"
        "Patient ID;Collected;Test;Result;Units;Reference Range\n"
        "P1;2024-03-01 08:00;Magnesium;0,52;mmol/L;0,70-1,00\n"
        "P1;2024-03-01 08:00;Calcium;1,95;mmol/L;2,15-2,55\n",
        'Lab Results Report\n"Exported: March 5, 2024"\n'
        "Patient ID\tCollected\tTest\tResult\tUnits\tReference Range\n"
        "P1\t2024-03-01 08:00\tMagnesium\t0.52\tmmol/L\t0.70-1.00\n"
        "P1\t2024-03-01 08:00\tCalcium\t1.95\tmmol/L\t2.15-2.55\n",
    ],
    ids=["semicolons_and_decimal_commas", "tabs_and_a_comma_in_the_title"],
)
def test_a_title_block_does_not_mislead_the_delimiter(tmp_path: Path, text: str) -> None:
    """The title's words hold no delimiter, or the wrong one: the table's rows decide."""
    res = read(write(tmp_path, text))
    assert res.results["value"].tolist() == [0.52, 1.95]
    assert res.files[0].header_line == len(text.split("Patient ID")[0].splitlines()) + 1


UNITS_ROW = (
    "Patient,Date,Magnesium,Calcium,Potassium\n"
    ",,mg/dL,mg/dL,mmol/L\n"
    "P1,2024-03-01 08:00,1.2,7.6,3.1\n"
    "P2,2024-03-01 09:00,2.0,9.4,4.2\n"
)


def test_a_row_of_units_under_the_header_belongs_to_it(tmp_path: Path) -> None:
    """A wide export printing each test's unit on a line below the header reads as one with
    the units in the headers; the units line is no result row."""
    res = read(write(tmp_path, UNITS_ROW))
    r = res.results.sort_values(["source_row", "analyte"])
    assert r["analyte"].tolist()[:3] == ["calcium", "magnesium", "potassium"]
    assert r["unit_reported"].tolist()[:3] == ["mg/dL", "mg/dL", "mmol/L"]
    assert set(r["source_row"]) == {3, 4} and res.rows_in == 6 and res.rows_used == 6


def test_a_row_of_units_under_the_header_of_a_workbook_belongs_to_it(tmp_path: Path) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.Workbook()
    for line in UNITS_ROW.splitlines():
        wb.active.append([c or None for c in line.split(",")])
    path = tmp_path / "wide.xlsx"
    wb.save(path)
    res = read(path)
    assert res.rows_used == 6 and set(res.results["source_row"]) == {3, 4}


def test_a_row_of_units_under_a_large_file_read_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = "".join(f"P{i},2024-03-01 08:00,1.{i % 9},8.{i % 9},4.{i % 9}\n" for i in range(300))
    path = write(tmp_path, UNITS_ROW.split("P1,")[0] + body)
    assert _chunked_equals_whole(path, 1024, monkeypatch) > 1
    res = read(path)
    assert res.rows_used == 900 and "Magnesium (mg/dL)" in res.files[0].mapping_toml


def test_an_ehr_style_header_with_a_result_date_is_read_by_its_collection_time(
    tmp_path: Path,
) -> None:
    """ "Patient MRN" and "Collection Date/Time" are recognised, and the collection time is
    taken over a "Result Date" column, wherever the two stand."""
    body = (
        "Patient MRN,Result Date,Component Name,Result Value,Units,Collection Date/Time\n"
        "000123,2024-03-02 12:00,MAGNESIUM,1.2,mg/dL,2024-03-01 08:00\n"
    )
    res = read(write(tmp_path, body))
    assert res.results["patient_id"].tolist() == ["000123"]
    assert res.results["collected_at"].tolist() == [pd.Timestamp("2024-03-01 08:00")]


@pytest.mark.parametrize(
    ("printed", "expected"),
    [
        ("01-Mar-2024 08:00", "2024-03-01 08:00"),
        ("01-MAR-2024 08:00:30", "2024-03-01 08:00:30"),
        ("1 March 2024 09:00", "2024-03-01 09:00"),
        ("Mar 1, 2024 12:30 AM", "2024-03-01 00:30"),
        ("Sept 3 2024 1:05 PM", "2024-09-03 13:05"),
        ("2024/03/01 10:00", "2024-03-01 10:00"),
        ("2024/3/1", "2024-03-01"),
        ("2024.03.01", "2024-03-01"),
        ("2024-03-01 8:15 PM", "2024-03-01 20:15"),  # an ISO date with a 12-hour clock
        ("20240301081500", "2024-03-01 08:15"),  # compact, as HL7 prints stamps
        ("202403010815", "2024-03-01 08:15"),
        ("20240301", "2024-03-01"),
        # what cannot be read says why
        ("20241301", "unparseable_date"),  # no month 13
        ("12345678", "unparseable_date"),
        ("01-MAR-24 08:00", "ambiguous_two_digit_year"),
        ("01-Foo-2024 08:00", "unparseable_date"),
        ("31-Feb-2024", "unparseable_date"),
    ],
)
def test_dates_whose_order_is_never_in_doubt_need_no_format(
    tmp_path: Path, printed: str, expected: str
) -> None:
    """A month by its name, or the year first: read without --date-format."""
    res = read(write(tmp_path, HEADER + f'P1,"{printed}",Magnesium,1.9,mg/dL,,\n'))
    if expected[0].isdigit():
        assert res.results["collected_at"].tolist() == [pd.Timestamp(expected)]
    else:
        assert res.rejected["reason"].tolist() == [expected]


def test_dashed_day_month_dates_are_read_like_slashed_ones(tmp_path: Path) -> None:
    # "13-03-2024" settles the order for the whole file, as "13/03/2024" would
    body = (
        "P1,01-03-2024 08:00,Magnesium,1.9,mg/dL,,\n"
        "P1,13-03-2024 08:00,Magnesium,1.9,mg/dL,,\n"
        "P1,2024-03-20 08:00,Magnesium,1.9,mg/dL,,\n"
    )
    res = read(write(tmp_path, HEADER + body))
    assert sorted(res.results["collected_at"].dt.strftime("%Y-%m-%d")) == [
        "2024-03-01",
        "2024-03-13",
        "2024-03-20",
    ]


def test_a_date_format_that_reads_no_date_of_a_file_is_an_error(tmp_path: Path) -> None:
    """Every row rejected and a clean exit would hide a mistake in the format (the clock
    time left out); a format that reads the dates reads the file."""
    text = (
        "patient_id,collected_at,test,result,unit\n"
        "P1,01/02/2024 08:30,Magnesium,0.55,mmol/L\n"
        "P1,03/02/2024 08:30,Potassium,3.1,mmol/L\n"
    )
    path = write(tmp_path, text)
    with pytest.raises(InputFileError, match="reads none of the collection times") as info:
        read(path, date_format="%m/%d/%Y")
    assert info.value.row == 2
    assert read(path, date_format="%m/%d/%Y %H:%M").rows_used == 2


def test_a_date_the_given_format_does_not_read_is_told_so_not_to_pass_the_format(
    tmp_path: Path,
) -> None:
    """With --date-format given, "pass --date-format" is no fix: a time that does not match
    it is told so, and a two-digit year is named (the same reason as without a format)."""
    text = (
        "patient_id,collected_at,test,result,unit\n"
        "P1,3/5/2024 12:00,Magnesium,0.55,mmol/L\n"
        "P1,3/6/24 12:00,Magnesium,0.60,mmol/L\n"
        "P1,6 March 2024,Magnesium,0.65,mmol/L\n"
    )
    res = read(write(tmp_path, text), date_format="%m/%d/%Y %H:%M")
    assert res.rows_used == 1
    rows = res.rejected.set_index("source_row")
    assert rows.loc[3, "reason"] == "ambiguous_two_digit_year"
    assert rows.loc[4, "reason"] == "unparseable_date"
    for detail in rows["detail"]:
        assert "does not match the date format given ('%m/%d/%Y %H:%M'" in detail
        assert "pass --date-format" not in detail
    assert "two-digit year" in rows.loc[3, "detail"] and "4-digit years" in rows.loc[3, "detail"]
    assert "two-digit year" not in rows.loc[4, "detail"]


def test_a_date_format_that_reads_only_two_digit_years_wrong_is_an_error(tmp_path: Path) -> None:
    text = "patient_id,collected_at,test,result,unit\nP1,3/6/24 12:00,Magnesium,0.60,mmol/L\n"
    with pytest.raises(InputFileError, match="reads none of the collection times"):
        read(write(tmp_path, text), date_format="%m/%d/%Y %H:%M")


def test_a_file_with_a_header_and_no_rows_is_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "patient_id,collected_at,test,result,unit\n")
    with caplog.at_level("WARNING"):
        res = read(path)
    assert res.rows_in == 0 and "no result rows" in caplog.text
    assert any("no result rows" in w for w in res.files[0].warnings)


def test_batches_reject_a_number_either_separator_reads_differently_in_a_file_of_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file whose first batch shows decimal points and decimal commas is such a file in
    every batch: "1,250" in a later batch is rejected as ambiguous, as reading it whole
    does."""
    from labinterp.readers import table
    from labinterp.reading import iter_batches

    lines = ["patient_id,collected_at,test,result,unit"]
    lines += ['Z1,2024-04-03 08:00,Magnesium,"0,55",mmol/L']
    lines += [f"A{i},2024-04-03 08:00,PTH,{40 + i % 50}.5,pg/mL" for i in range(60)]
    lines += ['Z1,2024-04-25 08:00,PTH,"1,250",pg/mL']
    path = write(tmp_path, "\n".join(lines) + "\n")
    monkeypatch.setattr(table, "STREAM_BLOCK_BYTES", 512)  # many small batches
    batches = list(iter_batches(path, batch_rows=10))
    assert len(batches) > 2
    rejected = pd.concat([b.rejected for b in batches], ignore_index=True)
    assert rejected["value_raw"].tolist() == ["1,250"]
    assert "ambiguous" in rejected["detail"].iloc[0]
    whole = read(path).rejected
    assert (
        whole[["source_row", "detail"]].values.tolist()
        == rejected[["source_row", "detail"]].values.tolist()
    )
