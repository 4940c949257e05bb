"""The normalizer on inputs found by fuzzing the reader: dates outside what datetime64[ns]
can hold, numbers printed with a unit or an abnormal-flag marker, absurd reference-range
bounds, and invisible characters in patient ids. Every row is used or rejected with a
reason; nothing is silently changed."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import pandas as pd
import pytest

from labinterp.interpret import interpret
from labinterp.reading import ReadResult, read

HEADER = "patient_id,collected_at,test,result,unit,reference_range\n"
MG = 10 / 24.305  # mg/dL -> mmol/L for magnesium (as in test_reading)


def read_rows(tmp_path: Path, body: str, header: str = HEADER, **kw) -> ReadResult:
    path = tmp_path / "export.csv"
    path.write_bytes((header + body).encode("utf-8"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow RuntimeWarning is a bug here
        res = read(path, **kw)
    assert res.rows_in == res.rows_used + res.rows_rejected
    return res


def used(tmp_path: Path, body: str, **kw) -> pd.Series:
    """The one result row of `body`, which must be used."""
    res = read_rows(tmp_path, body, **kw)
    assert res.rows_used == 1, res.rejected.to_dict("records")
    return res.results.iloc[0]


def rejected(tmp_path: Path, body: str, **kw) -> pd.Series:
    """The one rejected row of `body`, which must be rejected."""
    res = read_rows(tmp_path, body, **kw)
    assert res.rows_rejected == 1 and res.rows_used == 0, res.results.to_dict("records")
    return res.rejected.iloc[0]


# ---------------------------------------------------------------- 1. dates out of range


@pytest.mark.parametrize(
    "when",
    [
        "0001-03-01 08:30",
        "1440-01-01 08:30",  # wrapped round to 2024 by the old unchecked conversion
        "1600-01-01",
        "1677-09-21 00:12",  # just before the first datetime64[ns] second (00:12:43.145)
        "2262-04-11 23:47:17",  # just after the last one (23:47:16.854)
        "2262-04-12",
        "9999-12-31 23:59",
        "0001-03-01T08:30:00+01:00",  # the pandas ISO path (offsets)
        "1600-01-01 8:30",  # the pandas ISO path (one-digit hour)
    ],
)
def test_collection_times_outside_datetime64_ns_are_rejected(tmp_path: Path, when: str) -> None:
    row = rejected(tmp_path, f"P1,{when},Magnesium,1.0,mg/dL,1.6-2.6\n")
    assert row["reason"] == "unparseable_date"
    assert "1677" in row["detail"] and "2262" in row["detail"]


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("1677-09-21 00:13", "1677-09-21 00:13"),
        ("1677-09-22", "1677-09-22"),
        ("2262-04-11 23:47:16", "2262-04-11 23:47:16"),
        ("2262-04-11 8:30", "2262-04-11 08:30"),
    ],
)
def test_collection_times_at_the_edges_of_the_range_are_kept(
    tmp_path: Path, when: str, expected: str
) -> None:
    r = used(tmp_path, f"P1,{when},Magnesium,1.0,mg/dL,1.6-2.6\n")
    assert r["collected_at"] == pd.Timestamp(expected)


def test_one_far_date_leaves_the_others_unchanged(tmp_path: Path) -> None:
    res = read_rows(
        tmp_path,
        "P1,0001-03-01 08:30,Magnesium,1.0,mg/dL,1.6-2.6\n"
        "P1,2024-03-01 08:30,Magnesium,1.1,mg/dL,1.6-2.6\n"
        "P1,2024-03-02 09:15:30,Magnesium,1.2,mg/dL,1.6-2.6\n",
    )
    assert list(res.rejected["source_row"]) == [2]
    assert list(res.results["collected_at"]) == [
        pd.Timestamp("2024-03-01 08:30"),
        pd.Timestamp("2024-03-02 09:15:30"),
    ]


@pytest.mark.parametrize(
    ("body", "date_format"),
    [
        (
            "P1,3/15/1600 08:30,Magnesium,1.0,mg/dL,\nP1,3/15/2024 08:30,Magnesium,1.0,mg/dL,\n",
            None,
        ),
        ("P1,15.03.1600,Magnesium,1.0,mg/dL,\nP1,15.03.2024,Magnesium,1.0,mg/dL,\n", None),
        (
            "P1,15/03/1600 08:30,Magnesium,1.0,mg/dL,\nP1,15/03/2024 08:30,Magnesium,1.0,mg/dL,\n",
            "%d/%m/%Y %H:%M",
        ),
    ],
)
def test_far_dates_in_other_shapes_are_rejected(
    tmp_path: Path, body: str, date_format: str | None
) -> None:
    res = read_rows(tmp_path, body, date_format=date_format)
    assert list(res.rejected["reason"]) == ["unparseable_date"]
    assert list(res.rejected["source_row"]) == [2]
    assert list(res.results["collected_at"].dt.year) == [2024]


@pytest.mark.parametrize("birth", ["0001-01-01", "1405-06-15", "9999-12-31"])
def test_a_birth_date_outside_the_range_leaves_the_age_unknown(tmp_path: Path, birth: str) -> None:
    # 1405 used to wrap round to about 1990: a plausible, wrong age of 34
    header = "patient_id,birth_date,collected_at,test,result,unit\n"
    r = used(tmp_path, f"P1,{birth},2024-03-01,Magnesium,1.0,mg/dL\n", header=header)
    assert math.isnan(r["age_years"])


def test_a_birth_date_in_range_still_gives_the_age(tmp_path: Path) -> None:
    header = "patient_id,birth_date,collected_at,test,result,unit\n"
    r = used(tmp_path, "P1,1984-03-01,2024-03-01 08:30,Magnesium,1.0,mg/dL\n", header=header)
    assert r["age_years"] == pytest.approx(40, abs=0.01)


# ---------------------------------------------------------------- 2. values with a unit or flag


@pytest.mark.parametrize(
    ("result", "unit"),
    [
        ("1.2 mg/dL", "mg/dL"),
        ("1.2mg/dL", "mg/dL"),
        ("1.2 MG/DL", "mg/dL"),
        ("1.2 mg / dL", "mg/dL"),
        ("1.2 mg%", "mg/dL"),  # another spelling of the same unit
        ("1.2 mg/dL", ""),  # the unit printed with the number is the row's unit
        ("１.２", "mg/dL"),  # full-width digits
        ("１.２ ｍｇ／ｄＬ", "mg/dL"),
        ("1.2\u00a0mg/dL", "mg/dL"),  # no-break space
        ("1.2\u200b", "mg/dL"),  # zero-width space
    ],
)
def test_a_number_printed_with_its_unit_is_read(tmp_path: Path, result: str, unit: str) -> None:
    r = used(tmp_path, f'P1,2024-03-01 08:30,Magnesium,"{result}",{unit},1.6-2.6\n')
    assert r["value_reported"] == 1.2
    assert r["value"] == pytest.approx(1.2 * MG)
    assert r["unit_reported"] in ("mg/dL", "mg/dl", "mg%")
    assert pd.isna(r["text_result"]) or r["text_result"] == ""
    assert r["value_raw"] == result  # the text as printed stays available


def test_a_censored_number_with_its_unit_keeps_the_comparator(tmp_path: Path) -> None:
    r = used(tmp_path, "P1,2024-03-01 08:30,Magnesium,<0.5 mg/dL,mg/dL,\n")
    assert (r["comparator"], r["value_reported"]) == ("<", 0.5)


def test_equivalent_units_for_the_analyte_do_not_conflict(tmp_path: Path) -> None:
    # mmol/L and mEq/L are the same number for potassium (valence 1)
    r = used(tmp_path, "P1,2024-03-01 08:30,Potassium,4.1 mmol/L,mEq/L,\n")
    assert (r["value"], r["unit_reported"]) == (4.1, "mEq/L")


@pytest.mark.parametrize(
    ("result", "unit"),
    [
        ("1.2 mmol/L", "mg/dL"),  # mmol/L and mg/dL differ 2.4-fold for magnesium
        ("1.2 mEq/L", "mmol/L"),  # and mEq/L is twice mmol/L
        ("12%", "mg/dL"),
    ],
)
def test_a_unit_printed_with_the_number_that_contradicts_the_unit_column_is_rejected(
    tmp_path: Path, result: str, unit: str
) -> None:
    row = rejected(tmp_path, f"P1,2024-03-01 08:30,Magnesium,{result},{unit},\n")
    assert row["reason"] == "unit_conflict"
    assert unit in row["detail"]


@pytest.mark.parametrize(
    ("result", "unit", "reason"),
    [
        ("1.2 mmol", "", "unknown_unit"),  # an amount, not a concentration
        ("3.1 mEq", "", "unknown_unit"),
        ("2.0 mmol", "mmol/L", "unit_conflict"),  # which of the two is right?
        ("1.2 mg", "mg/dL", "unit_conflict"),
        ("5 U", "", "unknown_unit"),
    ],
)
def test_a_number_printed_with_an_amount_unit_is_rejected_not_kept_as_text(
    tmp_path: Path, result: str, unit: str, reason: str
) -> None:
    row = rejected(tmp_path, f"P1,2024-03-01 08:30,Magnesium,{result},{unit},\n")
    assert row["reason"] == reason
    assert row["value_raw"] == result


@pytest.mark.parametrize("text", ["12 clotted", "see comment", "1.2 mg given"])
def test_words_after_a_number_keep_the_result_as_text(tmp_path: Path, text: str) -> None:
    r = used(tmp_path, f"P1,2024-03-01 08:30,Magnesium,{text},mg/dL,\n")
    assert r["text_result"] == text and pd.isna(r["value"])


@pytest.mark.parametrize("unit", ["", "%"])
def test_a_percent_is_read_as_the_unit(tmp_path: Path, unit: str) -> None:
    # % is a unit like any other: no analyte here is a percentage, so the row is rejected
    # for its unit (as "12" with unit "%" is), not kept as a text result
    row = rejected(tmp_path, f"P1,2024-03-01 08:30,Magnesium,12%,{unit},\n")
    assert row["reason"] == "unknown_unit"


@pytest.mark.parametrize(
    ("result", "marker"),
    [
        ("7.6 L", "L"),
        ("7.6L", "L"),
        ("1.2 H", "H"),
        ("1.2H", "H"),
        ("1.2 HH", "HH"),
        ("1.2 LL", "LL"),
        ("1.2 A", "A"),
        ("1.2*", "*"),
        ("1.2 *", "*"),
        ("1.2!", "!"),
        ("1.2 (H)", "H"),
        ("1.2(L)", "L"),
        ("1.2 [L]", "L"),
        ("1.2 mg/dL H", "H"),
        ("1.2 mg/dL*", "*"),
        ("1.2 mg/dL (L)", "L"),
        ("1.2* mg/dL", "*"),
        ("1.2 H mg/dL", "H"),
        ("1.2 (L) mg/dL", "L"),
        ("1.2 [LL] mg/dL", "LL"),
        ("1.2 H*", "H"),  # a letter and a symbol: the letter says which way
        ("1.2L!", "L"),
    ],
)
def test_an_abnormal_flag_after_the_number_is_moved_to_the_flag(
    tmp_path: Path, result: str, marker: str
) -> None:
    r = used(tmp_path, f"P1,2024-03-01 08:30,Magnesium,{result},mg/dL,1.6-2.6\n")
    assert r["value_reported"] == float(re.match(r"[\d.]+", result).group())
    assert r["unit_reported"] == "mg/dL"
    assert r["flag"] == marker


def test_the_l_of_a_unit_is_not_a_flag(tmp_path: Path) -> None:
    r = used(tmp_path, "P1,2024-03-01 08:30,Magnesium,0.8 mmol/L,mmol/L,\n")
    assert r["value"] == 0.8 and (pd.isna(r["flag"]) or r["flag"] == "")


def test_a_marker_joins_the_flag_column(tmp_path: Path) -> None:
    header = "patient_id,collected_at,test,result,unit,flag\n"
    res = read_rows(
        tmp_path,
        "P1,2024-03-01 08:30,Magnesium,1.2 L,mg/dL,L\n"
        "P1,2024-03-02 08:30,Magnesium,1.2 L,mg/dL,abnormal\n"
        "P1,2024-03-03 08:30,Magnesium,1.2,mg/dL,abnormal\n",
        header=header,
    )
    assert list(res.results["flag"]) == ["L", "abnormal;L", "abnormal"]
    assert list(res.results["value_reported"]) == [1.2, 1.2, 1.2]


def test_decimal_comma_numbers_with_a_unit(tmp_path: Path) -> None:
    res = read_rows(
        tmp_path,
        'P1,2024-03-01 08:30,Magnesium,"1,2 mg/dL",mg/dL,\n'
        'P1,2024-03-02 08:30,Magnesium,"0,8",mmol/L,\n',
    )
    assert list(res.results["value_reported"]) == [1.2, 0.8]


@pytest.mark.parametrize("result", ["(1.2)", "1.2.3", "12-15", "1..2", "1.2.3 mg/dL"])
def test_numbers_that_cannot_be_read_are_rejected(tmp_path: Path, result: str) -> None:
    row = rejected(tmp_path, f"P1,2024-03-01 08:30,Magnesium,{result},mg/dL,\n")
    assert row["reason"] == "unparseable_value"
    assert row["value_raw"] == result


@pytest.mark.parametrize(
    "result",
    ["hemolyzed", "See Comments", "___", "CANCELLED", "UNABLE TO REPORT DUE TO CONTAMINATION", "H"],
)
def test_text_results_stay_text(tmp_path: Path, result: str) -> None:
    r = used(tmp_path, f"P1,2024-03-01 08:30,Magnesium,{result},mg/dL,\n")
    assert r["text_result"] == result and math.isnan(r["value"])


# ---------------------------------------------------------------- 3. absurd range bounds


@pytest.mark.parametrize(
    "reference_range",
    # impossible for magnesium in every unit it is reported in (down to pmol/L)
    [
        *("0-1e308", "0-1e400", "1e308-1e309", ">1e300", "0-1e12", "0-0", "0-1e-12"),
        "2.6-1.6",  # low above high: every result would be low or high
    ],
)
def test_an_absurd_range_falls_back_to_the_bundled_range(
    tmp_path: Path, reference_range: str
) -> None:
    r = used(tmp_path, f"P1,2024-03-01 08:30,Magnesium,1.0,mg/dL,{reference_range}\n")
    assert r["value_reported"] == 1.0
    # the bundled range as the source prints it in mg/dL (fallback_ranges.csv)
    assert (r["range_origin"], r["range_low_reported"], r["range_high_reported"]) == (
        "bundled",
        1.7,
        2.55,
    )
    assert r["range_low"] == pytest.approx(0.70, abs=0.001)
    assert "implausible_range" in r["quality"].split(";")


def test_an_absurd_range_from_low_and_high_columns(tmp_path: Path) -> None:
    header = "patient_id,collected_at,test,result,unit,ref_low,ref_high\n"
    r = used(tmp_path, "P1,2024-03-01 08:30,Magnesium,1.0,mg/dL,0,1e308\n", header=header)
    assert r["range_origin"] == "bundled" and "implausible_range" in r["quality"]


def test_a_range_that_overflows_in_the_canonical_unit_is_dropped(tmp_path: Path) -> None:
    # creatinine mg/dL -> umol/L multiplies by 88.4: 1e307 overflows to inf
    r = used(tmp_path, "P1,2024-03-01 08:30,Creatinine,1.0,mg/dL,0.5-1e307\n")
    assert r["range_origin"] == "unknown"  # no bundled creatinine range
    assert math.isnan(r["range_low"]) and math.isnan(r["range_high"])
    assert "implausible_range" in r["quality"]


@pytest.mark.parametrize(
    ("reference_range", "low", "high"),
    [
        ("1.6-2.6", 1.6, 2.6),
        # a low bound of 0 only says "no lower limit": no reason to drop the lab's range
        ("0-2.6", 0.0, 2.6),
        # possible in mg/L (41 mmol/L as mg/dL): the lab's range wins over a guess
        ("0-100", 0.0, 100.0),
    ],
)
def test_possible_ranges_are_kept(
    tmp_path: Path, reference_range: str, low: float, high: float
) -> None:
    r = used(tmp_path, f"P1,2024-03-01 08:30,Magnesium,1.0,mg/dL,{reference_range}\n")
    assert (r["range_origin"], r["range_low_reported"], r["range_high_reported"]) == (
        "row",
        low,
        high,
    )
    assert "implausible_range" not in (r["quality"] or "")


def test_an_absurd_range_does_not_stop_interpret(tmp_path: Path) -> None:
    res = read_rows(
        tmp_path,
        "P1,2024-03-01 08:30,Magnesium,1.0,mg/dL,0-1e308\n"
        "P1,2024-03-01 08:30,Calcium,7.0,mg/dL,0-1e308\n",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        findings = interpret(res)
    assert len(findings) > 0


# ---------------------------------------------------------------- 4. patient ids


def test_invisible_characters_and_width_do_not_split_a_patient(tmp_path: Path) -> None:
    ids = ["P1", "\u200bP1", "P1\u200b", "P\u200c1", "P\u200d1", "\ufeffP1", "P1\u2060", "Ｐ１"]
    body = "".join(
        f"{pid},2024-03-{day:02d} 08:30,Magnesium,1.0,mg/dL,1.6-2.6\n"
        for day, pid in enumerate(ids, start=1)
    )
    res = read_rows(tmp_path, body)
    assert res.rows_used == len(ids)
    assert set(res.results["patient_id"]) == {"P1"}


def test_an_id_of_only_invisible_characters_is_missing(tmp_path: Path) -> None:
    row = rejected(tmp_path, "\u200b\u2060,2024-03-01 08:30,Magnesium,1.0,mg/dL,1.6-2.6\n")
    assert row["reason"] == "missing_patient_id"


@pytest.mark.parametrize(
    "name", ["Ｍａｇｎｅｓｉｕｍ", "Magne\u200bsium", "\ufeffMagnesium", "MAGNESIUM\u00a0"]
)
def test_test_names_in_odd_unicode_are_recognised(tmp_path: Path, name: str) -> None:
    """Full-width letters, zero-width or no-break spaces and a BOM inside a test name do not
    make a magnesium result out of scope."""
    assert used(tmp_path, f"P1,2024-03-01 08:30,{name},1.0,mg/dL,1.6-2.6\n")["analyte"] == (
        "magnesium"
    )


# ---------------------------------------------------------------- thousands separators


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # a file of decimal points: "1,250" is grouped in thousands, never 1.25
        (["1,250", "0.55", "8.1"], [1250.0, 0.55, 8.1]),
        (["1,250.5", "0.9"], [1250.5, 0.9]),
        (["1,250", "1,120"], [1250.0, 1120.0]),  # no evidence either way: points
        # a file of decimal commas: "1.250" is grouped in thousands, "1,250" is 1.25
        (["1.250", "0,55", "8,1"], [1250.0, 0.55, 8.1]),
        (["1.250,5", "0,9"], [1250.5, 0.9]),
        (["1,250", "0,55", "8,1"], [1.25, 0.55, 8.1]),
        (["0.500", "0.9"], [0.5, 0.9]),  # a group never starts with 0
    ],
)
def test_thousands_separators(tmp_path: Path, values: list[str], expected: list[float]) -> None:
    body = "".join(f'P1,2024-03-0{i + 1} 08:30,PTH,"{v}",pg/mL,\n' for i, v in enumerate(values))
    res = read_rows(tmp_path, body)
    assert res.rows_rejected == 0, res.rejected.to_dict("records")
    assert list(res.results.sort_values("collected_at")["value_reported"]) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # a file of decimal points with a few decimal commas (two exports joined): a
        # comma followed by other than three digits, or after a 0, is never a group
        (["12,5", "0.55", "8.1"], [12.5, 0.55, 8.1]),
        (
            ["0,62", "< 1,5", "1,2345", "0,500", "0.9", "8.1", "2.5", "3.5", "4.5"],
            [0.62, 1.5, 1.2345, 0.5, 0.9, 8.1, 2.5, 3.5, 4.5],
        ),
        (["1.250,5", "0.55", "8.1"], [1250.5, 0.55, 8.1]),
        (["0,62 pg/mL", "1,5 H", "0.55", "8.1"], [0.62, 1.5, 0.55, 8.1]),
        # a file of decimal commas with a number grouped by commas and a decimal point
        (["1,250.5", "0,55", "8,1"], [1250.5, 0.55, 8.1]),
    ],
)
def test_a_number_of_the_other_decimal_separator_is_read_when_it_can_only_be_read_one_way(
    tmp_path: Path, values: list[str], expected: list[float]
) -> None:
    body = "".join(f'P1,2024-03-0{i + 1} 08:30,PTH,"{v}",pg/mL,\n' for i, v in enumerate(values))
    res = read_rows(tmp_path, body)
    assert res.rows_rejected == 0, res.rejected.to_dict("records")
    assert list(res.results.sort_values("collected_at")["value_reported"]) == expected


@pytest.mark.parametrize("ambiguous", ["1,250", "1.250", "<1,250"])
def test_a_number_either_separator_reads_differently_is_rejected_in_a_file_of_both(
    tmp_path: Path, ambiguous: str
) -> None:
    """A file with decimal points and decimal commas has no separator to read "1,250" (1250
    or 1.25) or "1.250" by: the row is rejected, the detail says why and what to do."""
    res = read_rows(
        tmp_path,
        f'P1,2024-03-01 08:30,PTH,"{ambiguous}",pg/mL,\n'
        'P1,2024-03-02 08:30,PTH,"0,55",pg/mL,\n'
        'P1,2024-03-03 08:30,PTH,"8.1",pg/mL,\n',
    )
    assert res.rows_used == 2
    (detail,) = res.rejected["detail"]
    assert list(res.rejected["reason"]) == ["unparseable_value"]
    assert "ambiguous" in detail and "decimal points and others with decimal commas" in detail
    assert "--mapping" in detail and 'decimal = "."' in detail


def test_a_decimal_separator_named_in_the_mapping_reads_what_the_file_leaves_ambiguous(
    tmp_path: Path,
) -> None:
    mapping = tmp_path / "map.toml"
    mapping.write_text('[options]\ndecimal = "."\n')
    res = read_rows(
        tmp_path,
        'P1,2024-03-01 08:30,PTH,"1,250",pg/mL,\n'
        'P1,2024-03-02 08:30,PTH,"0,55",pg/mL,\n'
        'P1,2024-03-03 08:30,PTH,"8.1",pg/mL,\n',
        mapping=mapping,
    )
    assert res.rows_rejected == 0, res.rejected.to_dict("records")
    assert list(res.results.sort_values("collected_at")["value_reported"]) == [1250, 0.55, 8.1]


@pytest.mark.parametrize(
    ("reference_range", "low", "high"),
    [
        ("Ref. range 1.6-2.6", 1.6, 2.6),
        ("Reference interval 1.6-2.6", 1.6, 2.6),
        ("range 1.6-2.6", 1.6, 2.6),
        ('"1,000-3,000"', 1000.0, 3000.0),  # grouped in thousands
    ],
)
def test_more_printed_ranges(tmp_path: Path, reference_range: str, low: float, high: float) -> None:
    r = used(tmp_path, f"P1,2024-03-01 08:30,PTH,20,pg/mL,{reference_range}\n")
    assert (r["range_low_reported"], r["range_high_reported"]) == (low, high)
    assert r["range_origin"] == "row"


def test_spreadsheet_text_formulas_keep_leading_zeros_without_the_formula(tmp_path: Path) -> None:
    # ="000123": how spreadsheets and some EHR exports keep an id's leading zeros
    header = "patient_id,collected_at,test,result,unit,specimen_id\n"
    res = read_rows(
        tmp_path,
        '"=""000123""",2024-03-01 08:30,Magnesium,"=""0.8""",mmol/L,"=""0042"""\n'
        "000123,2024-03-02 08:30,Magnesium,0.7,mmol/L,0043\n",
        header=header,
    )
    assert list(res.results["patient_id"]) == ["000123", "000123"]
    assert list(res.results["value"]) == [0.8, 0.7]
    assert list(res.results["specimen_id"]) == ["0042", "0043"]


