"""Messy values as tester-found exports print them: a number in the wrong unit, negated
sample-quality comments, a unit inside the reference range, birth dates not in ISO form,
critical markers around the number, and patient ids a spreadsheet turned into numbers."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

from labinterp.normalize import quality_flags
from labinterp.reading import ReadResult, read

HEADER = "patient_id,birth_date,collected_at,test,result,unit,reference_range,comment\n"


def read_rows(tmp_path: Path, rows: str, name: str = "lab.csv") -> ReadResult:
    path = tmp_path / name
    path.write_text(HEADER + rows, encoding="utf-8")
    res = read(path)
    assert res.rows_in == res.rows_used + res.rows_rejected  # every row accounted for
    return res


# ---------------------------------------------------------------- 1. another unit fits far better


@pytest.mark.parametrize(
    ("test", "value", "unit", "fits"),
    [
        ("Potassium", "4.1", "mg/dL", "mmol/L"),  # 1.05 mmol/L: a false CTCAE grade 4
        ("Ionized calcium", "1.2", "mg/dL", "mmol/L"),
        ("Calcium", "2.3", "mg/dL", "mmol/L"),
        # the number is an ordinary grade 1 result, not within the adult range, in mmol/L:
        # 2.1 mg/dL is 0.52 mmol/L (grade 4, hardly survivable), 2.1 mmol/L just below 2.12
        ("Calcium", "2.1", "mg/dL", "mmol/L"),
        ("Ionized calcium", "1.05", "mg/dL", "mmol/L"),  # 0.26 mmol/L; 1.05 below 1.15
        ("Calcium", "2.8", "mg/dL", "mmol/L"),  # 0.70 mmol/L; 2.8 mmol/L, grade 1 high
        ("Potassium", "5.3", "mg/dL", "mmol/L"),  # 1.36 mmol/L; 5.3 mmol/L, grade 1 high
        # 0.82 mmol/L; 3.2 mmol/L is just below the range, a band CTCAE grades 2 for K
        # (grades 1 and 2 differ only by symptoms): as ordinary as a grade 1 elsewhere
        ("Potassium", "3.2", "mg/dL", "mmol/L"),
        ("Potassium", "3.4", "mg/dL", "mmol/L"),
    ],
)
def test_a_life_threatening_value_normal_in_another_unit_is_a_unit_error(
    tmp_path: Path, test: str, value: str, unit: str, fits: str
) -> None:
    res = read_rows(tmp_path, f"P1,1960-01-01,2024-01-01 08:00,{test},{value},{unit},,\n")
    assert len(res.results) == 0
    rejected = res.rejected.iloc[0]
    assert rejected["reason"] == "implausible_value"
    assert f"fits {fits}" in rejected["detail"] and value not in rejected["detail"]


@pytest.mark.parametrize(
    ("test", "value", "unit"),
    [
        ("Magnesium", "0.8", "mg/dL"),
        ("Magnesium", "0.6", "mg/dL"),
        ("Magnesium", "0.25", "mmol/L"),
        ("Potassium", "2.0", "mmol/L"),
        ("Potassium", "7.5", "mmol/L"),
        ("Calcium", "5.5", "mg/dL"),
        ("Calcium", "1.4", "mmol/L"),
        ("Ionized calcium", "0.7", "mmol/L"),
        # grade 4 in its unit, and read in the other one no ordinary result either
        ("Calcium", "3.5", "mg/dL"),  # 3.5 mmol/L would be grade 4 hypercalcemia
        ("Magnesium", "0.2", "mmol/L"),  # 0.2 mg/dL: grade 4 too
        ("Magnesium", "0.5", "mg/dL"),  # 0.5 mmol/L is grade 1, but 0.5 mg/dL is barely
        ("Magnesium", "0.69", "mg/dL"),  # beyond its grade 4 cut-off, 0.7 mg/dL
        ("Magnesium", "0.71", "mg/dL"),  # grade 3 in mg/dL (0.292 mmol/L)
        ("Albumin", "11", "g/L"),  # nephrotic; 110 g/L if read as g/dL
        ("Albumin", "20", "g/L"),
        ("Albumin", "1.1", "g/dL"),
    ],
)
def test_severe_but_possible_values_are_read(
    tmp_path: Path, test: str, value: str, unit: str
) -> None:
    res = read_rows(tmp_path, f"P1,1960-01-01,2024-01-01 08:00,{test},{value},{unit},,\n")
    assert list(res.results["value_reported"]) == [float(value)]


@pytest.mark.parametrize(
    ("value", "unit", "fits"),
    [
        ("5.5", "g/L", "g/dL"),  # 55 g/L in g/dL: a normal albumin
        ("6.2", "g/L", "g/dL"),
    ],
)
def test_an_albumin_far_below_the_range_and_ordinary_in_another_unit_is_a_unit_error(
    tmp_path: Path, value: str, unit: str, fits: str
) -> None:
    """A g/dL albumin labelled g/L, beside a low total Ca, makes the corrected Ca look
    normal (pseudo-hypocalcemia): the row is rejected, naming the unit its number fits."""
    res = read_rows(
        tmp_path,
        f"P1,1960-01-01,2024-01-01 08:00,Albumin,{value},{unit},35-50,\n"
        "P1,1960-01-01,2024-01-01 08:00,Calcium,1.9,mmol/L,2.12-2.62,\n",
    )
    assert list(res.results["analyte"]) == ["calcium"]
    rejected = res.rejected.iloc[0]
    assert rejected["reason"] == "implausible_value"
    assert f"fits {fits}" in rejected["detail"] and value not in rejected["detail"]


# ---------------------------------------------------------------- 2. negated comments


@pytest.mark.parametrize(
    "comment",
    [
        "Hemolysis: none",
        "No hemolysis",
        "Hemolysis index 0",
        "Hemolysis absent",
        "Hemolysis: negative",
        "non-hemolyzed",
        "not hemolysed",
        "no evidence of hemolysis",
    ],
)
def test_a_comment_denying_hemolysis_does_not_mark_it(comment: str) -> None:
    assert quality_flags(comment) == "not_hemolyzed"


@pytest.mark.parametrize(
    "comment",
    ["No EDTA contamination detected", "Not contaminated", "EDTA contamination excluded"],
)
def test_a_comment_denying_contamination_does_not_mark_it(comment: str) -> None:
    assert quality_flags(comment) == ""


@pytest.mark.parametrize(
    "comment",
    [
        "Specimen hemolyzed; recollect non-hemolyzed specimen",
        "Gross hemolysis. No hemolysis-free sample available",
        "Hemolysis present - not suitable for K",
        "Test not performed: hemolysis",
        "H.I. 3+",
        "HIL: H=2+",
    ],
)
def test_an_affirmed_hemolysis_is_not_cancelled_by_a_denied_one(comment: str) -> None:
    assert quality_flags(comment) == "hemolyzed"


def test_a_hemolysis_index_number_without_a_limit_is_not_judged() -> None:
    assert quality_flags("HIL index: H=250") == ""
    assert quality_flags("possible EDTA contamination") == "contamination_comment"


def test_denied_comments_reach_the_results(tmp_path: Path) -> None:
    res = read_rows(
        tmp_path,
        "P1,1960-01-01,2024-01-01 08:00,Potassium,7.0,mmol/L,3.5-5.1,Hemolysis: none\n"
        "P2,1960-01-01,2024-01-01 08:00,Potassium,6.5,mmol/L,3.5-5.1,"
        "No EDTA contamination detected\n",
    )
    assert list(res.results["quality"]) == ["not_hemolyzed", ""]


# ---------------------------------------------------------------- 3. a unit in the range


@pytest.mark.parametrize(
    ("row", "low", "high"),
    [
        ("Magnesium,0.90,mmol/L,1.3-2.1 mEq/L", 0.65, 1.05),
        ("25-OH Vitamin D,45,nmol/L,30-100 ng/mL", 74.8783, 249.594),
        ("CRP,0.8,mg/dL,<10 mg/L", math.nan, 10.0),
        ("Magnesium,1.5,mg/dL,0.70-1.05 mmol/L", 0.7, 1.05),
        ("Albumin,3.1,g/dL,35-50 g/L", 35.0, 50.0),
        ("Potassium,3.4,mmol/L,3.5 - 5.1 mmol/L (adult)", 3.5, 5.1),
    ],
)
def test_a_range_with_a_unit_is_converted_to_the_results_unit(
    tmp_path: Path, row: str, low: float, high: float
) -> None:
    res = read_rows(tmp_path, f"P1,1960-01-01,2024-01-01 08:00,{row},\n")
    r = res.results.iloc[0]
    assert r["range_origin"] == "row"
    for got, want in ((r["range_low"], low), (r["range_high"], high)):
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-3)


@pytest.mark.parametrize("range_text", ["1.3-2.1 mmol", "1.3-2.1 U/L"])
def test_a_range_in_an_unknown_or_unconvertible_unit_is_unreadable(
    tmp_path: Path, range_text: str
) -> None:
    res = read_rows(
        tmp_path, f"P1,1960-01-01,2024-01-01 08:00,Magnesium,0.9,mmol/L,{range_text},\n"
    )
    r = res.results.iloc[0]
    assert r["range_origin"] == "bundled" and "unreadable_range" in r["quality"]


# ---------------------------------------------------------------- 4. birth dates


@pytest.mark.parametrize(
    ("birth", "collected"),
    [
        ("12/25/2013", "03/14/2024 08:00"),
        ("25/12/2013", "14/03/2024 08:00"),
        ("25.12.2013", "14.03.2024 08:00"),
        ("12/25/2013", "2024-03-14 08:00"),
    ],
)
def test_a_childs_birth_date_in_any_date_shape_gives_the_age(
    tmp_path: Path, birth: str, collected: str
) -> None:
    res = read_rows(tmp_path, f"P1,{birth},{collected},Phosphorus,5.9,mg/dL,,\n")
    r = res.results.iloc[0]
    assert r["age_years"] == 10 and r["range_origin"] == "unknown"


def test_age_is_in_whole_years_from_the_birthday(tmp_path: Path) -> None:
    res = read_rows(
        tmp_path,
        "P1,2006-01-01,2024-01-01 08:00,Magnesium,0.6,mmol/L,,\n"
        "P1,2006-01-01,2023-12-31 08:00,Magnesium,0.6,mmol/L,,\n",
    )
    assert list(res.results["age_years"]) == [18, 17]
    assert list(res.results["range_origin"]) == ["bundled", "unknown"]


def test_an_unreadable_birth_date_is_warned_and_flagged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        res = read_rows(
            tmp_path,
            "SECRET1,03/04/2013,2024-03-14 08:00,Magnesium,0.6,mmol/L,,\n"
            "SECRET2,2010-02-03,2024-03-14 08:00,Magnesium,0.6,mmol/L,,\n",
        )
    assert list(res.results["quality"]) == ["unreadable_birth_date", ""]
    assert math.isnan(res.results["age_years"].iloc[0]) and res.results["age_years"].iloc[1] == 14
    (message,) = [r.getMessage() for r in caplog.records if "birth date" in r.getMessage()]
    assert "lab.csv" in message and "row(s) 2 " in message and "YYYY-MM-DD" in message
    assert "SECRET" not in message and "03/04" not in message


# ---------------------------------------------------------------- 5. critical markers


@pytest.mark.parametrize(
    "value", ["2.4 (C)", "2.4 CRIT", "2.4 CRITICAL", "LL 2.4", "(C) 2.4", "* 2.4", "2.4 (LL)"]
)
def test_a_critical_marker_around_the_number_is_read_as_a_flag(tmp_path: Path, value: str) -> None:
    res = read_rows(tmp_path, f'P1,1960-01-01,2024-01-01 08:00,Potassium,"{value}",mmol/L,,\n')
    r = res.results.iloc[0]
    assert r["value_reported"] == 2.4 and not r["text_result"]
    assert r["flag"] in ("C", "CRIT", "CRITICAL", "LL", "*")


# ---------------------------------------------------------------- 7. Excel-damaged ids


def test_patient_ids_in_scientific_notation_are_rejected(tmp_path: Path) -> None:
    res = read_rows(
        tmp_path,
        "1.23457E+11,1960-01-01,2024-01-01 08:00,Magnesium,1.2,mg/dL,,\n"
        "123456789012,1960-01-01,2024-01-01 08:00,Magnesium,1.2,mg/dL,,\n",
    )
    assert list(res.results["patient_id"]) == ["123456789012"]
    rejected = res.rejected.iloc[0]
    assert rejected["reason"] == "damaged_patient_id"
    assert "scientific notation" in rejected["detail"] and "as text" in rejected["detail"]


def test_whole_years_against_calendar_arithmetic() -> None:
    """Birthdays before 1970 and on 29 February, against date arithmetic in Python."""
    import datetime as dt

    from labinterp.normalize import _whole_years

    births = [
        dt.date(1931, 12, 31),
        dt.date(1964, 2, 29),
        dt.date(1969, 1, 1),
        dt.date(2000, 6, 15),
    ]
    days = [dt.date(2024, 2, 28), dt.date(2024, 2, 29), dt.date(2023, 12, 31), dt.date(2024, 6, 14)]
    born = np.array(births, dtype="datetime64[D]")
    codes = np.repeat(np.arange(len(births)), len(days))
    at = np.tile(np.array(days, dtype="datetime64[ns]"), len(births))
    expected = [
        d.year - b.year - ((d.month, d.day) < (b.month, b.day)) for b in births for d in days
    ]
    assert _whole_years(born, codes, at).tolist() == expected


def test_a_forced_date_format_still_reads_iso_dates(tmp_path: Path) -> None:
    """A spreadsheet with real date cells (read as ISO) and a few dates typed as text: the
    format given for the text ones must not reject the real ones."""
    path = tmp_path / "lab.csv"
    path.write_text(
        HEADER + "P1,1960-01-01,2024-03-05 08:15,Magnesium,0.6,mmol/L,,\n"
        "P1,1960-01-01,03/06/2024 08:15,Magnesium,0.7,mmol/L,,\n",
        encoding="utf-8",
    )
    res = read(path, date_format="%m/%d/%Y %H:%M")
    assert res.rows_rejected == 0
    assert [str(t)[:16] for t in res.results["collected_at"]] == [
        "2024-03-05 08:15",
        "2024-03-06 08:15",
    ]


@pytest.mark.parametrize(
    ("text", "decimal"),
    [
        ("0,70 bis 1,05", ","),  # German
        ("0,70 à 1,05", ","),  # French
        ("0,70...1,05", ","),
        ("0.70 ... 1.05", "."),
        ("0.70…1.05", "."),
    ],
)
def test_range_words_and_dots_of_european_exports(text: str, decimal: str) -> None:
    from labinterp.normalize import parse_range

    assert parse_range(text, "", "", decimal)[:2] == (0.70, 1.05)


def test_a_clock_without_its_colon_is_read(tmp_path: Path) -> None:
    """Epic prints '03/22/2024 0815'."""
    res = read_rows(tmp_path, "P1,1960-01-01,03/22/2024 0815,Magnesium,0.6,mmol/L,,\n")
    assert res.rows_rejected == 0
    assert str(res.results["collected_at"].iloc[0])[:16] == "2024-03-22 08:15"


def test_a_lone_two_digit_year_is_rejected_not_a_question_of_order(tmp_path: Path) -> None:
    """'01/02/24' among ISO dates: rejected as ambiguous_two_digit_year; the file is not
    refused over a day/month order only that row would need."""
    res = read_rows(
        tmp_path,
        "P1,1960-01-01,2024-03-01 08:00,Magnesium,0.6,mmol/L,,\n"
        "P1,1960-01-01,01/02/24,Magnesium,0.7,mmol/L,,\n",
    )
    assert res.rows_used == 1
    assert list(res.rejected["reason"]) == ["ambiguous_two_digit_year"]


def test_result_only_in_comment_is_told_apart(tmp_path: Path) -> None:
    """A row with an empty result whose comment holds text (MIMIC-IV prints an eGFR
    estimate and some censored values only there) is rejected with a detail saying so,
    not as a row with nothing in it; a row with no comment keeps the plain detail."""
    path = tmp_path / "lab.csv"
    path.write_text(
        HEADER
        + "P1,1960-01-01,2024-03-01 08:00,eGFR,,mL/min/1.73m2,,"
        + "estimated GFR (eGFR) is likely between 39 and 47\n"
        + "P1,1960-01-01,2024-03-01 08:00,Potassium,,mmol/L,3.5-5.0,\n"
    )
    res = read(path)
    details = dict(zip(res.rejected["source_row"], res.rejected["detail"], strict=True))
    assert list(res.rejected["reason"]) == ["missing_value", "missing_value"]
    assert "comment" in details[2] and "result column" in details[2]
    assert details[3] == (
        "the row has neither a result nor a result text; fill in the result in the export"
    )


def test_ids_alike_but_for_leading_zeros_are_warned_not_merged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A spreadsheet that saved ids as numbers turns "00789" into "789": the two stay two
    patients (merging could join two people), and a warning names rows, not ids."""
    rows = (
        "00789,1960-01-01,2024-01-01 08:00,Magnesium,0.5,mmol/L,0.70-1.00,\n"
        "P2,1960-01-01,2024-01-01 08:00,Magnesium,0.8,mmol/L,0.70-1.00,\n"
        "789,1960-01-01,2024-01-03 08:00,Potassium,3.1,mmol/L,3.5-5.1,\n"
        "7890,1960-01-01,2024-01-03 08:00,Potassium,3.1,mmol/L,3.5-5.1,\n"
    )
    with caplog.at_level(logging.WARNING, logger="labinterp"):
        res = read_rows(tmp_path, rows)
    assert sorted(res.results["patient_id"]) == ["00789", "789", "7890", "P2"]
    (message,) = [r.getMessage() for r in caplog.records if "leading zeros" in r.getMessage()]
    assert "2 patient ids" in message and "rows 2 and 4" in message
    assert "789" not in message  # patient ids never go into the log


def test_ids_without_such_twins_draw_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = (
        "00789,1960-01-01,2024-01-01 08:00,Magnesium,0.5,mmol/L,0.70-1.00,\n"
        "7890,1960-01-01,2024-01-03 08:00,Potassium,3.1,mmol/L,3.5-5.1,\n"
        "A0789,1960-01-01,2024-01-03 08:00,Potassium,3.1,mmol/L,3.5-5.1,\n"
    )
    with caplog.at_level(logging.WARNING, logger="labinterp"):
        read_rows(tmp_path, rows)
    assert not [r for r in caplog.records if "leading zeros" in r.getMessage()]
