"""Test names as LIS and EHR exports print them, beyond the catalog's spellings: read by
dropping words that never change the test (reference_ranges/test_names.toml), or by the
parts of a LOINC display name; never by likeness. A name that says urine, red cells, a
ratio or another test stays unread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labinterp.cli import main
from labinterp.reading import read
from labinterp.test_names import read_test_name, unit_in_test_name


@pytest.mark.parametrize(
    ("name", "analyte"),
    [
        ("CALCIUM, TOTAL, SERUM", "calcium"),
        ("Magnesium, Serum or Plasma", "magnesium"),
        ("Magnesium Lvl", "magnesium"),
        ("Potassium Level", "potassium"),
        ("POTASSIUM (K)", "potassium"),
        ("Phosphorus, Serum", "phosphate"),
        ("VITAMIN D, 25-HYDROXY, TOTAL", "vitamin_d_25oh"),
        ("Vitamin D 25 Hydroxy Total (D2+D3)", "vitamin_d_25oh"),
        ("25-OH Vitamin D (Total)", "vitamin_d_25oh"),
        ("VITAMIN D,25-OH,TOTAL,IA", "vitamin_d_25oh"),  # the method named after it
        ("25-OH Vitamin D (LC-MS/MS)", "vitamin_d_25oh"),
        ("Magnesium, serum (ICP-MS)", "magnesium"),
        ("Calcium, Ionized (iCa)", "calcium_ionized"),
        ("Calcium (Corrected)", "calcium_corrected"),  # a bracketed word that matters stays
        ("eGFR (CKD-EPI 2021)", "egfr"),
        ("C-Reactive Protein (CRP)", "crp"),
        ("Magnesium (mg/dL)", "magnesium"),
        ("Potassium (mmol/L) Serum", "potassium"),
        ("Nivel de magnesio", "magnesium"),
        ("Calcio iónico (sangre)", "calcium_ionized"),
        ("Magnesium [Mass/volume] in Serum or Plasma", "magnesium"),
        ("Calcium.ionized [Moles/volume] in Blood", "calcium_ionized"),
        ("Parathyrin.intact [Mass/volume] in Serum or Plasma", "pth"),
        (
            "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum, "
            "Plasma or Blood by Creatinine-based formula (CKD-EPI 2021)",
            "egfr",
        ),
        # names that are not a blood test of the catalog, or not the same test
        ("Calcium, Urine", None),
        ("Calcium (Urine)", None),
        ("Calcium/Creatinine Ratio, Urine", None),
        ("Magnesium, RBC", None),  # red-cell magnesium: another test, another range
        ("Magnesium, Ionized", None),
        ("Mg++", None),
        ("25-OH Vitamin D (D2)", None),  # one fraction, not the total
        ("Vitamin D, 1,25-Dihydroxy", None),
        ("Calcium Score", None),
        ("Calcium (K)", None),  # the brackets name another test
        ("Calcium, Ionized (Calculated)", None),  # an estimate from the total, not measured
        ("Calcium.ionized [Moles/volume] in Serum or Plasma by calculation", None),
        (
            "Calcium.ionized [Moles/volume] in Blood by Ion-selective membrane electrode",
            "calcium_ionized",
        ),
        ("Creatinine Clearance", None),
        ("eGFR (non-African American)", None),
        ("Serum", None),
        ("Calcium [Moles/volume] in Urine", None),
        ("Magnesium [Mass/time] in 24 hour Urine", None),
        ("Magnesium [Moles/volume] in Red Blood Cells", None),
        ("25-Hydroxyvitamin D3 [Mass/volume] in Serum or Plasma", None),
    ],
)
def test_test_names(name: str, analyte: str | None) -> None:
    assert read_test_name(name) == analyte


def test_the_unit_printed_in_the_name(tmp_path: Path) -> None:
    assert unit_in_test_name("Magnesium (mg/dL)") == "mg/dL"
    assert unit_in_test_name("Calcium (Corrected)") == ""
    path = tmp_path / "export.csv"
    path.write_text(
        "patient,date,test,result,unit\n"
        "p1,2024-03-01 08:00,Magnesium (mg/dL),1.1,\n"  # the name's unit
        "p1,2024-03-01 09:00,Magnesium (mg/dL),1.1,mg/dl\n"  # the same, spelt otherwise
        "p1,2024-03-01 10:00,Magnesium (mg/dL),0.45,mmol/L\n",  # a contradiction
        encoding="utf-8",
    )
    res = read(path)
    assert list(res.results["unit_reported"]) == ["mg/dL", "mg/dl"]
    assert list(res.results["value_reported"]) == [1.1, 1.1]
    (row,) = res.rejected.itertuples()
    assert row.reason == "unit_conflict" and "test's name says 'mg/dL'" in row.detail


def test_check_lists_the_names_it_read_by_their_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "patient,date,test,result,unit\n"
        'p1,2024-03-01 08:00,"CALCIUM, TOTAL, SERUM",8.1,mg/dL\n'
        "p1,2024-03-01 08:00,Magnesium,1.1,mg/dL\n"  # a catalog spelling: not listed
        "p1,2024-03-01 08:00,Mg++,0.4,mmol/L\n"  # not read: listed with the tests not read
        "p1,2024-03-01 08:00,Sodium,140,mmol/L\n"
        "p1,2024-03-02 08:00,Sodium,141,mmol/L\n",
        encoding="utf-8",
    )
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "'CALCIUM, TOTAL, SERUM' -> calcium (1 row)" in out
    assert "'Magnesium'" not in out
    assert "Tests not read (out_of_scope), most rows first: 'Sodium' 2, 'Mg++' 1." in out
    assert main(["check", str(path), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["names_read_by_words"] == [
        {"test": "CALCIUM, TOTAL, SERUM", "analyte": "calcium", "rows": 1}
    ]
    assert info["tests_not_read"] == [{"test": "Sodium", "rows": 2}, {"test": "Mg++", "rows": 1}]


def test_a_mapping_file_overrides_a_reading(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "patient,date,test,result,unit\np1,2024-03-01 08:00,Calcium (Corrected),2.0,mmol/L\n",
        encoding="utf-8",
    )
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(
        '[columns]\npatient_id = "patient"\ncollected_at = "date"\ntest_name = "test"\n'
        'value_raw = "result"\nunit_raw = "unit"\n[tests]\n"Calcium (Corrected)" = "calcium"\n',
        encoding="utf-8",
    )
    assert list(read(path).results["analyte"]) == ["calcium_corrected"]
    assert list(read(path, mapping=mapping).results["analyte"]) == ["calcium"]


def test_vitamin_d_components_give_way_to_the_total_of_their_draw(tmp_path: Path) -> None:
    """D2 and D3 beside their total: the total is read (D3 kept would be a second, lower
    vitamin D at the same time). D2 with D3 and no total: both are kept, each as its own
    component in nmol/L by its own factor (CLINICAL.md sec. 1: D2 x 2.423, D3 x 2.496),
    for the engine to sum. A D3 alone, by code or name, is the patient's vitamin D
    (CLINICAL.md sec. 1); a D2 alone is not."""
    path = tmp_path / "export.csv"
    path.write_text(
        "patient_id,collected_at,test,loinc,value,unit\n"
        "A,2024-01-02 08:00,25-OH Vitamin D3,,18,ng/mL\n"
        "A,2024-01-02 08:00,25-OH Vitamin D2,,4,ng/mL\n"
        "A,2024-01-02 08:00,25-OH Vitamin D Total,,22,ng/mL\n"
        "B,2024-01-02 08:00,Vit D,1990-1,30,ng/mL\n"
        "B,2024-01-02 08:00,Vit D,1989-3,11,ng/mL\n"
        "C,2024-01-02 08:00,25-Hydroxyvitamin D3,,11,ng/mL\n"
        "D,2024-01-02 08:00,25(OH)D3,1989-3,12,ng/mL\n"
        "E,2024-01-02 08:00,25-OH Vitamin D2,,11,ng/mL\n"
    )
    res = read(path)
    read_as = res.results[["patient_id", "analyte", "value_reported"]].values.tolist()
    assert read_as == [
        ["A", "vitamin_d_25oh", 22.0],
        ["B", "vitamin_d2_25oh", 30.0],
        ["B", "vitamin_d3_25oh", 11.0],
        ["C", "vitamin_d_25oh", 11.0],
        ["D", "vitamin_d_25oh", 12.0],
    ]
    b = res.results[res.results["patient_id"] == "B"]
    assert b["value"].tolist() == pytest.approx([30 * 2.423, 11 * 2.496], rel=1e-3)
    assert (res.rejected["reason"] == "vitamin_d_component").sum() == 3
    assert sorted(res.rejected["source_row"]) == [2, 3, 9]


def test_vitamin_d_components_without_a_number_are_not_summed(tmp_path: Path) -> None:
    """D2 and D3 of a draw without a total are summed only when every component row has a
    number: a text D2, or a D2 rejected for its unit, leaves its D3 rejected too (D3 alone
    would understate the patient's vitamin D), with a reason that says why; each row is
    accounted for once."""
    path = tmp_path / "export.csv"
    path.write_text(
        "patient_id,collected_at,specimen_id,test,loinc,value,unit\n"
        "A,2024-01-02 08:00,,25-OH Vitamin D3,,18,ng/mL\n"
        "A,2024-01-02 08:00,,25-OH Vitamin D2,,See comment,ng/mL\n"
        "B,2024-01-02 08:00,,25-OH Vitamin D3,,18,ng/mL\n"
        "B,2024-01-02 08:00,,25-OH Vitamin D2,,4,furlongs\n"
        # one draw by its specimen id, the D2 printed a minute later
        "C,2024-01-02 08:00,S1,25-OH Vitamin D3,,30,nmol/L\n"
        "C,2024-01-02 08:01,S1,25-OH Vitamin D2,,<10,nmol/L\n"
    )
    res = read(path)
    assert res.results[["patient_id", "analyte"]].values.tolist() == [
        ["C", "vitamin_d3_25oh"],
        ["C", "vitamin_d2_25oh"],
    ]
    why = dict(zip(res.rejected["source_row"], res.rejected["reason"], strict=True))
    assert why == {
        2: "vitamin_d_not_summed",
        3: "vitamin_d_not_summed",
        4: "vitamin_d_not_summed",
        5: "unknown_unit",
    }
    details = res.rejected.set_index("source_row")["detail"]
    assert "not summed" in details[2] and "not summed" in details[4]
    assert len(res.results) + len(res.rejected) == 6


def test_vitamin_d_components_are_summed_only_as_one_pair_of_one_sample(tmp_path: Path) -> None:
    """Two D2 lines beside one D3 give no single total (which D2 is summed would depend on
    row order), nor do parts on different specimen ids of one time: every such part is
    rejected as not summed, whatever the order of the rows."""
    rows = [
        "A,2024-01-02 08:00,,25-OH Vitamin D3,,12,ng/mL",
        "A,2024-01-02 08:00,,25-OH Vitamin D2,,3,ng/mL",
        "A,2024-01-02 08:00,,25-OH Vitamin D2,,30,ng/mL",
        "B,2024-01-02 08:00,S1,25-OH Vitamin D3,,12,ng/mL",
        "B,2024-01-02 08:00,S2,25-OH Vitamin D2,,3,ng/mL",
        "C,2024-01-02 08:00,S3,25-OH Vitamin D3,,12,ng/mL",
        "C,2024-01-02 08:05,S3,25-OH Vitamin D2,,3,ng/mL",
    ]
    header = "patient_id,collected_at,specimen_id,test,loinc,value,unit\n"
    for order in (rows, rows[::-1]):
        path = tmp_path / "export.csv"
        path.write_text(header + "\n".join(order) + "\n")
        res = read(path)
        not_summed = res.rejected[res.rejected["reason"] == "vitamin_d_not_summed"]
        assert sorted(not_summed["patient_id"]) == ["A", "A", "A", "B", "B"]
        # one sample by its specimen id, a few minutes apart: summed by the engine
        assert sorted(res.results["patient_id"]) == ["C", "C"]
        assert len(res.results) + len(res.rejected) == len(rows)


def test_a_calculated_ionized_calcium_is_not_read_by_code_or_by_name(tmp_path: Path) -> None:
    """LOINC 13959-2, "Calcium.ionized ... by calculation", is an estimate from the total
    calcium: rejected as out of scope saying so, whatever name comes with the code. The
    measured ionized calcium (1994-3, or a name saying its electrode) is read."""
    path = tmp_path / "export.csv"
    path.write_text(
        "patient_id,collected_at,test,loinc,value,unit\n"
        "A,2024-01-02 08:00,Calcium.ionized [Moles/volume] in Serum or Plasma by calculation,"
        "13959-2,1.10,mmol/L\n"
        '"A",2024-01-02 08:00,"Calcium, ionized",13959-2,1.10,mmol/L\n'
        "A,2024-01-02 08:00,,13959-2,1.10,mmol/L\n"
        "A,2024-01-03 08:00,Calcium.ionized [Moles/volume] in Serum or Plasma by calculation,"
        ",1.10,mmol/L\n"
        '"A",2024-01-04 08:00,"Calcium, Ionized (Calculated)",,1.10,mmol/L\n'
        '"A",2024-01-05 08:00,"Calcium, ionized",1994-3,1.12,mmol/L\n'
        "A,2024-01-06 08:00,Calcium.ionized [Moles/volume] in Blood by Ion-selective membrane"
        " electrode (ISE),,1.13,mmol/L\n",
        encoding="utf-8",
    )
    res = read(path)
    assert res.results["analyte"].tolist() == ["calcium_ionized"] * 2
    assert res.results["value_reported"].tolist() == [1.12, 1.13]
    assert set(res.rejected["reason"]) == {"out_of_scope"} and len(res.rejected) == 5
    assert res.rejected["detail"].str.startswith("a calculated ionized calcium: an estimate").all()
