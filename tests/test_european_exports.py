"""German and French lab exports, read as the Spanish ones are (test_spanish_exports.py):
their headers, test names, decimal commas, day-first dates and month names, statuses,
specimens, sex words and medicines, with or without accents."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from labinterp.interpret import interpret
from labinterp.reading import ReadResult, read

GERMAN = (
    "Patientennummer;Geschlecht;Entnahmedatum;Untersuchung;Ergebnis;Einheit;Referenzbereich;"
    "Befundstatus;Probenmaterial;Bemerkung;Medikation\n"
    "4711;weiblich;01.03.2024 08:15;Magnesium;0,52;mmol/l;0,70 - 1,05;endgültig;Serum;;"
    "Pantoprazol 40 mg\n"
    "4711;weiblich;01.03.2024 08:15;Calcium;1,90;mmol/l;2,15 - 2,55;endgültig;Serum;;\n"
    "4711;weiblich;01.03.2024 08:15;Kalium;3,0;mmol/l;3,5 - 5,1;endgültig;Serum;;\n"
    "4711;weiblich;01.03.2024 08:15;Albumin;41;g/l;35 - 52;endgültig;Serum;;\n"
    "4711;weiblich;01.03.2024 08:15;Parathormon intakt;;pg/ml;15 - 65;storniert;Serum;;\n"
    "4711;weiblich;02.03.2024 09:00;Calcium;3,1;mmol/l;2,5 - 7,5;endgültig;Urin;;\n"
    "4711;weiblich;02.03.2024 09:00;Kalium;6,8;mmol/l;3,5 - 5,1;vorläufig;Serum;hämolytisch;\n"
    "4711;weiblich;13.03.2024 09:00;Kreatinin;88;µmol/l;59 - 104;endgültig;Serum;;\n"
)
FRENCH = (
    "N° patient;Sexe;Date de prélèvement;Analyse;Résultat;Unité;Valeurs de référence;Statut;"
    "Nature du prélèvement;Commentaire\n"
    "A12;Féminin;1 mars 2024 08:15;Magnésium;0,52;mmol/L;0,70 - 1,05;Validé;Sang;\n"
    "A12;Féminin;1 mars 2024 08:15;Calcium ionisé;0,98;mmol/L;1,15 - 1,32;Validé;Sang;\n"
    "A12;Féminin;1 mars 2024 08:15;Potassium;3,0;mmol/L;3,5 - 5,1;Validé;Sang;\n"
    "A12;Féminin;1 mars 2024 08:15;Phosphore;0,61;mmol/L;0,81 - 1,45;Annulé;Sang;\n"
    "A12;Féminin;2 mars 2024 09:00;Calcium;3,1;mmol/L;2,5 - 7,5;Validé;Urines;\n"
    "A12;Féminin;15 juil. 2024 09:00;Créatinine;88;µmol/L;45 - 90;Provisoire;Sang;hémolysé\n"
)


def read_text(tmp_path: Path, text: str) -> ReadResult:
    path = tmp_path / "export.csv"
    path.write_text(text, encoding="utf-8")
    res = read(path)
    assert res.rows_in == res.rows_used + res.rows_rejected
    return res


def test_a_german_export(tmp_path: Path) -> None:
    res = read_text(tmp_path, GERMAN)
    r = res.results.sort_values(["collected_at", "analyte"]).reset_index(drop=True)
    assert list(r["analyte"]) == [
        "albumin", "calcium", "magnesium", "potassium", "potassium", "creatinine",
    ]  # fmt: skip
    assert set(r["sex"]) == {"female"} and set(r["patient_id"]) == {"4711"}
    assert r.loc[2, "value"] == 0.52 and r.loc[2, "collected_at"] == pd.Timestamp(
        "2024-03-01 08:15"
    )
    assert "mg_lowering_medication" in r.loc[2, "quality"]  # Pantoprazol
    assert "hemolyzed" in r.loc[4, "quality"].split(";")  # "hämolytisch"
    assert r.loc[4, "result_status"] == "preliminary"  # "vorläufig"
    reasons = dict(zip(res.rejected["test"], res.rejected["reason"], strict=True))
    assert reasons == {"Parathormon intakt": "result_status", "Calcium": "non_blood_specimen"}


def test_a_french_export(tmp_path: Path) -> None:
    res = read_text(tmp_path, FRENCH)
    r = res.results.sort_values(["collected_at", "analyte"]).reset_index(drop=True)
    assert list(r["analyte"]) == ["calcium_ionized", "magnesium", "potassium", "creatinine"]
    assert list(r["collected_at"].dt.strftime("%Y-%m-%d")) == [
        "2024-03-01", "2024-03-01", "2024-03-01", "2024-07-15",
    ]  # fmt: skip
    assert set(r["patient_id"]) == {"A12"} and set(r["sex"]) == {"female"}
    assert r.loc[3, "result_status"] == "preliminary" and "hemolyzed" in r.loc[3, "quality"]
    reasons = dict(zip(res.rejected["test"], res.rejected["reason"], strict=True))
    assert reasons == {"Phosphore": "result_status", "Calcium": "non_blood_specimen"}


@pytest.mark.parametrize("text", [GERMAN, FRENCH])
def test_the_patterns_fire(tmp_path: Path, text: str) -> None:
    path = tmp_path / "export.csv"
    path.write_text(text, encoding="utf-8")
    f = interpret(path)
    fired = set(f.loc[f["status"] == "fired", "rule_id"])
    assert {"hypomagnesemia_hypocalcemia", "hypomagnesemia_hypokalemia"} <= fired


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("01-März-2024 08:00", "2024-03-01 08:00"),
        ("1. Dez. 2024", "2024-12-01"),
        ("3 févr. 2024", "2024-02-03"),
        ("1 août 2024 10:00", "2024-08-01 10:00"),
        ("15 jui 2024", None),  # juin or juillet: not guessed
    ],
)
def test_german_and_french_month_names(tmp_path: Path, when: str, expected: str | None) -> None:
    res = read_text(tmp_path, f'patient,date,test,result,unit\nP1,"{when}",Magnesium,0.8,mmol/L\n')
    if expected is None:
        assert list(res.rejected["reason"]) == ["unparseable_date"]
    else:
        assert list(res.results["collected_at"]) == [pd.Timestamp(expected)]


@pytest.mark.parametrize(
    ("comment", "hemolyzed"),
    [
        ("hemolyzed", True),
        ("VERIFIED. NOT HEMOLYZED.", False),
        ("Muestra hemolizada", True),
        ("sin hemólisis", False),
        ("hämolytisch", True),
        ("keine Hämolyse", False),
        ("hémolysé", True),
        ("non hémolysé", False),
    ],
)
def test_hemolysis_comments_in_four_languages(comment: str, hemolyzed: bool) -> None:
    from labinterp.normalize import quality_flags

    assert ("hemolyzed" in quality_flags(comment).split(";")) == hemolyzed
