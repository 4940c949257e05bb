"""Every rejected row's detail says what to fix: what was wrong, then what to do about it
("; correct it in the export", "; pass --date-format ...") or, for a row that is not a
mistake (a repeat, a cancelled test), "nothing to fix"."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from labinterp import normalize, reading
from labinterp.readers import duplicates, fhir, hl7v2
from labinterp.reading import read
from labinterp.test_names import not_read_detail

# A clause that says what to do, at the start of the detail or of a clause.
_FIX = re.compile(
    r"(?:^|[;:.(]\s*|\b(?:or|then|and)\s+)"
    r"(?:nothing to fix|add|fill|correct|check|re-export|export|pass|name|give|put|format"
    r"|write|read)\b",
    re.I,
)


def says_a_fix(detail: str) -> bool:
    return bool(_FIX.search(detail))


def test_the_fix_test_tells_a_detail_without_a_fix() -> None:
    assert not says_a_fix("the result has no unit")
    assert not says_a_fix("test not interpreted by labinterp (not in the analyte catalog)")
    assert says_a_fix("the result has no unit; add it in the export")


def _table_details() -> dict[str, str]:
    details = {f"normalize {k}": v for k, v in normalize._DETAIL.items()}
    details |= {f"normalize {k}": v for k, v in normalize._DETAIL_BY_FORMAT.items()}
    details |= {f"hl7 status {k}": v for k, v in hl7v2._NO_RESULT.items()}
    for status in [*fhir.NO_RESULT_STATUSES, "no-such-status"]:
        details[f"fhir status {status}"] = str(fhir._status_problem({"status": status}))
    details["superseded"] = duplicates.replaced_detail("final", "a.csv", 3)
    details["duplicate"], details["duplicate column"] = duplicates.repeat_details(
        [("a.csv", 3, "Mg"), ("b.csv", 2, "LBXSCA")], [("a.csv", 5), ("b.csv", 2)]
    )
    details["calculated ionized calcium"] = not_read_detail("Calcium, ionized (calculated)")
    details["repeated header"] = reading._REPEATED_HEADER
    details["one field"] = reading._ONE_FIELD
    for fields in (1, 4, 6):
        details[f"{fields} fields of 5"] = reading._ragged_detail(fields, 5)
    return details


@pytest.mark.parametrize(("where", "detail"), sorted(_table_details().items()))
def test_every_detail_of_the_tables_says_what_to_fix(where: str, detail: str) -> None:
    assert detail and says_a_fix(detail), (where, detail)


# One row per way a row of a delimited export can be rejected.
_MESSY = """patient_id,collected_at,test,result,unit,reference_range,specimen_type,status
P1,2024-03-01 08:00,Magnesium,1.5,,1.6-2.6,,
P1,2024-03-01 08:00,Potassium,3.9,furlongs,,,
P1,2024-03-01 08:00,Calcium,9.1,U/L,,,
P1,2024-03-01 08:00,Phosphate,(1.2),mg/dL,,,
P1,2024-03-01 08:00,Albumin,,g/dL,,,
P1,3/6/24 12:00,Magnesium,1.9,mg/dL,,,
P1,not a date,Magnesium,1.9,mg/dL,,,
P1,45352.5,Magnesium,1.9,mg/dL,,,
P1,,Magnesium,1.9,mg/dL,,,
,2024-03-01 08:00,Magnesium,1.9,mg/dL,,,
1.23457E+11,2024-03-01 08:00,Magnesium,1.9,mg/dL,,,
P1,2024-03-01 08:00,Sodium,140,mmol/L,,,
P1,2024-03-01 08:00,,1.9,mg/dL,,,
P1,2024-03-02 08:00,Magnesium,1.9,mg/dL,,urine,
P1,2024-03-03 08:00,Magnesium,1.9,mg/dL,,,
P1,2024-03-03 08:00,Magnesium,1.9,mg/dL,,,
P1,2024-03-04 08:00,Magnesium,190,mg/dL,,,
P1,2024-03-04 08:00,Potassium,1.2 mg/dL,mmol/L,,,
P1,2024-03-05 08:00,Potassium,4.1,mmol/L,,,cancelled
P1,2024-03-06 08:00,Magnesium,0.8,mg/dL,0.70-1.00,,
P1,2024-03-07 08:00,Magnesium,1.9,mg/dL
P1,2024-03-07 08:00,Magnesium,1,9,mg/dL,,,,
P1,2024-03-08 08:00,Magnesium,"0,62",mmol/L,,,
P1,2024-03-09 08:00,Magnesium,"1,250",mmol/L,,,
"""


def test_every_detail_of_a_messy_export_says_what_to_fix(tmp_path: Path) -> None:
    path = tmp_path / "messy.csv"
    path.write_text(_MESSY)
    res = read(path)
    reasons = set(res.rejected["reason"])
    assert {"unknown_unit", "unparseable_value", "unparseable_date", "duplicate"} <= reasons
    assert len(reasons) >= 15 and "non_blood_specimen" in reasons, reasons
    for reason, detail in zip(res.rejected["reason"], res.rejected["detail"], strict=True):
        assert says_a_fix(detail), (reason, detail)
    formatted = read(path, date_format="%Y-%m-%d %H:%M").rejected
    for reason, detail in zip(formatted["reason"], formatted["detail"], strict=True):
        assert says_a_fix(detail), (reason, detail)
