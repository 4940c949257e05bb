"""CTCAE v5.0 lab grades for magnesium, calcium (corrected and ionized) and potassium.

The cut-offs live in reference_ranges/ctcae_v5.csv (source S70/S71); this module only
applies them, the way the reference implementation (pharmaverse admiral) does:

* the criteria of a term are tried in the order listed, most severe first, like a
  `case_when`; comparisons are strict where CTCAE says "<" or ">";
* a value is graded against the cut-offs of the unit system it was reported in (SI
  mmol/L or conventional mg/dL), because the two printed sets are not exact conversions
  of each other; ionized calcium in mg/dL uses 4 x the mmol/L cut-offs (listed in the
  table); a unit the table does not list is converted to the table unit of its system
  first (the `system` column of reference_ranges/unit_aliases.csv): mEq/L is a molar unit
  of the SI system, converted exactly through the valence (Mg and Ca: 2 mEq per mmol),
  so 0.99 mEq/L Mg is 0.495 mmol/L, grade 2, never 1.203 mg/dL, grade 1;
* grade 0 and the band anchored on LLN/ULN need that limit; without it the grade is
  unknown (None) unless a numeric band already applies;
* hypokalemia below LLN but >= 3.0 mmol/L is grade 2 (grades 1 and 2 differ only by
  symptoms, which a lab table does not carry);
* a missing value or unit gives None;
* a censored value ("<2.5") gets the grade every value it allows shares, else the least
  of them where the others are more severe ("at least": "<1.2 mg/dL" Mg is grade 2 or
  worse), else none (`_censored_grades`).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from labinterp import units
from labinterp.errors import ConfigError, UnitError
from labinterp.resources import reference_file

TERMS: dict[str, str] = {
    "hypomagnesemia": "magnesium",
    "hypermagnesemia": "magnesium",
    "hypocalcemia": "calcium_corrected",
    "hypercalcemia": "calcium_corrected",
    "hypocalcemia_ionized": "calcium_ionized",
    "hypercalcemia_ionized": "calcium_ionized",
    "hypokalemia": "potassium",
    "hyperkalemia": "potassium",
}

# Which CTCAE terms grade a low and a high value of an analyte (CLINICAL.md sec. 7). A total
# calcium is graded with the (corrected) calcium terms: the lab's total is what a clinician
# reads when no albumin was measured (P1 grades it so).
ANALYTE_TERMS: dict[str, tuple[str, str]] = {
    "magnesium": ("hypomagnesemia", "hypermagnesemia"),
    "calcium": ("hypocalcemia", "hypercalcemia"),
    "calcium_corrected": ("hypocalcemia", "hypercalcemia"),
    "calcium_ionized": ("hypocalcemia_ionized", "hypercalcemia_ionized"),
    "potassium": ("hypokalemia", "hyperkalemia"),
}


@dataclass(frozen=True)
class Criterion:
    grade: int
    operator: str  # "<" | "<=" | ">" | ">="
    cutoff: float | None  # None when the cut-off is the LLN or ULN
    anchor: str  # "" | "LLN" | "ULN"


@cache
def criteria() -> dict[tuple[str, str], tuple[Criterion, ...]]:
    """(term, table unit) -> criteria in evaluation order, read from ctcae_v5.csv."""
    path = reference_file("ctcae_v5.csv")
    table: dict[tuple[str, str], list[Criterion]] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            term, unit, cut = row["term"], row["unit"], row["cutoff"].strip()
            if term not in TERMS or row["operator"] not in ("<", "<=", ">", ">="):
                raise ConfigError(f"{path.name}: bad row for term '{term}'")
            anchor = cut if cut in ("LLN", "ULN") else ""
            table.setdefault((term, unit), []).append(
                Criterion(
                    int(row["grade"]), row["operator"], None if anchor else float(cut), anchor
                )
            )
    return {key: tuple(rows) for key, rows in table.items()}


@cache
def _table_unit_and_scale(term: str, unit: str) -> tuple[str, float] | None:
    """Which table unit grades a value reported in `unit`, and the factor to reach it."""
    alias = units.lookup(unit)
    if alias is None:
        return None
    analyte = TERMS[term]
    table_units = [u for (t, u) in criteria() if t == term]
    for tu in table_units:
        tu_alias = units.lookup(tu)
        if tu_alias is not None and tu_alias.pint_expr == alias.pint_expr:
            return tu, 1.0
    same_system = [tu for tu in table_units if units.unit_system(tu) == alias.system]
    target = (same_system or table_units)[0]
    try:
        scale = units.factor(analyte, unit) / units.factor(analyte, target)
    except UnitError:
        return None
    return target, scale


def _as_array(x: Any, n: int) -> np.ndarray:
    if x is None:
        return np.full(n, np.nan)
    arr = pd.to_numeric(pd.Series(np.atleast_1d(np.asarray(x, dtype=object))), errors="coerce")
    out = arr.to_numpy(dtype="float64", na_value=np.nan)
    return np.full(n, out[0]) if len(out) == 1 and n != 1 else out


def _compare(values: np.ndarray, op: str, bound: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        if op == "<":
            res = values < bound
        elif op == "<=":
            res = values <= bound
        elif op == ">":
            res = values > bound
        else:
            res = values >= bound
    # NaN on either side never satisfies a criterion (admiral: NA condition is not met)
    return res & ~np.isnan(values) & ~np.isnan(bound)


def _grades(
    rules: tuple[Criterion, ...], v: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Grades of values `v` (in the table unit) by `rules`, most severe first."""
    g = np.full(len(v), np.nan)
    for crit in rules:
        if crit.anchor == "LLN":
            bound = lo
        elif crit.anchor == "ULN":
            bound = hi
        else:
            bound = np.full(len(v), crit.cutoff)
        take = np.isnan(g) & _compare(v, crit.operator, bound)
        g[take] = crit.grade
    return g


