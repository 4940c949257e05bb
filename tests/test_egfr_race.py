"""eGFR printed once without and once with a race coefficient for one draw
(reference_ranges/egfr_race.toml): the line without race is read, the other is the same
measurement and is rejected as `race_adjusted_egfr`."""

from __future__ import annotations

from pathlib import Path

import pytest

from labinterp.interpret import interpret_results
from labinterp.reading import read

HEADER = "patient_id,collected_at,test,loinc,result,unit,range,specimen_id\n"
LOW_MG = "P1,2024-03-01 08:00,Magnesium,19123-9,1.2,mg/dL,1.7-2.4,S1\n"


def export(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "export.csv"
    path.write_text(HEADER + LOW_MG + "".join(lines), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("free", "adjusted", "unit"),
    [
        ("eGFR Non-Afr. American", "eGFR African American", "mL/min/1.73m2"),
        ("eGFR If NonAfricn Am", "eGFR If Africn Am", "mL/min/1.73"),
        ("eGFR (non-African American)", "eGFR (African American)", "mL/min/1.73m2"),
        ("GFR, Estimated - Non-Black", "GFR, Estimated - Black", "mL/min/1.73 m2"),
        ("eGFR non-AA", "eGFR AA", "mL/min/1.73m2"),
        ("Est GFR for non-African Americans", "Est GFR for African Americans", "mL/min/1.73m2"),
    ],
)
@pytest.mark.parametrize("adjusted_first", [False, True])
def test_the_line_without_race_is_read_and_the_other_rejected(
    tmp_path: Path, free: str, adjusted: str, unit: str, adjusted_first: bool
) -> None:
    lines = [
        f'P1,2024-03-01 08:00,"{free}",,55,{unit},>59,S1\n',
        f'P1,2024-03-01 08:00,"{adjusted}",,67,{unit},>59,S1\n',
    ]
    res = read(export(tmp_path, *(reversed(lines) if adjusted_first else lines)))
    egfr = res.results[res.results["analyte"] == "egfr"]
    assert egfr["value"].tolist() == [55.0]
    assert res.rejected["reason"].tolist() == ["race_adjusted_egfr"]
    findings = interpret_results(res.results)
    ckd = findings[findings["rule_id"] == "ckd_context"].iloc[0]
    # one eGFR, not two "conflicting results" of which the later in the file would count
    assert (ckd["status"], ckd["tier"]) == ("fired", "G3a")
    assert "conflicting_results" not in ckd["caveats"]


@pytest.mark.parametrize(("free", "adjusted"), [("48642-3", "48643-1"), ("88294-4", "88293-6")])
def test_by_loinc_code_alone(tmp_path: Path, free: str, adjusted: str) -> None:
    res = read(
        export(
            tmp_path,
            f"P1,2024-03-01 08:00,eGFR,{adjusted},67,mL/min/1.73m2,>59,S1\n",
            f"P1,2024-03-01 08:00,eGFR,{free},55,mL/min/1.73m2,>59,S1\n",
        )
    )
    assert res.results.loc[res.results["analyte"] == "egfr", "value"].tolist() == [55.0]
    assert res.rejected["reason"].tolist() == ["race_adjusted_egfr"]


def test_a_race_adjusted_line_alone_is_read_and_flagged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from labinterp.cli import main

    path = export(
        tmp_path,
        "P1,2024-03-01 08:00,eGFR African American,,67,mL/min/1.73m2,>59,S1\n",
        # the line without race is of another draw: it does not replace this one
        "P1,2024-03-09 08:00,eGFR Non-Afr. American,,58,mL/min/1.73m2,>59,S2\n",
    )
    res = read(path)
    egfr = res.results[res.results["analyte"] == "egfr"]
    assert egfr["value"].tolist() == [67.0, 58.0]
    assert egfr["quality"].fillna("").tolist() == ["race_adjusted_egfr", ""]
    assert res.rows_rejected == 0
    assert main(["check", str(path)]) == 0
    assert "1 eGFR results used were computed with a race coefficient" in capsys.readouterr().out


def test_the_same_specimen_pairs_lines_printed_at_different_times(tmp_path: Path) -> None:
    res = read(
        export(
            tmp_path,
            "P1,2024-03-01 08:00,eGFR Non-Afr. American,,55,mL/min/1.73m2,>59,S1\n",
            "P1,2024-03-01 08:05,eGFR African American,,67,mL/min/1.73m2,>59,S1\n",
        )
    )
    assert res.rejected["reason"].tolist() == ["race_adjusted_egfr"]


@pytest.mark.parametrize(
    "name", ["Magnesium African American", "Black Pepper IgE", "Calcium, Non-Black"]
)
def test_race_words_on_another_test_change_nothing(tmp_path: Path, name: str) -> None:
    res = read(export(tmp_path, f'P1,2024-03-01 08:00,"{name}",,2.0,mg/dL,,S1\n'))
    assert res.rejected["reason"].tolist() == ["out_of_scope"]