@pytest.mark.parametrize(
    ("result", "value"),
    [
        ("1.2 verified", 1.2),
        ("1.2 (repeated)", 1.2),
        ("1.2 VERIFIED BY DILUTION.", 1.2),
        ("1.2, see comment", 1.2),
        ("1.2 mg/dL verified", 1.2),
        ("1.2 verificado", 1.2),
        ("1.2 bestätigt", 1.2),
        ("1.2 hemolyzed", 1.2),  # read, and marked hemolyzed (below)
        # words that may change what the number is stay a text result
        ("1.2 corrected", None),
        ("verified 1.2", None),
    ],
)
def test_a_note_on_how_a_number_was_checked_leaves_the_number(
    tmp_path: Path, result: str, value: float | None
) -> None:
    r = used(tmp_path, f'P1,2024-03-01 08:30,Magnesium,"{result}",mg/dL,\n')
    assert r["value_raw"] == result
    if value is None:
        assert math.isnan(r["value_reported"]) and r["text_result"] == result
    else:
        assert r["value_reported"] == value


def test_a_number_printed_with_hemolyzed_is_read_and_marked(tmp_path: Path) -> None:
    # CLINICAL.md sec. 5: a low K from a hemolyzed sample stays low (hemolysis only raises
    # it), a high one is not interpreted; the guard needs the number and the mark
    r = used(tmp_path, 'P1,2024-03-01 08:30,Potassium,"3.0 hemolyzed",mmol/L,3.5-5.1\n')
    assert r["value_reported"] == 3.0
    assert "hemolyzed" in r["quality"].split(";")
