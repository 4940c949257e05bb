"""Review findings on the patterns and the context rules that a YAML case cannot state
exactly: the whole missing_inputs text (YAML cases check a subset) and which results a
finding cites."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from test_engine import _results, _row

from labinterp.interpret import interpret_results
from labinterp.reading import read

HEADER = "patient_id,collected_at,test,value,unit,ref_range,sex,birth_date\n"


def _finding(tmp_path: Path, rows: str, rule_id: str) -> pd.Series:
    path = tmp_path / "export.csv"
    path.write_text(HEADER + rows, encoding="utf-8")
    result = read([path])
    assert len(result.rejected) == 0
    findings = interpret_results(result.results)
    found = findings[findings["rule_id"] == rule_id]
    assert len(found) == 1, found.to_string()
    return found.iloc[0]


def test_p2_open_rise_names_the_d_not_the_measured_low_mg(tmp_path: Path) -> None:
    # a "<" first D bounds the rise only from below; the low Mg lies in the span
    row = _finding(
        tmp_path,
        "W7,2024-01-01 08:00,25-OH Vitamin D,<10,ng/mL,30-100,F,1970-01-01\n"
        "W7,2024-02-15 08:00,Magnesium,0.6,mmol/L,0.7-1.0,F,1970-01-01\n"
        "W7,2024-04-01 08:00,25-OH Vitamin D,15,ng/mL,30-100,F,1970-01-01\n",
        "vitamin_d_resistance",
    )
    assert (row["status"], row["missing_inputs"]) == ("indeterminate", "vitamin_d_25oh")
    assert "Magnesium 0.6 mmol/L" in row["evidence"]
    assert "<10 ng/mL" in row["evidence"] and "15 ng/mL" in row["evidence"]


def test_p2_serial_with_a_censored_latest_d_lists_nothing_missing(tmp_path: Path) -> None:
    row = _finding(
        tmp_path,
        "W5,2024-01-01 08:00,25-OH Vitamin D,15,ng/mL,30-100,F,1970-01-01\n"
        "W5,2024-02-01 08:00,Magnesium,0.6,mmol/L,0.7-1.0,F,1970-01-01\n"
        "W5,2024-04-01 08:00,25-OH Vitamin D,<10,ng/mL,30-100,F,1970-01-01\n",
        "vitamin_d_resistance",
    )
    assert (row["status"], row["tier"], row["missing_inputs"]) == ("fired", "serial", "")
    assert "Magnesium 0.6 mmol/L" in row["evidence"]


def test_p2_cites_the_mg_of_a_child_without_a_range_as_p1_does(tmp_path: Path) -> None:
    rows = (
        "KD,2024-01-01 08:00,25-OH Vitamin D,8,ng/mL,,M,2014-01-01\n"
        "KD,2024-01-01 08:00,Magnesium,0.5,mmol/L,,M,2014-01-01\n"
    )
    p2 = _finding(tmp_path, rows, "vitamin_d_resistance")
    p1 = _finding(tmp_path, rows, "hypomagnesemia_hypocalcemia")
    assert p2["status"] == "indeterminate"
    assert "range_unknown" in p2["caveats"].split(";")
    assert "range_unknown" in p1["caveats"].split(";")
    assert "Magnesium 0.5 mmol/L" in p2["evidence"]
    assert "magnesium" in p1["missing_inputs"].split(";")
    assert p2["missing_inputs"] == "magnesium"


def _cited(row: pd.Series) -> dict[str, tuple[str, float, str]]:
    return {r["role"]: (r["analyte"], r["value"], r["collected_at"]) for r in row["evidence_json"]}


def test_p1_prefers_an_ionized_ca_in_the_window_to_an_unreliable_corrected_ca(
    tmp_path: Path,
) -> None:
    # albumin 27 g/L: the corrected Ca of 08:00 (2.01 mmol/L, low) is unreliable
    # (CLINICAL.md sec. 3); the normal ionized Ca of 14:00 is the basis, and the finding
    # says which was used
    row = _finding(
        tmp_path,
        "PI,2024-03-01 08:00,Magnesium,0.6,mmol/L,0.70-1.05,F,1970-01-01\n"
        "PI,2024-03-01 08:00,Calcium,1.75,mmol/L,2.12-2.62,F,1970-01-01\n"
        "PI,2024-03-01 08:00,Albumin,27,g/L,35-50,F,1970-01-01\n"
        "PI,2024-03-01 14:00,Magnesium,0.62,mmol/L,0.70-1.05,F,1970-01-01\n"
        'PI,2024-03-01 14:00,"Calcium, ionized",1.22,mmol/L,1.15-1.32,F,1970-01-01\n',
        "hypomagnesemia_hypocalcemia",
    )
    assert (row["status"], row["tier"]) == ("not_fired", "")
    assert _cited(row)["calcium"] == ("calcium_ionized", 1.22, "2024-03-01T14:00:00")
    assert "Ionized Ca preferred" in row["note"]
    assert "corrected_ca_low_albumin" not in row["caveats"].split(";")


def test_p1_low_ca_alone_cites_the_low_mg_of_a_draw_with_a_normal_ca(tmp_path: Path) -> None:
    row = _finding(
        tmp_path,
        "M1,2024-03-01 08:00,Magnesium,0.45,mmol/L,0.7-1.05,F,1970-01-01\n"
        'M1,2024-03-01 08:00,"Calcium, ionized",1.16,mmol/L,1.15-1.32,F,1970-01-01\n'
        'M1,2024-03-01 20:00,"Calcium, ionized",0.95,mmol/L,1.15-1.32,F,1970-01-01\n',
        "hypomagnesemia_hypocalcemia",
    )
    assert (row["status"], row["tier"]) == ("fired", "supported")
    cited = _cited(row)
    assert cited["magnesium"] == ("magnesium", 0.45, "2024-03-01T08:00:00")
    assert cited["calcium"] == ("calcium_ionized", 0.95, "2024-03-01T20:00:00")


def test_p3_refractory_cites_the_later_fired_low_k_not_a_low_k_with_a_normal_mg(
    tmp_path: Path,
) -> None:
    # the 03-04 low K was drawn with a normal Mg: not fired, not the persistence shown
    row = _finding(
        tmp_path,
        "W2,2024-03-02 08:00,Magnesium,0.60,mmol/L,0.70-1.05,F,1970-01-01\n"
        "W2,2024-03-02 08:00,Potassium,3.2,mmol/L,3.5-5.1,F,1970-01-01\n"
        "W2,2024-03-03 08:00,Magnesium,0.62,mmol/L,0.70-1.05,F,1970-01-01\n"
        "W2,2024-03-03 08:00,Potassium,3.1,mmol/L,3.5-5.1,F,1970-01-01\n"
        "W2,2024-03-04 08:00,Magnesium,0.80,mmol/L,0.70-1.05,F,1970-01-01\n"
        "W2,2024-03-04 08:00,Potassium,3.3,mmol/L,3.5-5.1,F,1970-01-01\n",
        "hypomagnesemia_hypokalemia",
    )
    assert (row["status"], row["tier"]) == ("fired", "refractory")
    cited = _cited(row)
    assert cited["potassium"] == ("potassium", 3.2, "2024-03-02T08:00:00")
    assert cited["potassium_last"] == ("potassium", 3.1, "2024-03-03T08:00:00")


def test_p3_a_normal_mg_at_the_time_of_a_fired_low_k_breaks_refractory() -> None:
    """Two Mg results at the time of a fired low K, one low and one normal (conflicting
    rows of one draw): the K pairs with the low one, and the normal one, measured at the
    K's own time, still says Mg did not stay low."""

    def row(t: str, analyte: str, value: float, lo: float, hi: float, n: int) -> dict:
        return _row("E1", t, analyte, value, lo, hi, source_row=n)

    def p3(rows: list[dict]) -> pd.Series:
        found = interpret_results(_results(rows))
        return found[found["rule_id"] == "hypomagnesemia_hypokalemia"].iloc[0]

    rows = [
        row("2024-03-01 08:00", "magnesium", 0.60, 0.7, 1.05, 1),
        row("2024-03-01 08:00", "potassium", 3.2, 3.5, 5.1, 2),
        row("2024-03-02 09:00", "potassium", 3.1, 3.5, 5.1, 3),
        row("2024-03-02 09:00", "magnesium", 0.61, 0.7, 1.05, 4),
    ]
    assert p3(rows)["tier"] == "refractory"
    # row 0 sorts first, so each K still pairs with the low Mg of its draw (the last one)
    for at in ("2024-03-01 08:00", "2024-03-02 09:00"):
        found = p3([*rows, row(at, "magnesium", 0.85, 0.7, 1.05, 0)])
        assert (found["status"], found["tier"]) == ("fired", "concurrent"), at


