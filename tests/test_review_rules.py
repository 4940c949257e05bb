"""Review findings on P2 and the context rules that a YAML case cannot state exactly: the
whole missing_inputs text (YAML cases check a subset) and which results a finding cites."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

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
