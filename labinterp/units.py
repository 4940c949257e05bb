"""Unit spellings -> pint units -> one conversion factor per (analyte, unit).

Raw spellings go through reference_ranges/unit_aliases.csv before pint ever sees them:
pint alone would read "K/uL" as kelvin per microlitre. Unknown spellings are rejected,
never guessed. Factors are computed once per distinct (analyte, unit) pair and then
applied to whole columns (a scalar pint conversion costs far more than a multiply).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache

import numpy as np
import pint

from labinterp.catalog import Analyte, analytes
from labinterp.errors import ConfigError, UnitError
from labinterp.resources import reference_file


@dataclass(frozen=True)
class UnitAlias:
    raw: str
    pint_expr: str
    system: str  # "si" | "conventional": which CTCAE cut-offs apply (mEq/L, molar: "si")


@cache
def registry() -> pint.UnitRegistry[float]:
    """The process-wide registry, with the project's definitions (equivalents, valence)."""
    ureg: pint.UnitRegistry[float] = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
    ureg.load_definitions(str(reference_file("units.txt")))
    return ureg


@cache
def aliases() -> dict[str, UnitAlias]:
    path = reference_file("unit_aliases.csv")
    table: dict[str, UnitAlias] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            alias = UnitAlias(row["raw"], row["pint"], row["system"])
            table[alias.raw] = alias
    ureg = registry()
    for alias in table.values():
        try:
            ureg.parse_units(alias.pint_expr)
        except (pint.errors.UndefinedUnitError, pint.errors.DefinitionSyntaxError) as exc:
            raise ConfigError(f"{path.name}: '{alias.raw}' maps to unknown unit: {exc}") from exc
    return table


@cache
def _folded_aliases() -> dict[str, UnitAlias]:
    # Lab unit spellings never rely on case to mean different things within this table
    # (there is no megalitre next to millilitre here), so a case-insensitive second look-up
    # is safe and catches "MG/DL" and "Mmol/L".
    return {raw.casefold(): alias for raw, alias in aliases().items()}


_SPACES = re.compile(r"\s+")


# "^" starting an HL7 component ("mg/dL^mg/dL^A400"), not an exponent ("1.73m^2")
_HL7_COMPONENT = re.compile(r"\^(?!\d).*$")


def clean_spelling(raw: str) -> str:
    """Trim, drop HL7 component repeats ('mg/dL^mg/dL^A400') and stray spaces around '/'."""
    text = raw.strip()
    if "^" in text:
        text = _HL7_COMPONENT.sub("", text).strip()
    text = text.replace("\\Z03BC\\", "µ")  # HL7 escape for the micro sign
    text = re.sub(r"\s*/\s*", "/", text)
    return _SPACES.sub(" ", text)


def lookup(raw: str) -> UnitAlias | None:
    """The alias entry for a raw unit spelling, or None when it is not in the table."""
    text = clean_spelling(raw)
    return aliases().get(text) or _folded_aliases().get(text.casefold())


def _convert_one(analyte: Analyte, source_expr: str, target_expr: str) -> float:
    ureg = registry()
    quantity = ureg.Quantity(1.0, source_expr)
    target = ureg.parse_units(target_expr)
    contexts: list[str] = []
    kwargs: dict[str, object] = {}
    if analyte.molar_mass is not None:
        contexts.append("chemistry")
        kwargs["mw"] = ureg.Quantity(analyte.molar_mass, "g/mol")
    if analyte.valence is not None:
        contexts.append("valence")
        kwargs["valence"] = analyte.valence
    converted = quantity.to(target, *contexts, **kwargs)
    return float(converted.magnitude)


@cache
def factor(analyte_id: str, raw_unit: str) -> float:
    """Multiply a value in `raw_unit` by this to get the analyte's canonical unit.

    Raises UnitError when the spelling is unknown or the unit cannot express the analyte
    (a U/L magnesium, or mEq/L for phosphate whose valence depends on pH).
    """
    analyte = analytes()[analyte_id]
    alias = lookup(raw_unit)
    if alias is None:
        raise UnitError(
            f"unit '{raw_unit}' is not in labinterp's unit table.",
            fix="correct the unit in the export, or add the spelling to unit_aliases.csv.",
        )
    canonical = aliases()[analyte.canonical_unit]
    try:
        return _convert_one(analyte, alias.pint_expr, canonical.pint_expr)
    except pint.errors.DimensionalityError as exc:
        raise UnitError(
            f"unit '{raw_unit}' cannot express {analyte.display_name}"
            f" (canonical unit {analyte.canonical_unit}).",
            fix="check that the row's unit belongs to this test.",
        ) from exc


def unit_system(raw_unit: str) -> str | None:
    alias = lookup(raw_unit)
    return alias.system if alias else None


def same_factor(factors: np.ndarray, f: float) -> np.ndarray:
    """Per entry: the conversion factor is `f` (the same unit, however spelt; NaN: no)."""
    return np.isclose(factors, f, rtol=1e-9, atol=0)


def reported_in(value: np.ndarray, reported: np.ndarray, f: float) -> np.ndarray:
    """Per result: it was reported in the unit whose factor to the canonical one is `f`,
    as its canonical `value` and `reported` number tell (value = reported x factor)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return same_factor(np.asarray(value, dtype=float) / np.asarray(reported, dtype=float), f)
