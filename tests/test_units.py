"""Conversion factors come from molar masses and valences, never typed-in constants."""

from __future__ import annotations

import pytest

from labinterp import units
from labinterp.catalog import analytes
from labinterp.errors import UnitError

# (analyte, unit, expected factor to canonical, why)
CASES = [
    ("magnesium", "mg/dL", 10 / 24.305, "mg/dL -> mmol/L: x10 (dL->L) / molar mass"),
    ("magnesium", "mEq/L", 0.5, "Mg is divalent: 2 mEq per mmol"),
    ("magnesium", "mmol/L", 1.0, "canonical"),
    ("calcium", "mg/dL", 10 / 40.078, "total Ca"),
    ("calcium", "mEq/L", 0.5, "Ca is divalent"),
    ("calcium_ionized", "mg/dL", 10 / 40.078, "ionized Ca mg/dL"),
    ("phosphate", "mg/dL", 10 / 30.974, "phosphate reported as phosphorus (P, not PO4)"),
    ("pth", "pmol/L", 9.425, "pmol/L x 9.425 = pg/mL (molar mass ~9425 g/mol)"),
    ("pth", "ng/L", 1.0, "ng/L equals pg/mL"),
    ("vitamin_d_25oh", "ng/mL", 1000 / 400.65, "ng/mL -> nmol/L via 25-OH D3"),
    ("crp", "mg/dL", 10.0, "the 10x CRP trap"),
    ("crp", "mg/L", 1.0, "canonical"),
    ("albumin", "g/dL", 10.0, "g/dL -> g/L"),
    ("creatinine", "mg/dL", 10_000 / 113.09658, "mg/dL -> umol/L: x 88.42, CLINICAL.md sec.1"),
    ("creatinine", "mmol/L", 1000.0, "FHIR examples report creatinine in mmol/L"),
    ("potassium", "mEq/L", 1.0, "K is monovalent"),
]


@pytest.mark.parametrize(("analyte", "unit", "expected", "why"), CASES)
def test_factor_matches_molar_mass(analyte: str, unit: str, expected: float, why: str) -> None:
    assert units.factor(analyte, unit) == pytest.approx(expected, rel=1e-9), why


def test_clinical_rule_of_thumb_factors() -> None:
    """The factors printed in CLINICAL.md sec. 1 agree with the molar masses to 3 digits."""
    assert units.factor("magnesium", "mg/dL") == pytest.approx(0.4114, abs=5e-4)
    assert units.factor("calcium", "mg/dL") == pytest.approx(0.2495, abs=5e-4)
    assert units.factor("phosphate", "mg/dL") == pytest.approx(0.3229, abs=5e-4)
    assert units.factor("vitamin_d_25oh", "ng/mL") == pytest.approx(2.496, abs=5e-3)
    assert units.factor("creatinine", "mg/dL") == pytest.approx(88.42, abs=0.05)
    assert 1 / units.factor("calcium_ionized", "mg/dL") == pytest.approx(4.008, abs=5e-3)


def test_phosphate_as_po4_would_be_a_3x_error() -> None:
    as_p = units.factor("phosphate", "mg/dL")
    as_po4 = 10 / 94.97
    assert as_p / as_po4 == pytest.approx(3.07, abs=0.01)


@pytest.mark.parametrize("spelling", ["K/uL", "10*3/uL", "mg", "furlong", "", "mmol"])
def test_unknown_spellings_are_rejected_not_guessed(spelling: str) -> None:
    with pytest.raises(UnitError):
        units.factor("magnesium", spelling)


@pytest.mark.parametrize(
    ("analyte", "unit"),
    [("magnesium", "U/L"), ("phosphate", "mEq/L"), ("albumin", "mmol/L"), ("alp", "mg/dL")],
)
def test_units_that_cannot_express_the_analyte(analyte: str, unit: str) -> None:
    with pytest.raises(UnitError, match="cannot express"):
        units.factor(analyte, unit)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("MG/DL", "mg/dL"),
        (" mg / dL ", "mg/dL"),
        ("mg/dL^mg/dL^A400", "mg/dL"),
        ("\\Z03BC\\mol/L", "µmol/L"),
        ("μmol/L", "μmol/L"),
        ("mEq/l", "mEq/l"),
    ],
)
def test_spelling_variants(raw: str, canonical: str) -> None:
    alias = units.lookup(raw)
    expected = units.lookup(canonical)
    assert alias is not None and expected is not None
    assert alias.pint_expr == expected.pint_expr


@pytest.mark.parametrize(
    ("analyte", "unit", "factor"),
    [
        ("egfr", "mL/min/1.73m^2", 1.0),  # an exponent, not an HL7 component separator
        ("egfr", "mL/min/1.73m²", 1.0),
        ("egfr", "ml/min/1,73m2", 1.0),
        ("egfr", "mL/min/1.73 sq m", 1.0),
        ("alp", "µkat/L", 60.0),
        ("alp", "units/L", 1.0),
        ("crp", "µg/mL", 1.0),
        ("crp", "mcg/mL", 1.0),
        ("magnesium", "mg/100ml", 10 / 24.305),
        ("magnesium", "mval/l", 0.5),
        ("creatinine", "micromol/L", 1.0),
        ("vitamin_d_25oh", "mcg/L", 1000 / 400.65),
    ],
)
def test_more_spellings_labs_print(analyte: str, unit: str, factor: float) -> None:
    assert units.factor(analyte, unit) == pytest.approx(factor, rel=1e-4)


def test_every_canonical_unit_is_in_the_alias_table() -> None:
    for a in analytes().values():
        assert units.factor(a.id, a.canonical_unit) == pytest.approx(1.0)
