"""CLI table output: JSON and CSV carry the same values as the tables they come from."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import labinterp
from labinterp.output import write_table
from labinterp.reading import read

SAMPLE = str(Path(labinterp.__file__).parent / "sample_data" / "clinic_export.csv")


def _json(df: pd.DataFrame) -> list[dict]:
    out = io.StringIO()
    write_table(df, "json", out)
    assert out.getvalue().endswith("\n")
    return json.loads(out.getvalue())


def _plain(df: pd.DataFrame) -> list[dict]:
    """What pandas' own JSON writer gives (numbers to 10 digits)."""
    return json.loads(df.to_json(orient="records", date_format="iso", date_unit="s"))


def test_json_output_has_every_value() -> None:
    findings = labinterp.interpret(SAMPLE)
    got = _json(findings)
    want = _plain(findings.drop(columns="evidence_json"))
    assert len(got) == len(want) == len(findings)
    for row, expected, records in zip(got, want, findings["evidence_json"], strict=True):
        assert list(row) == list(findings.columns)
        evidence = row.pop("evidence_json")
        assert row == expected
        assert [r["role"] for r in evidence] == [r["role"] for r in records]
    results = read(SAMPLE).results
    for row, expected in zip(_json(results), _plain(results), strict=True):
        for key, value in expected.items():
            if isinstance(value, float):  # ours in full, pandas' to 10 digits
                assert row[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
            else:
                assert row[key] == value, key


def test_json_output_escapes_text_and_drops_non_finite_numbers() -> None:
    df = pd.DataFrame(
        {
            "text": pd.array(['say "hi"\\now', "tab\there", None, "é"], dtype="string[pyarrow]"),
            "number": [1.5, np.inf, np.nan, -2.0],
            "count": pd.array([1, None, 3, 4], dtype="Int64"),
        }
    )
    got = _json(df)
    assert [r["text"] for r in got] == ['say "hi"\\now', "tab here", None, "é"]
    assert [r["number"] for r in got] == [1.5, None, None, -2]
    assert [r["count"] for r in got] == [1, None, 3, 4]
    assert _json(df.head(0)) == []


def test_terminal_table_aligns_left_and_cuts_long_cells() -> None:
    df = pd.DataFrame(
        {"patient_id": ["A", "BB"], "note": ["short", "x" * 80], "grade": [pd.NA, 2]}
    ).astype({"grade": "Int64"})
    out = io.StringIO()
    write_table(df, "table", out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "patient_id  note" + " " * 56 + "  grade"
    assert lines[1] == "A           short"  # missing values are blank, trailing space dropped
    assert lines[2].startswith("BB          " + "x" * 59 + "…  2")
    empty = io.StringIO()
    write_table(df.iloc[:0], "table", empty)
    assert empty.getvalue() == "(no rows)\n"


def test_terminal_table_writes_a_below_column_whole_under_each_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "50")
    sentence = "a sentence longer than a cell, which ends in the fix: pass --date-format " * 2
    df = pd.DataFrame({"row": [1, 2, 3], "detail": [sentence, "", sentence]})
    out = io.StringIO()
    write_table(df, "table", out, below="detail")
    lines = out.getvalue().splitlines()
    assert lines[0] == "row"
    first = lines[2 : lines.index("2")]
    assert all(line.startswith("    ") and len(line) <= 49 for line in first)
    assert " ".join(line.strip() for line in first) == sentence.strip()
    assert "--date-format" in first[-1]  # an option is never cut at its hyphens
    assert lines[lines.index("2") + 1] == "3"  # a row without one has nothing under it
    csv = io.StringIO()
    write_table(df, "csv", csv, below="detail")
    assert sentence in csv.getvalue()  # the machine formats are as before