def test_p3_refractory_cites_the_pair_of_low_k_that_shows_it(tmp_path: Path) -> None:
    # the 03-01 low K is fired too, but a normal Mg follows it: the pair shown is the
    # first and the last low K after that Mg, with the Mg paired with the first
    rows = (
        "R3,2024-03-01 08:00,Magnesium,0.60,mmol/L,0.70-1.05,F,1970-01-01\n"
        "R3,2024-03-01 08:00,Potassium,3.2,mmol/L,3.5-5.1,F,1970-01-01\n"
        "R3,2024-03-01 20:00,Magnesium,0.85,mmol/L,0.70-1.05,F,1970-01-01\n"
        "R3,2024-03-02 14:00,Magnesium,0.61,mmol/L,0.70-1.05,F,1970-01-01\n"
        "R3,2024-03-02 14:00,Potassium,3.1,mmol/L,3.5-5.1,F,1970-01-01\n"
        "R3,2024-03-03 08:00,Magnesium,0.62,mmol/L,0.70-1.05,F,1970-01-01\n"
        "R3,2024-03-03 08:00,Potassium,3.3,mmol/L,3.5-5.1,F,1970-01-01\n"
        "R3,2024-03-04 09:00,Magnesium,0.59,mmol/L,0.70-1.05,F,1970-01-01\n"
        "R3,2024-03-04 09:00,Potassium,3.0,mmol/L,3.5-5.1,F,1970-01-01\n"
    )
    row = _finding(tmp_path, rows, "hypomagnesemia_hypokalemia")
    assert (row["status"], row["tier"]) == ("fired", "refractory")
    cited = _cited(row)
    assert cited["potassium"] == ("potassium", 3.1, "2024-03-02T14:00:00")
    assert cited["magnesium"] == ("magnesium", 0.61, "2024-03-02T14:00:00")
    assert cited["potassium_last"] == ("potassium", 3.0, "2024-03-04T09:00:00")
