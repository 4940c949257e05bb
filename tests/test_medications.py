"""A medication column naming vitamin D or a medicine that lowers Mg
(reference_ranges/medications.toml)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from labinterp.catalog import names_medicine
from labinterp.reading import read


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("Cholecalciferol 1000 IU daily", True),
        ("Calcium + D3", True),
        ("Vitamina D3 1000 UI", True),
        ("ergocalciferol 50000 units weekly", True),
        ("calcifediol 0.266 mg", True),
        ("vit. D 800", True),
        ("calcitriol; vitamin D3 2000 IU", True),  # calcitriol aside, D3 is there
        ("Vitamin D3 2000 IU; no vitamin D2", True),
        ("calcitriol 0.25 mcg", False),  # an active form: does not raise 25-OH D
        ("alfacalcidol", False),
        ("1,25-dihydroxyvitamin D 0.5 mcg", False),
        ("vitamin D analog paricalcitol", False),
        ("no vitamin D", False),
        ("Stopped vitamin D3 last month", False),
        # negated before the name, or after it in the same entry
        ("not taking vitamin D", False),
        ("no longer on vitamin D", False),
        ("patient refuses vitamin D", False),
        ("declined vitamin D", False),
        ("vitamin D3 (discontinued)", False),
        ("Vitamin D stopped", False),
        ("vitamin D3 held", False),
        ("Vit D3 discontinued", False),
        ("Vitamin D 50,000 IU - stopped 2023", False),
        ("Vitamin D: none", False),
        ("Vitamin D3, discontinued", False),
        ("vitamina D3 suspendida", False),
        # a negation in another entry leaves this one alone
        ("Vitamin D 50,000 IU weekly", True),
        ("Vitamin D3, omeprazole stopped", True),
        ("Cholecalciferol 1000 IU daily; metformin stopped", True),
        ("CD34", False),  # "D3" only as a whole word
        ("multivitamin", False),
        ("metformin 500 mg", False),
        ("", False),
    ],
)
def test_names_a_vitamin_d_supplement(text: str, named: bool) -> None:
    assert names_medicine("vitamin_d", text) is named


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("Omeprazole 20 mg daily", True),
        ("esomeprazole", True),
        ("Furosemide 40mg; metformin", True),
        ("hydrochlorothiazide 25 mg", True),
        ("Chlorthalidone", True),
        ("stopped omeprazole", False),
        ("no furosemide", False),
        ("omeprazole 20 mg (discontinued)", False),
        ("Furosemide held; omeprazole 20 mg", True),
        ("metformin 500 mg", False),
        ("Cholecalciferol 1000 IU", False),
        ("", False),
    ],
)
def test_names_a_medicine_that_lowers_magnesium(text: str, named: bool) -> None:
    assert names_medicine("mg_lowering", text) is named


def test_a_medication_column_is_found_by_its_header_and_flags_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "patient_id,collected_at,test,result,unit,Current Medications\n"
        "P1,2024-03-01 08:00,25-OH Vitamin D,12,ng/mL,Cholecalciferol 2000 IU\n"
        "P1,2024-03-01 08:00,Magnesium,1.5,mg/dL,calcitriol\n"
        "P2,2024-03-01 08:00,Magnesium,1.5,mg/dL,\n"
        "P3,2024-03-01 08:00,Magnesium,1.5,mg/dL,Omeprazole 20 mg; vitamin D3\n",
        encoding="utf-8",
    )
    res = read(path)
    assert res.rows_used == 4
    flags = res.results["quality"].fillna("").tolist()
    assert flags == ["vitamin_d_supplement", "", "", "vitamin_d_supplement;mg_lowering_medication"]


def test_check_says_how_many_results_name_a_vitamin_d_supplement(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import labinterp
    from labinterp.cli import main

    sample = str(Path(labinterp.__file__).parent / "sample_data" / "clinic_export.csv")
    assert main(["check", sample]) == 0
    out = capsys.readouterr().out
    assert 'medication = "medications"' in out
    assert re.search(
        r"Medicines, from the medication column:\n +results used while on vitamin D +2", out
    )
    assert re.search(r"while on a PPI or diuretic +1", out)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("Omeprazole 20 mg; Furosemide 40mg; omeprazole", ["omeprazole", "furosemide"]),
        ("stopped omeprazole; Pantoprazol 40 mg", ["pantoprazol"]),  # the stopped one is not
        ("HydroCHLOROthiazide 25 MG", ["hydrochlorothiazide"]),
        ("Metformin", []),
        ("", []),
    ],
)
def test_the_medicines_that_lower_mg_are_named(text: str, named: list[str]) -> None:
    from labinterp.catalog import medicines_named

    assert medicines_named("mg_lowering", text) == named
