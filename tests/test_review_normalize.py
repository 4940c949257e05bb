"""Review fixes of the normalize stage: ranges printed per sex, a unit label the printed
range contradicts, and the creatinine factor of CLINICAL.md sec. 1."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from labinterp import units
from labinterp.interpret import interpret
from labinterp.normalize import parse_range
from labinterp.reading import read

HEADER = "patient_id,collected_at,test,value,unit,ref_range,sex,birth_date\n"


def _read(tmp_path: Path, body: str, header: str = HEADER):
    path = tmp_path / "export.csv"
    path.write_text(header + body, encoding="utf-8")
    res = read(path)
    assert res.rows_in == res.rows_used + res.rows_rejected
    return res


# ------------------------------------------------------------- ranges printed per sex


@pytest.mark.parametrize(
    ("text", "female", "male"),
    [
        ("M: 3.6-5.2; F: 3.3-5.0", (3.3, 5.0), (3.6, 5.2)),
        ("Male: 3.6-5.2 mmol/L, Female: 3.3-5.0 mmol/L", (3.3, 5.0), (3.6, 5.2)),
        ("3.6-5.2 (men) 3.3-5.0 (women)", (3.3, 5.0), (3.6, 5.2)),
        ("Adult M: 3.6-5.2; Adult F: 3.3-5.0", (3.3, 5.0), (3.6, 5.2)),
        # Spanish: "M" is mujer beside "H" (hombre)
        ("H: 3.6-5.2; M: 3.3-5.0", (3.3, 5.0), (3.6, 5.2)),
        ("Hombres 3.6-5.2 / Mujeres 3.3-5.0", (3.3, 5.0), (3.6, 5.2)),
        # German ("W": weiblich) and French ("H"/"F": homme/femme)
        ("Männer: 3.6-5.2; Frauen: 3.3-5.0", (3.3, 5.0), (3.6, 5.2)),
        ("M 3.6-5.2 W 3.3-5.0", (3.3, 5.0), (3.6, 5.2)),
        ("Hommes: 3.6-5.2; Femmes: 3.3-5.0", (3.3, 5.0), (3.6, 5.2)),
        ("H: 3.6-5.2; F: 3.3-5.0", (3.3, 5.0), (3.6, 5.2)),
    ],
)
def test_a_range_printed_per_sex_gives_the_patients_one(
    text: str, female: tuple[float, float], male: tuple[float, float]
) -> None:
    assert parse_range(text, "", "", ".", "female")[:2] == female
    assert parse_range(text, "", "", ".", "male")[:2] == male
    # unknown sex: no pick, and above all no male default
    assert all(math.isnan(x) for x in parse_range(text, "", "", ".", "")[:2])


@pytest.mark.parametrize(
    "text",
    [
        "M: 3.6-5.2; F: 3.3-5.0; Child: 3.4-4.7",  # a third group
        "M: 3.6-5.2; Child: 3.4-4.7",  # not one range per sex
        "M: 3.6-5.2; M: 3.3-5.0",  # one sex twice
        "Male: 3.6-5.2; M: 3.3-5.0",  # "M" beside "Male": mujer? no label
        "F: 3.3-5.0 pregnant; M: 3.6-5.2",  # a word that is no sex label
        "Boys: 3.6-5.2; Girls: 3.3-5.0",  # children's ranges
    ],
)
def test_ranges_not_clearly_one_per_sex_are_not_picked_from(text: str) -> None:
    for sex in ("female", "male"):
        assert all(math.isnan(x) for x in parse_range(text, "", "", ".", sex)[:2]), sex


def test_the_lab_range_of_a_womans_sex_is_used_for_her_potassium(tmp_path: Path) -> None:
    """The reviewer's case: K 3.4 is normal by the lab's female range 3.3-5.0, so P3 does
    not fire beside a low Mg; the row's range is the lab's, not the bundled one."""
    res = _read(
        tmp_path,
        "F1,2024-01-01 08:00,Potassium,3.4,mmol/L,M: 3.6-5.2; F: 3.3-5.0,F,1970-01-01\n"
        "F1,2024-01-01 08:00,Magnesium,0.65,mmol/L,0.66-1.07,F,1970-01-01\n"
        "M1,2024-01-01 08:00,Potassium,3.4,mmol/L,M: 3.6-5.2; F: 3.3-5.0,M,1970-01-01\n"
        "U1,2024-01-01 08:00,Potassium,3.4,mmol/L,M: 3.6-5.2; F: 3.3-5.0,,1970-01-01\n",
    )
    k = res.results[res.results["analyte"] == "potassium"].set_index("patient_id")
    assert (k.loc["F1", "range_low"], k.loc["F1", "range_high"]) == (3.3, 5.0)
    assert (k.loc["M1", "range_low"], k.loc["M1", "range_high"]) == (3.6, 5.2)
    assert k.loc["F1", "range_origin"] == k.loc["M1", "range_origin"] == "row"
    assert "unreadable_range" not in k.loc["F1", "quality"]
    # unknown sex: as before, the lab's per-sex range is noted, not picked from
    assert k.loc["U1", "range_origin"] == "bundled"
    assert "unreadable_range" in k.loc["U1", "quality"]
    findings = interpret(res.results)
    p3 = findings[
        (findings["patient_id"] == "F1") & (findings["rule_id"] == "hypomagnesemia_hypokalemia")
    ]
    assert list(p3["status"]) == ["not_fired"]


# ------------------------------------------------------- a range that fits another unit

PLAIN = "patient_id,collected_at,test,value,unit,ref_range\n"


@pytest.mark.parametrize(
    ("row", "fits"),
    [
        # the reviewer's cases: ranges labs print (CLINICAL.md sec. 4) in the other unit
        ("25-OH Vitamin D,40,ng/mL,75-250", "nmol/L"),
        ("25-OH Vitamin D,25,nmol/L,30-100", "ng/mL"),
        # the same ranges in their own unit stay read
        ("25-OH Vitamin D,32,ng/mL,30-100", None),
        ("25-OH Vitamin D,80,nmol/L,75-250", None),
        ("25-OH Vitamin D,80,nmol/L,50-125", None),  # IOM's upper 125 nmol/L
    ],
)
def test_a_vitamin_d_range_printed_in_the_other_unit_is_a_unit_error(
    tmp_path: Path, row: str, fits: str | None
) -> None:
    res = _read(tmp_path, f"P1,2024-01-01 08:00,{row}\n", PLAIN)
    if fits is None:
        assert res.rows_used == 1
    else:
        (reason,) = res.rejected["reason"]
        assert reason == "implausible_value"
        assert f"fits {fits}," in res.rejected["detail"].iloc[0]


@pytest.mark.parametrize(
    ("row", "fits"),
    [
        ("CRP,5,mg/dL,<10", "mg/L"),  # the mg/L limit beside a CRP in mg/dL: the 10x trap
        ("CRP,5,mg/dL,0-10", "mg/L"),
        ("CRP,5,mg/dL,< 10 mg/L", None),  # the lab names the range's unit: converted
        ("CRP,5,mg/L,<10", None),
        ("CRP,0.8,mg/L,<1.0", None),  # an hs-CRP risk cut-off, below the bundled limit
        ("CRP,0.8,mg/dL,<0.5", None),
        ("25-OH Vitamin D,25,nmol/L,>20", None),  # a lower limit alone is a cut-off
    ],
)
def test_a_one_sided_upper_limit_that_fits_another_unit_is_a_unit_error(
    tmp_path: Path, row: str, fits: str | None
) -> None:
    res = _read(tmp_path, f"P1,2024-01-01 08:00,{row}\n", PLAIN)
    if fits is None:
        assert res.rows_used == 1
    else:
        (reason,) = res.rejected["reason"]
        assert reason == "implausible_value"
        assert f"fits {fits}," in res.rejected["detail"].iloc[0]


# ------------------------------------------------------------ the creatinine factor


def test_creatinine_in_mg_dl_converts_by_the_factor_of_clinical_md() -> None:
    """CLINICAL.md sec. 1: mg/dL x 88.42 = umol/L (creatinine's formula mass, 113.12 g/mol,
    gives 88.40: 4.5 mg/dL would read 397.81 instead of 397.89 umol/L)."""
    assert units.factor("creatinine", "mg/dL") == pytest.approx(88.42, abs=1e-4)


def test_a_creatinine_in_mg_dl_reads_as_the_spec_converts_it(tmp_path: Path) -> None:
    res = _read(tmp_path, "P1,2024-01-01 08:00,Creatinine,4.5,mg/dL,\n", PLAIN)
    assert res.results["value"].iloc[0] == pytest.approx(397.89, abs=1e-3)


# ------------------------------------------------------------- mEq/L is an SI unit


def test_a_magnesium_in_mEq_is_graded_as_the_tier_reads_it(tmp_path: Path) -> None:
    """The reviewer's case: Mg 0.99 mEq/L is 0.495 mmol/L, below the 0.5 mmol/L at which
    P1's tier is `supported`; its CTCAE grade is the SI one, 2, not the 1 that 1.203 mg/dL
    would get on the conventional cut-offs. mEq/L is a molar unit (CLINICAL.md sec. 1)."""
    res = _read(
        tmp_path,
        "P1,2024-01-01 08:00,Magnesium,0.99,mEq/L,1.4-2.1\n"
        "P1,2024-01-01 08:00,Ionized calcium,1.0,mmol/L,1.15-1.32\n"
        "P2,2024-01-01 08:00,Magnesium,0.99,mval/L,\n",
        PLAIN,
    )
    assert set(res.results["unit_system"]) == {"si"}
    findings = interpret(res.results)
    p1 = findings[findings["rule_id"] == "hypomagnesemia_hypocalcemia"].iloc[0]
    assert (p1["status"], p1["tier"], p1["grade"]) == ("fired", "supported", 2)
    assert "0.99 mEq/L (0.495 mmol/L; range 1.4-2.1 mEq/L, row; CTCAE grade 2)" in p1["evidence"]