def _censored_grades(
    rules: tuple[Criterion, ...],
    v: np.ndarray,
    comparators: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
) -> np.ndarray:
    """Grades of censored values ("<2.5" is some value below 2.5): the grade of every value
    the censoring allows, where they all share one; else the least of them where the
    others are more severe ("<1.2 mg/dL" Mg is at least grade 2: an "at least" the lab's
    own bound supports); else none (">0.45 mmol/L" Mg may be grade 0 or 2).

    Grades change monotonically with the value, so the values at the two ends of the
    allowed interval tell: the bound itself (just inside it for a strict "<" or ">") and
    the far end (-inf for "<", +inf for ">").
    """
    below = np.isin(comparators, ("<", "<="))
    strict = np.isin(comparators, ("<", ">"))
    toward = np.where(below, -np.inf, np.inf)
    inner = np.where(strict, np.nextafter(v, toward), v)
    at_bound = _grades(rules, inner, lo, hi)
    far = _grades(rules, toward, lo, hi)
    return np.where(far == at_bound, at_bound, np.where(far > at_bound, at_bound, np.nan))


def grade_array(
    term: str,
    values: np.ndarray,
    unit_list: Sequence[Any],
    lln: np.ndarray,
    uln: np.ndarray,
    comparators: Sequence[Any] | None = None,
) -> np.ndarray:
    """Vectorized core: float array of grades (NaN = no grade). All inputs same length;
    `comparators` ("<", "<=", ">", ">=", anything else: exact) grade censored values."""
    if term not in TERMS:
        raise ValueError(f"unknown CTCAE term '{term}'; expected one of {sorted(TERMS)}")
    unit_codes, unit_names = pd.factorize(pd.Series(list(unit_list), dtype="object"))
    return _graded(
        term, values, unit_codes, list(unit_names), lln, uln, _comparators(comparators, len(values))
    )


_CENSORING = ("<", "<=", ">", ">=", "?")


def _comparators(comparators: Sequence[Any] | None, n: int) -> np.ndarray:
    """The comparators that censor a value ("<", "<=", ">", ">="; "?": a value derived
    from a censored input, bounded in no known direction), "" for every other."""
    if comparators is None:
        return np.full(n, "", dtype=object)
    if isinstance(comparators, np.ndarray) and comparators.dtype.kind == "U":
        return np.where(np.isin(comparators, _CENSORING), comparators, "").astype(object)
    return np.asarray([c if c in _CENSORING else "" for c in comparators], dtype=object)


