"""Repeated results across exports: a row repeats any earlier row of its patient, test
and time (not only the first), numbers printed with fewer decimals are the same result as
their more precise copies, and two samples or two tests of one draw are two results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import labinterp
from labinterp.readers import duplicates
from labinterp.reading import deduplicate, read
from labinterp.schema import RESULTS, conform

HEADER = "patient_id,collected_at,specimen_id,test,loinc,result,unit\n"
DRAW = "P1,2024-03-01 08:00"


def write(tmp_path: Path, name: str, *rows: str) -> Path:
    path = tmp_path / name
    path.write_text(HEADER + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_copy_of_a_later_result_of_the_draw_is_a_duplicate(tmp_path: Path) -> None:
    """Two K results of one draw (4.0 and 4.2, no specimen ids to tell them apart) and the
    second one again in another export: the copy repeats the second, not the first."""
    a = write(tmp_path, "a.csv", f"{DRAW},,Potassium,,4.0,mmol/L", f"{DRAW},,Potassium,,4.2,mmol/L")
    b = write(tmp_path, "b.csv", f"{DRAW},,Potassium,,4.2,mmol/L")
    res = read([a, b])
    assert res.results["value_raw"].tolist() == ["4.0", "4.2"]
    (dup,) = res.rejected.itertuples()
    assert (dup.source_file, dup.reason, dup.detail) == (
        "b.csv",
        "duplicate",
        "same result as a.csv row 3; nothing to fix: that one is read",
    )


@pytest.mark.parametrize(
    ("first", "copy", "same"),
    [
        ("1.2,mg/dL", "1.15,mg/dL", True),  # 1.2 is anything from 1.15 to 1.25
        ("1.2,mg/dL", "1.25,mg/dL", True),
        ("1.1,mg/dL", "1.06,mg/dL", True),
        ("0.8,mg/dL", "0.84,mg/dL", True),
        ("1.2,mg/dL", "1.26,mg/dL", False),
        ("1.20,mg/dL", "1.15,mg/dL", False),  # two decimals: 1.195 to 1.205
        ("110,umol/L", "1.2,mg/dL", True),  # 1.2 mg/dL is 101.7-110.5 umol/L
        ("112,umol/L", "1.2,mg/dL", False),
    ],
)
def test_a_number_printed_with_fewer_decimals_is_the_same_result(
    tmp_path: Path, first: str, copy: str, same: bool
) -> None:
    """Synthea's CSV prints creatinine with one decimal, its FHIR with two: 1.2 and 1.15
    are one result. The rounding is judged in the unit each number is printed in."""
    a = write(tmp_path, "a.csv", f"{DRAW},,Creatinine,,{first}")
    b = write(tmp_path, "b.csv", f"{DRAW},,Creatinine,,{copy}")
    res = read([a, b])
    assert res.rows_used == (1 if same else 2)
    assert list(res.rejected["reason"]) == (["duplicate"] if same else [])


def test_the_rounding_of_a_value_in_another_unit_is_converted(tmp_path: Path) -> None:
    """Calcium 9 mg/dL stands for 8.5-9.5 mg/dL (2.12-2.37 mmol/L): 2.35 mmol/L may be
    the same result, 2.50 mmol/L (10.0 mg/dL) is not, though within 0.5 mmol/L."""
    a = write(tmp_path, "a.csv", f"{DRAW},,Calcium,,9,mg/dL")
    near = write(tmp_path, "b.csv", f"{DRAW},,Calcium,,2.35,mmol/L")
    far = write(tmp_path, "c.csv", f"{DRAW},,Calcium,,2.50,mmol/L")
    assert read([a, near]).rows_used == 1
    assert read([a, far]).rows_used == 2


def test_two_samples_of_one_time_are_two_results(tmp_path: Path) -> None:
    """Mg 2.0 of specimen S1 and of S2 at one time: two lab events, both kept; a copy of
    either without a specimen id, or with the same one, is a duplicate."""
    a = write(tmp_path, "a.csv", f"{DRAW},S1,Magnesium,,2.0,mg/dL")
    b = write(tmp_path, "b.csv", f"{DRAW},S2,Magnesium,,2.0,mg/dL")
    res = read([a, b])
    assert res.rows_used == 2 and len(res.rejected) == 0
    c = write(tmp_path, "c.csv", f"{DRAW},S2,Magnesium,,2.0,mg/dL", f"{DRAW},,Magnesium,,2.0,mg/dL")
    res = read([a, b, c])
    assert res.rows_used == 2
    assert res.rejected["detail"].tolist() == [
        "same result as b.csv row 2; nothing to fix: that one is read",
        "same result as a.csv row 2; nothing to fix: that one is read",
    ]


def test_two_tests_of_one_draw_are_two_results(tmp_path: Path) -> None:
    """Whole-blood K (6298-4) and serum K (2823-3) of one draw, both 3.8: two results, as
    two exports of the same lab keep each test's code; by name alike where neither has a
    LOINC code. One LOINC code and one name alone: the same result, as before."""
    whole = write(tmp_path, "a.csv", f"{DRAW},,Potassium,6298-4,3.8,mmol/L")
    serum = write(tmp_path, "b.csv", f"{DRAW},,Potassium,2823-3,3.8,mmol/L")
    copy = write(tmp_path, "c.csv", f"{DRAW},,Potassium,2823-3,3.8,mmol/L")
    res = read([whole, serum, copy])
    assert res.results["source_file"].tolist() == ["a.csv", "b.csv"]
    assert res.rejected["detail"].tolist() == [
        "same result as b.csv row 2; nothing to fix: that one is read"
    ]
    named = write(tmp_path, "d.csv", f'{DRAW},,"Potassium, Whole Blood",,3.8,mmol/L')
    plain = write(tmp_path, "e.csv", f"{DRAW},,Potassium,,3.8,mmol/L")
    assert read([named, plain]).rows_used == 2
    assert read([whole, plain]).rows_used == 1


def test_one_result_in_two_units_under_two_codes_is_one_result(tmp_path: Path) -> None:
    """A survey's calcium in mg/dL and mmol/L columns (LBXSCA, LBDSCASI), or a copy coded
    with the LOINC of moles (2000-8) beside one of mass (17861-6): the codes differ with
    the unit, not the test."""
    a = write(tmp_path, "a.csv", f"{DRAW},,LBXSCA,17861-6,9.2,mg/dL")
    b = write(tmp_path, "b.csv", f"{DRAW},,LBDSCASI,2000-8,2.3,mmol/L")
    res = read([a, b])
    assert res.rows_used == 1 and list(res.rejected["reason"]) == ["duplicate"]


def test_two_samples_that_disagree_are_both_kept_and_flagged(tmp_path: Path) -> None:
    """Different Mg in two samples of one time: both kept, and a finding citing either
    says the results conflict (which one a rule used depends on row order)."""
    a = write(
        tmp_path, "a.csv", f"{DRAW},S1,Magnesium,,0.5,mmol/L", f"{DRAW},S1,Calcium,,1.9,mmol/L"
    )
    b = write(tmp_path, "b.csv", f"{DRAW},S2,Magnesium,,0.9,mmol/L")
    res = read([a, b])
    assert res.rows_used == 3
    findings = labinterp.interpret(res)
    mg_ca = findings[findings["rule_id"] == "hypomagnesemia_hypocalcemia"]
    assert len(mg_ca) and mg_ca["caveats"].str.contains("conflicting_results").all()


def test_deduplicate_compares_every_earlier_row_of_a_run() -> None:
    """`deduplicate` (the audit's step) on one frame: the third row repeats the second."""
    rows = [("a.csv", 2, "4.0"), ("a.csv", 3, "4.2"), ("b.csv", 2, "4.2")]
    frame = conform(
        pd.DataFrame(
            {
                "source_file": [f for f, _, _ in rows],
                "source_row": pd.array([r for _, r, _ in rows], dtype="Int64"),
                "patient_id": "P1",
                "collected_at": pd.Timestamp("2024-03-01 08:00"),
                "analyte": "potassium",
                "test_label": "Potassium",
                "value_raw": [v for _, _, v in rows],
                "value_reported": [float(v) for _, _, v in rows],
                "value": [float(v) for _, _, v in rows],
                "unit_reported": "mmol/L",
                "comparator": "",
                "range_origin": "bundled",
            }
        ),
        RESULTS,
    )
    kept, dropped = deduplicate(frame)
    assert kept["value"].tolist() == [4.0, 4.2]
    assert dropped["detail"].tolist() == [
        "same result as a.csv row 3; nothing to fix: that one is read"
    ]


def test_repeats_match_the_rule_written_out_per_pair() -> None:
    """duplicates.repeats against the rule compared pair by pair: a row repeats the
    earliest row of its group and time it is the same result as."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(1, 50))
        value = rng.choice([1.0, 1.01, 1.02, 1.04, 1.15, 1.2, 1.25, 1.3, -2.0, -2.03, np.nan], n)
        rows = duplicates.Rows(
            group=rng.integers(0, 3, n),
            time=rng.integers(0, 3, n),
            file=rng.integers(0, 2, n),
            row=rng.permutation(n),
            value=value,
            text=np.where(np.isnan(value), rng.integers(0, 3, n), 0),
            no_text=0,
            comparator=rng.integers(0, 2, n),
            rank=rng.integers(0, 2, n),
            rounding=rng.choice([0.0, 0.005, 0.05], n),
            specimen=rng.integers(-1, 2, n),
            loinc=rng.integers(-1, 2, n),
            name=rng.integers(-1, 2, n),
            unit=rng.integers(-1, 2, n),
        )
        dups, firsts = duplicates.repeats(rows)
        assert dict(zip(dups.tolist(), firsts.tolist(), strict=True)) == _repeats_by_pairs(rows)
        assert list(dups) == sorted(dups, key=lambda i: _order(rows, i))


def _order(rows: duplicates.Rows, i: int) -> tuple[int, ...]:
    assert rows.rank is not None
    return (rows.group[i], rows.time[i], rows.rank[i], rows.file[i], rows.row[i])


def _repeats_by_pairs(rows: duplicates.Rows) -> dict[int, int]:
    assert rows.rounding is not None and rows.specimen is not None
    assert rows.loinc is not None and rows.name is not None and rows.unit is not None
    order = sorted(range(len(rows.group)), key=lambda i: _order(rows, i))
    out = {}
    for at, j in enumerate(order):
        for i in order[:at]:
            if _order(rows, i)[:2] != _order(rows, j)[:2]:
                continue
            vi, vj = rows.value[i], rows.value[j]
            if np.isnan(vi) or np.isnan(vj):
                alike = np.isnan(vi) and np.isnan(vj) and rows.text[i] == rows.text[j] != 0
            else:
                rounding = max(rows.rounding[i], rows.rounding[j]) * (1 + 1e-9)
                alike = abs(vj - vi) <= max(duplicates.SAME_NUMBER * abs(vi), rounding)

            other_test = _differ(rows.loinc, i, j) or (
                rows.loinc[i] < 0 and rows.loinc[j] < 0 and _differ(rows.name, i, j)
            )
            one_unit = rows.unit[i] >= 0 and rows.unit[i] == rows.unit[j]
            if (
                alike
                and rows.comparator[i] == rows.comparator[j]
                and not _differ(rows.specimen, i, j)
                and not (other_test and one_unit)
            ):
                out[j] = i
                break
    return out


def _differ(codes: np.ndarray, i: int, j: int) -> bool:
    return bool(codes[i] >= 0 and codes[j] >= 0 and codes[i] != codes[j])


def test_a_long_run_of_copies_is_cheap() -> None:
    """200,000 undated copies of a few values for one patient: one run, compared alike
    first and by neighbouring values, not pair by pair."""
    n = 200_000
    rng = np.random.default_rng(1)
    rows = duplicates.Rows(
        group=np.zeros(n, dtype=np.int64),
        time=np.zeros(n, dtype=np.int64),
        file=np.zeros(n, dtype=np.int64),
        row=np.arange(n),
        value=rng.choice(np.round(np.linspace(0.5, 1.5, 101), 2), n),
        text=np.zeros(n, dtype=np.int64),
        no_text=0,
        comparator=np.zeros(n, dtype=np.int64),
    )
    dups, firsts = duplicates.repeats(rows)
    kept = np.setdiff1d(np.arange(n), dups)
    assert len(kept) < 101 and (firsts < dups).all()


@pytest.mark.parametrize(
    ("text", "half"),
    [
        ("4.20", 0.005),
        ("<0.5", 0.05),
        ("7", 0.5),
        ("1.2E-3", 0.00005),
        ("1,5", 0.05),
        ("GREATER THAN 10", 0.5),
        ("See comments", np.nan),
    ],
)
def test_printed_rounding(text: str, half: float) -> None:
    (got,) = duplicates.printed_rounding([text])
    assert got == pytest.approx(half, nan_ok=True)


def test_a_result_printed_in_two_columns_of_a_row_names_the_column_kept(tmp_path: Path) -> None:
    """A wide export (NHANES) prints total Ca in mg/dL (LBXSCA) and mmol/L (LBDSCASI) on
    one row: the repeat names the column kept, not its own row, whether the file is read
    alone or in an audit (whose buckets are deduplicated after reading)."""
    path = tmp_path / "biopro.csv"
    path.write_text("SEQN,LBXSCA,LBDSCASI\n93705,9.2,2.3\n", encoding="utf-8")
    expected = ["same result as column LBXSCA of the same row; nothing to fix: that one is read"]
    assert read(path).rejected["detail"].tolist() == expected
    labinterp.audit(path, tmp_path / "audit")
    rejected = pd.read_csv(tmp_path / "audit" / "rejected_rows.csv", dtype=str)
    assert rejected["detail"].tolist() == expected
