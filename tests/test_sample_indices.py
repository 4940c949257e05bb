"""Sample-quality indices (hemolysis, icterus, lipemia) reported as rows of their own: a
raised one marks the other results of its sample, as a comment would (CLINICAL.md sec. 5:
hemolysis "by comment, flag or index"); the index rows are accounted for, not interpreted."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from labinterp.interpret import interpret
from labinterp.reading import ReadResult, read

HEADER = "patient,specimen_id,collected,test,result,unit,range,flag\n"


def read_rows(tmp_path: Path, body: str) -> ReadResult:
    path = tmp_path / "export.csv"
    path.write_text(HEADER + body, encoding="utf-8")
    res = read(path)
    assert res.rows_in == res.rows_used + res.rows_rejected
    return res


def quality_by_day(res: ReadResult) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for _, r in res.results.iterrows():
        out.setdefault(r["collected_at"].day, set()).update(str(r["quality"]).split(";"))
    return out


@pytest.mark.parametrize(
    ("index_row", "hemolyzed"),
    [
        ("Hemolysis Index,120,,0-50,", True),  # above the printed limit
        ("Hemolysis Index,20,,0-50,", False),  # within it
        ("Hemolysis Index,120,,,H", True),  # no limit, flagged high
        ("H-Index,120,,,", False),  # no limit, no flag: not judged
        ("Hemolysis,2+,,,", True),  # worded
        ("HEMOLYSIS,Negative,,,", False),
        ("Hemolytic index,>100,,0-50,", True),
        ("Hemolytic index,<10,,0-50,", False),
        ("Índice de hemólisis,Moderado,,,", True),  # Spanish, with accents
    ],
)
def test_a_raised_hemolysis_index_marks_its_sample(
    tmp_path: Path, index_row: str, hemolyzed: bool
) -> None:
    res = read_rows(
        tmp_path,
        "p1,S1,2024-03-01 08:00,Potassium,6.2,mmol/L,3.5-5.1,H\n"
        "p1,S1,2024-03-01 08:00,Magnesium,0.8,mmol/L,0.70-1.05,\n"
        f"p1,S1,2024-03-01 08:00,{index_row}\n"
        "p1,S2,2024-03-02 08:00,Potassium,5.9,mmol/L,3.5-5.1,H\n",
    )
    marks = quality_by_day(res)
    assert ("hemolyzed" in marks[1]) == hemolyzed
    assert "hemolyzed" not in marks[2]  # another sample
    (reason,) = res.rejected["reason"]
    assert reason == "sample_quality_index"  # accounted for, never read as a result
    assert ("marks as raised" in res.rejected["detail"].iloc[0]) == hemolyzed


def test_the_sample_is_the_same_time_or_the_same_specimen_id(tmp_path: Path) -> None:
    res = read_rows(
        tmp_path,
        # same specimen id, index printed without its time
        "p1,S1,2024-03-01 08:00,Potassium,6.2,mmol/L,3.5-5.1,\n"
        "p1,S1,,Hemolysis Index,300,,0-50,\n"
        # same time, no specimen ids; another patient at that time is not touched
        "p1,,2024-03-02 08:00,Potassium,6.0,mmol/L,3.5-5.1,\n"
        "p1,,2024-03-02 08:00,Hemolysis Index,300,,0-50,\n"
        "p2,,2024-03-02 08:00,Potassium,6.0,mmol/L,3.5-5.1,\n",
    )
    marked = {
        (r["patient_id"], r["collected_at"].day): "hemolyzed" in str(r["quality"])
        for _, r in res.results.iterrows()
    }
    assert marked == {("p1", 1): True, ("p1", 2): True, ("p2", 2): False}


def test_icterus_and_lipemia_indices_give_their_flags(tmp_path: Path) -> None:
    res = read_rows(
        tmp_path,
        "p1,S1,2024-03-01 08:00,Magnesium,0.8,mmol/L,0.70-1.05,\n"
        "p1,S1,2024-03-01 08:00,Icterus Index,40,,0-20,\n"
        "p1,S1,2024-03-01 08:00,Lipemia Index,gross,,,\n",
    )
    assert set(res.results["quality"].iloc[0].split(";")) == {"icteric", "lipemic"}


def test_a_normal_potassium_of_a_hemolyzed_sample_cannot_rule_out_a_low_one(
    tmp_path: Path,
) -> None:
    # low Mg with a K in range: not fired; with a raised hemolysis index on the sample, the
    # K may be falsely high, so the pattern cannot be ruled out (CLINICAL.md sec. 5)
    draw = (
        "p1,S1,2024-03-01 08:00,Magnesium,0.45,mmol/L,0.70-1.05,\n"
        "p1,S1,2024-03-01 08:00,Potassium,3.8,mmol/L,3.5-5.1,\n"
    )

    def p3(body: str) -> pd.Series:
        path = tmp_path / "export.csv"
        path.write_text(HEADER + body, encoding="utf-8")
        f = interpret(path)
        return f[f["rule_id"] == "hypomagnesemia_hypokalemia"].iloc[0]

    assert p3(draw)["status"] == "not_fired"
    marked = p3(draw + "p1,S1,2024-03-01 08:00,Hemolysis Index,250,,0-50,\n")
    assert marked["status"] == "indeterminate" and "hemolyzed" in marked["caveats"]


def test_a_sample_split_by_a_batch_boundary_is_read_in_one_batch(tmp_path: Path) -> None:
    # the audit reads large files in batches; the index row of a sample falls in the next
    # batch from its results unless each draw is kept whole
    import io

    from labinterp.reading import iter_batches

    text = (
        HEADER
        + "p0,S0,2024-03-01 07:00,Magnesium,0.8,mmol/L,0.70-1.05,\n"
        + "p1,S1,2024-03-01 08:00,Potassium,6.2,mmol/L,3.5-5.1,H\n"
        + "p1,S1,2024-03-01 08:00,Magnesium,0.8,mmol/L,0.70-1.05,\n"
        + "p1,S1,2024-03-01 08:00,Hemolysis Index,120,,0-50,H\n"
        + "p2,S2,2024-03-01 09:00,Potassium,4.2,mmol/L,3.5-5.1,\n"
    )
    path = tmp_path / "export.parquet"  # Parquet batches are exactly batch_rows long
    pd.read_csv(io.StringIO(text), dtype=str).to_parquet(path)
    batches = list(iter_batches(path, batch_rows=2))
    assert sum(b.rows_in for b in batches) == 5
    rows = pd.concat([b.results for b in batches])
    marked = dict(zip(rows["source_row"], rows["quality"].fillna(""), strict=True))
    assert "hemolyzed" in marked[2] and "hemolyzed" in marked[3]  # p1's potassium and Mg
    assert "hemolyzed" not in marked[1] and "hemolyzed" not in marked[5]
    assert sorted(rows["source_row"]) == [1, 2, 3, 5]
