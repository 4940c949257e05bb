"""Exports from Spanish-language lab systems: Spanish headers and test names (with or without
accents), decimal commas, day-first dates and Spanish month names, worded limits ("menor
de", "hasta"), statuses, specimens, sample-quality comments, sex and medicines. labinterp
writes Spanish handouts, so it has to read the exports their patients' labs print."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from labinterp.interpret import interpret
from labinterp.reading import ReadResult, read

HEADER = (
    "Nº Historia Clínica;Sexo;Fecha de extracción;Prueba;Resultado;Unidades;"
    "Valores de referencia;Estado;Tipo de muestra;Observaciones;Medicación\n"
)
# Patient 1001: low Mg, low total Ca (normal albumin) and low K in one draw, on omeprazole;
# a cancelled PTH, a urine calcium and a hemolyzed K the next day.
ROWS = [  # date; test; result; unit; range; status; specimen; comment; medication
    "01/03/2024 08:15;Magnesio;0,52;mmol/L;0,70 - 1,05;Definitivo;Suero;;Omeprazol 20 mg",
    "01/03/2024 08:15;Calcio total;1,90;mmol/L;2,15 a 2,55;Definitivo;Suero;;Omeprazol 20 mg",
    "01/03/2024 08:15;Potasio;3,0;mmol/L;3,5 - 5,1;Definitivo;Suero;Sin hemólisis;Omeprazol",
    "01/03/2024 08:15;Albúmina;41;g/L;35 - 52;Definitivo;Suero;;Omeprazol 20 mg",
    "01/03/2024 08:15;Proteína C reactiva;menor de 0,5;mg/L;hasta 5;Definitivo;Suero;;",
    "01/03/2024 08:15;Paratohormona intacta;;pg/mL;15 - 65;Anulado;Suero;;",
    "02/03/2024 09:00;Calcio;3,1;mmol/L;2,5 - 7,5;Definitivo;Orina;;",
    "02/03/2024 09:00;POTASIO;6,8;mmol/L;3,5 - 5,1;Definitivo;Suero;Muestra hemolizada;",
    "13/03/2024 09:00;Fósforo;0,61;mmol/L;0,81 - 1,45;Preliminar;Suero;;Sin omeprazol",
]
EXPORT = HEADER + "".join(f"1001;Femenino;{row}\n" for row in ROWS)


def read_text(tmp_path: Path, text: str, encoding: str = "utf-8") -> ReadResult:
    path = tmp_path / "resultados.csv"
    path.write_bytes(text.encode(encoding))
    res = read(path)
    assert res.rows_in == res.rows_used + res.rows_rejected
    return res


@pytest.fixture
def spanish(tmp_path: Path) -> ReadResult:
    return read_text(tmp_path, EXPORT)


def _one(res: ReadResult, analyte: str, day: int) -> pd.Series:
    rows = res.results[
        (res.results["analyte"] == analyte) & (res.results["collected_at"].dt.day == day)
    ]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_every_row_is_read_or_rejected_for_its_reason(spanish: ReadResult) -> None:
    assert spanish.rows_in == 9 and spanish.rows_used == 7
    reasons = dict(zip(spanish.rejected["test"], spanish.rejected["reason"], strict=True))
    assert reasons == {"Paratohormona intacta": "result_status", "Calcio": "non_blood_specimen"}


def test_spanish_headers_and_test_names(spanish: ReadResult) -> None:
    r = spanish.results
    assert set(r["patient_id"]) == {"1001"}
    assert sorted(r["analyte"]) == sorted(
        ["magnesium", "calcium", "potassium", "albumin", "crp", "potassium", "phosphate"]
    )
    assert set(r["sex"]) == {"female"}


def test_decimal_commas_ranges_and_worded_limits(spanish: ReadResult) -> None:
    mg = _one(spanish, "magnesium", 1)
    assert (mg["value"], mg["range_low"], mg["range_high"]) == (0.52, 0.70, 1.05)
    ca = _one(spanish, "calcium", 1)  # "2,15 a 2,55"
    assert (ca["range_low"], ca["range_high"]) == (2.15, 2.55)
    crp = _one(spanish, "crp", 1)  # "menor de 0,5" with the range "hasta 5"
    assert (crp["comparator"], crp["value"]) == ("<", 0.5)
    assert math.isnan(crp["range_low"]) and crp["range_high"] == 5
    assert _one(spanish, "phosphate", 13)["result_status"] == "preliminary"


def test_day_first_dates(spanish: ReadResult) -> None:
    assert _one(spanish, "phosphate", 13)["collected_at"] == pd.Timestamp("2024-03-13 09:00")


def _quality(res: ReadResult, analyte: str, day: int) -> set[str]:
    return set(str(_one(res, analyte, day)["quality"]).split(";"))


def test_sample_quality_comments(spanish: ReadResult) -> None:
    assert "hemolyzed" not in _quality(spanish, "potassium", 1)  # "Sin hemólisis"
    assert "hemolyzed" in _quality(spanish, "potassium", 2)  # "Muestra hemolizada"


def test_medicines_by_their_spanish_names(spanish: ReadResult) -> None:
    assert "mg_lowering_medication" in _quality(spanish, "magnesium", 1)  # "Omeprazol 20 mg"
    assert "mg_lowering_medication" not in _quality(spanish, "phosphate", 13)  # "Sin omeprazol"


def test_the_patterns_fire_and_the_hemolyzed_potassium_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "resultados.csv"
    path.write_text(EXPORT, encoding="utf-8")
    f = interpret(path)
    fired = f[f["status"] == "fired"]
    assert {"hypomagnesemia_hypocalcemia", "hypomagnesemia_hypokalemia"} <= set(fired["rule_id"])
    # both rest on the draw of 1 March; the 6.8 of 2 March is from a hemolyzed sample
    assert set(fired["evidence_at"]) == {pd.Timestamp("2024-03-01 08:15")}
    assert not (f["evidence"].str.contains("6.8 mmol/L")).any()


def test_windows_1252_without_accents_in_the_headers(tmp_path: Path) -> None:
    # an older LIS: Windows-1252, headers typed without accents, test names in capitals
    text = EXPORT.replace("Nº Historia Clínica", "Paciente").replace("extracción", "extraccion")
    res = read_text(tmp_path, text.upper().replace("MMOL/L", "mmol/L"), encoding="cp1252")
    assert res.rows_used == 7
    assert set(res.results["analyte"]) >= {"magnesium", "calcium", "phosphate", "albumin"}


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("15-ene-2024 08:00", "2024-01-15 08:00"),
        ("01-ago-2024", "2024-08-01"),
        ("3 diciembre 2024", "2024-12-03"),
        ("9-set-2024 10:30", "2024-09-09 10:30"),
        ("01-Mar-2024 08:00", "2024-03-01 08:00"),  # English still read
    ],
)
def test_spanish_month_names(tmp_path: Path, when: str, expected: str) -> None:
    res = read_text(
        tmp_path, f"paciente,fecha,prueba,resultado,unidad\nP1,{when},Magnesio,0.8,mmol/L\n"
    )
    assert res.results["collected_at"].iloc[0] == pd.Timestamp(expected)


@pytest.mark.parametrize(
    ("text", "sex"), [("Masculino", "male"), ("Varón", "male"), ("Mujer", "female"), ("H", "")]
)
def test_sex_words(tmp_path: Path, text: str, sex: str) -> None:
    res = read_text(
        tmp_path,
        f"paciente,sexo,fecha,prueba,resultado,unidad\nP1,{text},2024-03-01,Magnesio,0.8,mmol/L\n",
    )
    got = res.results["sex"].iloc[0]
    assert (got if isinstance(got, str) else "") == sex


@pytest.mark.parametrize(
    "test",
    [
        "PCR",  # C-reactive protein in Spanish, but a PCR assay or a protein/creatinine ratio
        "Calcio en orina",  # a urine test by its name
        "Calcio orina 24 horas",
    ],
)
def test_names_that_are_not_read_as_a_blood_test(tmp_path: Path, test: str) -> None:
    res = read_text(
        tmp_path, f"paciente,fecha,prueba,resultado,unidad\nP1,2024-03-01,{test},3.1,mg/L\n"
    )
    assert res.rows_used == 0 and list(res.rejected["reason"]) == ["out_of_scope"]
