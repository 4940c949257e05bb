"""`labinterp interpret` on the bundled sample: table, csv and json output, options."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

import labinterp
from labinterp import schema
from labinterp.cli import main

SAMPLE = str(Path(labinterp.__file__).parent / "sample_data" / "clinic_export.csv")


def test_table_is_compact_and_readable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["interpret", SAMPLE, "--patient", "DEMO-007"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:4] == ["patient_id", "rule_id", "status", "tier"]
    assert "evidence_json" not in out
    assert "edta_contamination" in out and "suppressed" in out
    assert "DEMO-001" not in out


def test_help_says_what_each_table_column_means(capsys: pytest.CaptureFixture[str]) -> None:
    from labinterp.cli_interpret import TABLE_COLUMNS, compact

    assert main(["interpret", "--help"]) == 0
    text = capsys.readouterr().out
    explained = {
        line.split()[0]
        for line in text.split("columns of the terminal table")[1].splitlines()
        if line.startswith("  ") and not line.startswith("   ")
    }
    findings = labinterp.interpret(labinterp.read(SAMPLE))
    shown = set(compact(findings).columns)
    assert len(shown) == len(TABLE_COLUMNS)  # the sample fills every column
    assert shown == explained
    assert "\u2265N" in text and "else the start of its" in text  # censored grades; the time


def test_one_patient_shows_the_note_and_evidence_of_what_fired(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["interpret", SAMPLE, "--patient", "DEMO-005"]) == 0
    out = capsys.readouterr().out
    table, _, details = out.partition("\n\n")
    assert table.startswith("patient_id")
    assert "hypomagnesemia_hypokalemia: fired refractory  (2024-05-08 09:40)" in details
    assert "  note: Low K on repeated draws" in details
    assert "names omeprazole, a medicine that often lowers Mg" in " ".join(details.split())
    assert details.count("evidence: ") == 1  # only the finding that fired
    # without --patient, the table alone
    assert main(["interpret", SAMPLE]) == 0
    assert "  note: " not in capsys.readouterr().out


def test_table_leaves_out_columns_nothing_fills(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "plain.csv"
    export.write_text(
        "patient_id,collected_at,test,result,unit,reference_range\n"
        "P1,2024-03-01 08:00,Magnesium,2.0,mg/dL,1.6-2.6\n"
        "P1,2024-03-01 08:00,Calcium,9.1,mg/dL,8.5-10.5\n"
        "P1,2024-03-01 08:00,Potassium,4.1,mmol/L,3.5-5.1\n"
        "P1,2024-03-01 08:00,25-OH Vitamin D,35,ng/mL,30-100\n"
    )
    assert main(["interpret", str(export)]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["patient_id", "rule_id", "status", "when"]
    assert main(["interpret", "--format", "csv", str(export)]) == 0
    assert "caveats" in capsys.readouterr().out.splitlines()[0]  # machine output keeps all


def test_table_time_is_when_the_finding_was_seen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # daily results make one long episode; the low Mg and Ca are on its third day
    export = tmp_path / "stay.csv"
    export.write_text(
        "patient_id,collected_at,test,result,unit,reference_range\n"
        "P1,2024-03-01 08:00,Magnesium,2.0,mg/dL,1.6-2.6\n"
        "P1,2024-03-02 08:00,Magnesium,1.9,mg/dL,1.6-2.6\n"
        "P1,2024-03-03 08:00,Magnesium,1.1,mg/dL,1.6-2.6\n"
        "P1,2024-03-03 08:00,Ionized calcium,0.95,mmol/L,1.15-1.32\n"
    )
    assert main(["interpret", str(export)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "hypocalcemia" in x)
    assert "fired" in line and "2024-03-03 08:00" in line


def test_table_says_when_its_times_are_utc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the findings hold times printed with an offset in UTC: the terminal column says so
    body = "patient_id,collected_at,test,result,unit\n"
    plain = tmp_path / "plain.csv"
    plain.write_text(body + "P1,2018-05-26 23:21,Magnesium,1.1,mg/dL\n")
    offset = tmp_path / "offset.csv"
    offset.write_text(body + "P1,2018-05-26T23:21:00-07:00,Magnesium,1.1,mg/dL\n")
    assert main(["interpret", str(plain)]) == 0
    assert "when (UTC)" not in capsys.readouterr().out
    assert main(["interpret", str(offset)]) == 0
    out = capsys.readouterr().out
    assert "when (UTC)" in out and "2018-05-27 06:21" in out


def test_csv_has_the_findings_columns(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["interpret", SAMPLE, "--format", "csv"]) == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out), keep_default_na=False)
    assert list(df.columns) == list(schema.FINDINGS)
    assert df["patient_id"].nunique() == 21
    # the evidence records as JSON text: the same records the Python API gives, numbers
    # to 6 decimals
    api = labinterp.interpret(SAMPLE)
    assert len(api) == len(df)
    for text, records in zip(df["evidence_json"], api["evidence_json"], strict=True):
        parsed = json.loads(text)
        assert [r["role"] for r in parsed] == [r["role"] for r in records]
        for got, want in zip(parsed, records, strict=True):
            for key, value in want.items():
                if isinstance(value, float):
                    assert got[key] == pytest.approx(round(value, 6), abs=1e-9), key
                else:
                    assert got[key] == value, key


def test_json_and_vitamin_d_guideline(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["interpret", SAMPLE, "--patient", "DEMO-012", "--format", "json"]
    assert main(args) == 0
    iom = json.loads(capsys.readouterr().out)
    assert main([*args, "--vitamin-d-guideline", "es2011"]) == 0
    es = json.loads(capsys.readouterr().out)

    def p2(rows: list[dict]) -> dict:
        return next(r for r in rows if r["rule_id"] == "vitamin_d_resistance")

    assert p2(iom)["status"] == "not_fired"
    assert (p2(es)["status"], p2(es)["tier"]) == ("fired", "single")
    # the evidence records are nested in JSON output, not a JSON string inside it
    evidence = p2(es)["evidence_json"]
    assert isinstance(evidence, list) and {"role", "value", "unit"} <= set(evidence[0])


def test_missing_file_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["interpret", "no_such_export.csv"]) == 2
    assert "no_such_export.csv" in capsys.readouterr().err


def test_bad_guideline_is_a_usage_error() -> None:
    assert main(["interpret", SAMPLE, "--vitamin-d-guideline", "who"]) == 2


def test_python_api_matches_cli(capsys: pytest.CaptureFixture[str]) -> None:
    api = labinterp.interpret(SAMPLE)
    assert main(["interpret", SAMPLE, "--format", "csv"]) == 0
    cli = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(api) == len(cli)
    assert list(api["status"]) == list(cli["status"])


def test_unknown_patient_is_exit_2_and_ids_are_trimmed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["interpret", SAMPLE, "--patient", "DEMO-007", "--patient", "NOPE"]) == 2
    err = capsys.readouterr().err
    assert "1 of the 2 requested patient ids is in no row" in " ".join(err.split())
    assert "NOPE" not in err
    assert main(["interpret", SAMPLE, "--patient", " DEMO-007 "]) == 0
    assert "DEMO-007" in capsys.readouterr().out


def test_csv_neutralizes_formulas_and_keeps_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Text cells a spreadsheet would run as a formula get a leading quote; the grade
    stays a number and times are ISO text."""
    from benchmarks.make_export import HEADER

    evil = '"=HYPERLINK(""http://x"")",F,1970-01-01,2024-03-01 08:30,S1'
    rows = [
        f"{evil},Magnesium,19123-9,1.0,mg/dL,1.6-2.6,L,",
        f"{evil},Calcium,17861-6,7.5,mg/dL,8.6-10.3,L,",
    ]
    export = tmp_path / "evil.csv"
    export.write_text(HEADER + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    assert main(["interpret", str(export), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    df = pd.read_csv(io.StringIO(out), dtype={"patient_id": str})
    assert set(df["patient_id"]) == {'\'=HYPERLINK("http://x")'}
    assert pd.api.types.is_numeric_dtype(df["grade"])
    assert df["episode_start"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d").all()


def test_status_and_rule_filters(capsys: pytest.CaptureFixture[str]) -> None:
    every = labinterp.interpret(SAMPLE)
    args = ["interpret", SAMPLE, "--format", "csv", "--status", "fired", "--status", "suppressed"]
    assert main([*args, "--rule", "hypomagnesemia_hypokalemia"]) == 0
    captured = capsys.readouterr()
    shown = pd.read_csv(io.StringIO(captured.out))
    expected = every[
        every["status"].isin(["fired", "suppressed"])
        & (every["rule_id"] == "hypomagnesemia_hypokalemia")
    ]
    assert len(shown) == len(expected) > 0
    assert set(shown["status"]) == {"fired", "suppressed"}
    assert list(shown["patient_id"]) == list(expected["patient_id"])
    # the count on stderr still tells how many findings there were in all
    assert f"{len(every)} findings" in captured.err and f"{len(shown)} shown" in captured.err
    assert main(["interpret", SAMPLE, "--status", "firing"]) == 2
    assert main(["interpret", SAMPLE, "--rule", "hypomagnesemia"]) == 2