def _graded(
    term: str,
    values: np.ndarray,
    unit_codes: np.ndarray,
    unit_names: Sequence[str],
    lln: np.ndarray,
    uln: np.ndarray,
    cmp: np.ndarray,
) -> np.ndarray:
    """grade_array on units given as codes (-1: none) into `unit_names`: one pass per
    distinct unit."""
    out = np.full(len(values), np.nan)
    for code, unit in enumerate(unit_names):
        hit = _table_unit_and_scale(term, str(unit))
        if hit is None:
            continue
        table_unit, scale = hit
        rules = criteria()[(term, table_unit)]
        mask = unit_codes == code
        if not mask.any():
            continue
        v, lo, hi = values[mask] * scale, lln[mask] * scale, uln[mask] * scale
        g = _grades(rules, v, lo, hi)
        g[cmp[mask] == "?"] = np.nan
        censored = (cmp[mask] != "") & (cmp[mask] != "?")
        if censored.any():
            g[censored] = _censored_grades(
                rules, v[censored], cmp[mask][censored], lo[censored], hi[censored]
            )
        out[mask] = g
    return out


# The terms grade_results names, by their position ("": none).
TERM_NAMES: tuple[str, ...] = ("", *TERMS)


def grade_results(
    analyte_codes: np.ndarray,
    analyte_names: Sequence[str],
    values: np.ndarray,
    unit_codes: np.ndarray,
    unit_names: Sequence[str],
    lln: np.ndarray,
    uln: np.ndarray,
    comparators: Sequence[Any] | None = None,
    high_not_read: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each result's own CTCAE grade, whatever finding cites it: per result the grade
    (NaN: not graded or unknown) and the position in TERM_NAMES of the term that gives it
    (0, "", for grade 0 or none). Analytes and units come as codes (-1: none) into their
    names.

    A result is graded by both terms of its analyte (ANALYTE_TERMS), as reported (value,
    unit, range and comparator as the lab printed them). At most one of them is above 0 (a
    value is not both below its LLN and above its ULN); that one is the grade. Grade 0
    needs both to say 0: a Mg above its LLN with no ULN printed may still be high.
    Analytes without CTCAE terms are not graded. Where `high_not_read` is set (a
    hemolyzed K or Mg: its high value is not interpreted, CLINICAL.md sec. 5) the high
    term's grade is unknown.
    """
    n = len(values)
    grade = np.full(n, np.nan)
    term_of = np.zeros(n, dtype=np.int8)
    cmp = _comparators(comparators, n)
    for code, analyte in enumerate(analyte_names):
        if analyte not in ANALYTE_TERMS:
            continue
        rows = np.flatnonzero(analyte_codes == code)
        if not len(rows):
            continue
        low_term, high_term = ANALYTE_TERMS[analyte]
        args = (values[rows], unit_codes[rows], unit_names, lln[rows], uln[rows], cmp[rows])
        low, high = _graded(low_term, *args), _graded(high_term, *args)
        if high_not_read is not None:
            high[high_not_read[rows]] = np.nan
        worst = np.fmax(low, high)  # NaN only where neither is known
        both_known = ~np.isnan(low) & ~np.isnan(high)
        grade[rows] = np.where((worst >= 1) | both_known, worst, np.nan)
        low_at, high_at = TERM_NAMES.index(low_term), TERM_NAMES.index(high_term)
        term_of[rows] = np.where(low >= 1, low_at, np.where(high >= 1, high_at, 0))
    return grade, term_of


def ctcae_grade(
    term: str,
    value: Any,
    unit: Any,
    lln: Any = None,
    uln: Any = None,
    *,
    comparator: Any = None,
) -> Any:
    """CTCAE v5.0 grade (0-4) or None for each value.

    `value`, `unit`, `lln` and `uln` may be scalars or array-likes of one length; `lln` and
    `uln` are in the same unit as the value. A scalar value gives a scalar result (int or
    None); an array-like gives a list. `comparator` ("<", "<=", ">", ">=", one or one per
    value) says a value is censored: `ctcae_grade("hypokalemia", 2.5, "mmol/L",
    comparator="<")` is 4, as any value below 2.5 mmol/L is grade 4.
    """
    scalar = np.ndim(value) == 0
    vals = _as_array(value, 1 if scalar else len(value))
    n = len(vals)
    if unit is None or isinstance(unit, str):
        unit_list: list[Any] = [unit] * n
    else:
        unit_list = list(unit)
    unit_list = [None if (u is None or u is pd.NA or u != u) else u for u in unit_list]
    if comparator is None or isinstance(comparator, str):
        comparators: list[Any] = [comparator] * n
    else:
        comparators = list(comparator)
    grades = grade_array(term, vals, unit_list, _as_array(lln, n), _as_array(uln, n), comparators)
    result = [None if np.isnan(g) else int(g) for g in grades]
    return result[0] if scalar else result
