"""Property: whatever bytes arrive, the reader either accounts for every row or raises one
of labinterp's own errors (which the CLI turns into a message and exit code 2)."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from labinterp import schema
from labinterp.errors import LabinterpError
from labinterp.reading import read

HEADERS = [
    "patient_id",
    "MRN",
    "collected_at",
    "Date",
    "charttime",
    "test",
    "Component",
    "LOINC",
    "result",
    "Value",
    "unit",
    "Units",
    "reference_range",
    "ref_low",
    "ref_high",
    "flag",
    "comment",
    "sex",
    "birth_date",
    "age",
    "specimen_id",
    "Mg (mg/dL)",
    "K [mmol/L]",
    "junk",
]
CELLS = [
    "",
    " ",
    "P1",
    "P2",
    "2024-03-01",
    "2024-03-01 08:30",
    "3/5/2024",
    "13/5/2024",
    "5/13/2024",
    "01.02.2024",
    "11/9/38 18:08",
    "2018-05-26T23:21:43-07:00",
    "Magnesium",
    "Calcium, total",
    "K",
    "Potassium",
    "CRP",
    "Sodium",
    "19123-9",
    "2823-3",
    "1.2",
    "0,62",
    "<0.5",
    ">= 200",
    "LESS THAN 0.4",
    "GREATER THAN 10",
    "___",
    "See Comments",
    "-1",
    "1e309",
    "nan",
    "inf",
    "17",
    "235",
    "mg/dL",
    "mmol/L",
    "mEq/L",
    "K/uL",
    "U/L",
    "g/dL",
    "3.5-5.0",
    "<10",
    "abc-def",
    "HEMOLYSIS FALSELY ELEVATES K",
    "F",
    "M",
    "x" * 300,
    '"quoted, comma"',
    "é",
    "\u202e",
    "=cmd|' /C calc'!A0",
    "1.7999999523162842",
]


@st.composite
def csv_files(draw) -> bytes:
    if draw(st.booleans()):
        # a recognisable long header, shuffled, sometimes with extra columns
        core = ["patient_id", "collected_at", "test", "result", "unit"]
        extras = draw(st.lists(st.sampled_from(HEADERS), max_size=4))
        header = draw(st.permutations(core + extras))
    else:
        header = draw(st.lists(st.sampled_from(HEADERS), min_size=1, max_size=10))
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    rows = draw(
        st.lists(
            st.lists(st.sampled_from(CELLS), min_size=0, max_size=len(header) + 2), max_size=12
        )
    )
    lines = [delimiter.join(header)] + [delimiter.join(r) for r in rows]
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), "")
    text = draw(st.sampled_from(["\n", "\r\n", "\r"])).join(lines)
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.integers(0, 9)) == 0:
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=40)) + data[cut:]
    return data


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_files())
def test_malformed_csvs_never_crash_and_always_account(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.csv"
        path.write_bytes(data)
        try:
            res = read(path)
        except LabinterpError as exc:
            event(f"refused: {type(exc).__name__}")
            return
        event("read")
        assert res.rows_in == res.rows_used + res.rows_rejected
        assert set(res.rejected["reason"]) <= set(schema.REJECT_REASONS)
        assert not (res.results["patient_id"].fillna("") == "").any()
        assert res.results["analyte"].notna().all()
        values = res.results["value"].dropna()
        assert values.map(math.isfinite).all()  # "inf", "1e309" never become numbers
