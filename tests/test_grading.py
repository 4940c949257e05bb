"""CTCAE v5.0 grades, table-driven from the criteria (CLINICAL.md sec. 7), with every
boundary in both unit systems. Cut-offs are strict: a value equal to a cut-off belongs to
the milder grade."""

from __future__ import annotations

import pytest

from labinterp import ctcae_grade

# term, value, unit, lln, uln, expected grade
CASES = [
    # hypomagnesemia, SI
    ("hypomagnesemia", 0.70, "mmol/L", 0.70, 1.05, 0),
    ("hypomagnesemia", 0.69, "mmol/L", 0.70, 1.05, 1),
    ("hypomagnesemia", 0.50, "mmol/L", 0.70, 1.05, 1),
    ("hypomagnesemia", 0.49, "mmol/L", 0.70, 1.05, 2),
    ("hypomagnesemia", 0.40, "mmol/L", 0.70, 1.05, 2),
    ("hypomagnesemia", 0.39, "mmol/L", 0.70, 1.05, 3),
    ("hypomagnesemia", 0.30, "mmol/L", 0.70, 1.05, 3),
    ("hypomagnesemia", 0.29, "mmol/L", 0.70, 1.05, 4),
    # hypomagnesemia, conventional (not an exact conversion of the SI cut-offs)
    ("hypomagnesemia", 1.6, "mg/dL", 1.6, 2.6, 0),
    ("hypomagnesemia", 1.5, "mg/dL", 1.6, 2.6, 1),
    ("hypomagnesemia", 1.2, "mg/dL", 1.6, 2.6, 1),
    ("hypomagnesemia", 1.19, "mg/dL", 1.6, 2.6, 2),
    ("hypomagnesemia", 0.9, "mg/dL", 1.6, 2.6, 2),
    ("hypomagnesemia", 0.89, "mg/dL", 1.6, 2.6, 3),
    ("hypomagnesemia", 0.7, "mg/dL", 1.6, 2.6, 3),
    ("hypomagnesemia", 0.69, "mg/dL", 1.6, 2.6, 4),
    # hypermagnesemia (no grade 2)
    ("hypermagnesemia", 1.05, "mmol/L", 0.70, 1.05, 0),
    ("hypermagnesemia", 1.06, "mmol/L", 0.70, 1.05, 1),
    ("hypermagnesemia", 1.23, "mmol/L", 0.70, 1.05, 1),
    ("hypermagnesemia", 1.24, "mmol/L", 0.70, 1.05, 3),
    ("hypermagnesemia", 3.30, "mmol/L", 0.70, 1.05, 3),
    ("hypermagnesemia", 3.31, "mmol/L", 0.70, 1.05, 4),
    ("hypermagnesemia", 3.0, "mg/dL", 1.6, 2.6, 1),
    ("hypermagnesemia", 3.1, "mg/dL", 1.6, 2.6, 3),
    ("hypermagnesemia", 8.0, "mg/dL", 1.6, 2.6, 3),
    ("hypermagnesemia", 8.1, "mg/dL", 1.6, 2.6, 4),
    # hypocalcemia (corrected)
    ("hypocalcemia", 2.12, "mmol/L", 2.12, 2.62, 0),
    ("hypocalcemia", 2.0, "mmol/L", 2.12, 2.62, 1),
    ("hypocalcemia", 1.99, "mmol/L", 2.12, 2.62, 2),
    ("hypocalcemia", 1.75, "mmol/L", 2.12, 2.62, 2),
    ("hypocalcemia", 1.74, "mmol/L", 2.12, 2.62, 3),
    ("hypocalcemia", 1.5, "mmol/L", 2.12, 2.62, 3),
    ("hypocalcemia", 1.49, "mmol/L", 2.12, 2.62, 4),
    ("hypocalcemia", 8.5, "mg/dL", 8.5, 10.5, 0),
    ("hypocalcemia", 8.0, "mg/dL", 8.5, 10.5, 1),
    ("hypocalcemia", 7.9, "mg/dL", 8.5, 10.5, 2),
    ("hypocalcemia", 7.0, "mg/dL", 8.5, 10.5, 2),
    ("hypocalcemia", 6.9, "mg/dL", 8.5, 10.5, 3),
    ("hypocalcemia", 6.0, "mg/dL", 8.5, 10.5, 3),
    ("hypocalcemia", 5.9, "mg/dL", 8.5, 10.5, 4),
    # hypercalcemia (corrected)
    ("hypercalcemia", 2.62, "mmol/L", 2.12, 2.62, 0),
    ("hypercalcemia", 2.9, "mmol/L", 2.12, 2.62, 1),
    ("hypercalcemia", 2.91, "mmol/L", 2.12, 2.62, 2),
    ("hypercalcemia", 3.1, "mmol/L", 2.12, 2.62, 2),
    ("hypercalcemia", 3.11, "mmol/L", 2.12, 2.62, 3),
    ("hypercalcemia", 3.4, "mmol/L", 2.12, 2.62, 3),
    ("hypercalcemia", 3.41, "mmol/L", 2.12, 2.62, 4),
    ("hypercalcemia", 11.5, "mg/dL", 8.5, 10.5, 1),
    ("hypercalcemia", 11.6, "mg/dL", 8.5, 10.5, 2),
    ("hypercalcemia", 12.5, "mg/dL", 8.5, 10.5, 2),
    ("hypercalcemia", 12.6, "mg/dL", 8.5, 10.5, 3),
    ("hypercalcemia", 13.5, "mg/dL", 8.5, 10.5, 3),
    ("hypercalcemia", 13.6, "mg/dL", 8.5, 10.5, 4),
    # ionized calcium; mg/dL uses 4 x the mmol/L cut-offs
    ("hypocalcemia_ionized", 1.15, "mmol/L", 1.15, 1.32, 0),
    ("hypocalcemia_ionized", 1.0, "mmol/L", 1.15, 1.32, 1),
    ("hypocalcemia_ionized", 0.99, "mmol/L", 1.15, 1.32, 2),
    ("hypocalcemia_ionized", 0.9, "mmol/L", 1.15, 1.32, 2),
    ("hypocalcemia_ionized", 0.89, "mmol/L", 1.15, 1.32, 3),
    ("hypocalcemia_ionized", 0.8, "mmol/L", 1.15, 1.32, 3),
    ("hypocalcemia_ionized", 0.79, "mmol/L", 1.15, 1.32, 4),
    ("hypocalcemia_ionized", 4.0, "mg/dL", 4.6, 5.3, 1),
    ("hypocalcemia_ionized", 3.99, "mg/dL", 4.6, 5.3, 2),
    ("hypocalcemia_ionized", 3.6, "mg/dL", 4.6, 5.3, 2),
    ("hypocalcemia_ionized", 3.59, "mg/dL", 4.6, 5.3, 3),
    ("hypocalcemia_ionized", 3.2, "mg/dL", 4.6, 5.3, 3),
    ("hypocalcemia_ionized", 3.19, "mg/dL", 4.6, 5.3, 4),
    ("hypercalcemia_ionized", 1.32, "mmol/L", 1.15, 1.32, 0),
    ("hypercalcemia_ionized", 1.5, "mmol/L", 1.15, 1.32, 1),
    ("hypercalcemia_ionized", 1.51, "mmol/L", 1.15, 1.32, 2),
    ("hypercalcemia_ionized", 1.6, "mmol/L", 1.15, 1.32, 2),
    ("hypercalcemia_ionized", 1.61, "mmol/L", 1.15, 1.32, 3),
    ("hypercalcemia_ionized", 1.8, "mmol/L", 1.15, 1.32, 3),
    ("hypercalcemia_ionized", 1.81, "mmol/L", 1.15, 1.32, 4),
    ("hypercalcemia_ionized", 6.0, "mg/dL", 4.6, 5.3, 1),
    ("hypercalcemia_ionized", 6.01, "mg/dL", 4.6, 5.3, 2),
    ("hypercalcemia_ionized", 6.4, "mg/dL", 4.6, 5.3, 2),
    ("hypercalcemia_ionized", 6.41, "mg/dL", 4.6, 5.3, 3),
    ("hypercalcemia_ionized", 7.2, "mg/dL", 4.6, 5.3, 3),
    ("hypercalcemia_ionized", 7.21, "mg/dL", 4.6, 5.3, 4),
    # hypokalemia: below LLN and >= 3.0 is grade 2 (symptoms are not in lab data)
    ("hypokalemia", 3.5, "mmol/L", 3.5, 5.1, 0),
    ("hypokalemia", 3.4, "mmol/L", 3.5, 5.1, 2),
    ("hypokalemia", 3.0, "mmol/L", 3.5, 5.1, 2),
    ("hypokalemia", 2.99, "mmol/L", 3.5, 5.1, 3),
    ("hypokalemia", 2.5, "mmol/L", 3.5, 5.1, 3),
    ("hypokalemia", 2.49, "mmol/L", 3.5, 5.1, 4),
    ("hypokalemia", 2.9, "mEq/L", 3.5, 5.1, 3),
    # hyperkalemia
    ("hyperkalemia", 5.1, "mmol/L", 3.5, 5.1, 0),
    ("hyperkalemia", 5.5, "mmol/L", 3.5, 5.1, 1),
    ("hyperkalemia", 5.51, "mmol/L", 3.5, 5.1, 2),
    ("hyperkalemia", 6.0, "mmol/L", 3.5, 5.1, 2),
    ("hyperkalemia", 6.01, "mmol/L", 3.5, 5.1, 3),
    ("hyperkalemia", 7.0, "mmol/L", 3.5, 5.1, 3),
    ("hyperkalemia", 7.01, "mEq/L", 3.5, 5.1, 4),
    # limits needed for grade 0 and the anchored band; numeric bands do not need them
    ("hypomagnesemia", 0.8, "mmol/L", None, None, None),
    ("hypomagnesemia", 0.6, "mmol/L", None, None, None),
    ("hypomagnesemia", 0.45, "mmol/L", None, None, 2),
    ("hypokalemia", 3.2, "mmol/L", None, None, None),
    ("hyperkalemia", 6.5, "mmol/L", 3.5, None, 3),
    ("hyperkalemia", 5.3, "mmol/L", 3.5, None, None),
    # missing value or unit
    ("hypokalemia", None, "mmol/L", 3.5, 5.1, None),
    ("hypokalemia", float("nan"), "mmol/L", 3.5, 5.1, None),
    ("hypokalemia", 2.0, None, 3.5, 5.1, None),
    ("hypokalemia", 2.0, "furlongs", 3.5, 5.1, None),
]


@pytest.mark.parametrize(("term", "value", "unit", "lln", "uln", "grade"), CASES)
def test_grade(term, value, unit, lln, uln, grade) -> None:
    assert ctcae_grade(term, value, unit, lln=lln, uln=uln) == grade


def test_array_in_array_out() -> None:
    got = ctcae_grade(
        "hypokalemia", [3.4, 2.9, None, 2.4], ["mmol/L", "mEq/L", "mmol/L", None], 3.5
    )
    assert got == [2, 3, None, None]


def test_mEq_magnesium_is_converted_before_grading() -> None:
    # 0.8 mEq/L = 0.4 mmol/L (not below 0.4): grade 2 on the SI cut-offs
    assert ctcae_grade("hypomagnesemia", 0.8, "mEq/L", 1.3) == 2


# mEq/L is a molar unit (CLINICAL.md sec. 1: mEq/L = 2 x mmol/L for Mg and Ca): a value in
# it is graded on the SI (mmol/L) cut-offs, converted exactly through the valence, never on
# the conventional mg/dL ones. Every boundary, the limits in mEq/L as a lab prints them.
MEQ_CASES = [
    # hypomagnesemia: 0.5 / 0.4 / 0.3 mmol/L are 1.0 / 0.8 / 0.6 mEq/L
    ("hypomagnesemia", 1.4, "mEq/L", 1.4, 2.1, 0),
    ("hypomagnesemia", 1.39, "mEq/L", 1.4, 2.1, 1),
    ("hypomagnesemia", 1.0, "mEq/L", 1.4, 2.1, 1),
    ("hypomagnesemia", 0.99, "mEq/L", 1.4, 2.1, 2),  # 1.203 mg/dL would be grade 1
    ("hypomagnesemia", 0.8, "mEq/L", 1.4, 2.1, 2),
    ("hypomagnesemia", 0.79, "mEq/L", 1.4, 2.1, 3),  # 0.96 mg/dL would be grade 2
    ("hypomagnesemia", 0.6, "mEq/L", 1.4, 2.1, 3),
    ("hypomagnesemia", 0.59, "mEq/L", 1.4, 2.1, 4),  # 0.717 mg/dL would be grade 3
    # hypermagnesemia: 1.23 / 3.30 mmol/L are 2.46 / 6.60 mEq/L (no grade 2)
    ("hypermagnesemia", 2.1, "mEq/L", 1.4, 2.1, 0),
    ("hypermagnesemia", 2.46, "mEq/L", 1.4, 2.1, 1),
    ("hypermagnesemia", 2.47, "mEq/L", 1.4, 2.1, 3),
    ("hypermagnesemia", 6.6, "mEq/L", 1.4, 2.1, 3),  # 8.02 mg/dL would be grade 4
    ("hypermagnesemia", 6.61, "mEq/L", 1.4, 2.1, 4),
    # other spellings of the unit
    ("hypomagnesemia", 0.79, "meq/L", 1.4, 2.1, 3),
    ("hypomagnesemia", 0.79, "mEq/l", 1.4, 2.1, 3),
    ("hypomagnesemia", 0.79, "mval/L", 1.4, 2.1, 3),
    # hypocalcemia (corrected): 2.0 / 1.75 / 1.5 mmol/L are 4.0 / 3.5 / 3.0 mEq/L
    ("hypocalcemia", 4.24, "mEq/L", 4.24, 5.24, 0),
    ("hypocalcemia", 4.0, "mEq/L", 4.24, 5.24, 1),
    ("hypocalcemia", 3.99, "mEq/L", 4.24, 5.24, 2),
    ("hypocalcemia", 3.5, "mEq/L", 4.24, 5.24, 2),
    ("hypocalcemia", 3.49, "mEq/L", 4.24, 5.24, 3),
    ("hypocalcemia", 3.0, "mEq/L", 4.24, 5.24, 3),
    ("hypocalcemia", 2.99, "mEq/L", 4.24, 5.24, 4),
    # hypercalcemia (corrected): 2.9 / 3.1 / 3.4 mmol/L are 5.8 / 6.2 / 6.8 mEq/L
    ("hypercalcemia", 5.24, "mEq/L", 4.24, 5.24, 0),
    ("hypercalcemia", 5.8, "mEq/L", 4.24, 5.24, 1),  # 11.62 mg/dL would be grade 2
    ("hypercalcemia", 5.81, "mEq/L", 4.24, 5.24, 2),
    ("hypercalcemia", 6.2, "mEq/L", 4.24, 5.24, 2),
    ("hypercalcemia", 6.21, "mEq/L", 4.24, 5.24, 3),  # 12.44 mg/dL would be grade 2
    ("hypercalcemia", 6.8, "mEq/L", 4.24, 5.24, 3),  # 13.63 mg/dL would be grade 4
    ("hypercalcemia", 6.81, "mEq/L", 4.24, 5.24, 4),
    # ionized calcium: 1.0 / 0.9 / 0.8 and 1.5 / 1.6 / 1.8 mmol/L, doubled
    ("hypocalcemia_ionized", 2.3, "mEq/L", 2.3, 2.64, 0),
    ("hypocalcemia_ionized", 2.0, "mEq/L", 2.3, 2.64, 1),
    ("hypocalcemia_ionized", 1.99, "mEq/L", 2.3, 2.64, 2),
    ("hypocalcemia_ionized", 1.8, "mEq/L", 2.3, 2.64, 2),
    ("hypocalcemia_ionized", 1.79, "mEq/L", 2.3, 2.64, 3),
    ("hypocalcemia_ionized", 1.6, "mEq/L", 2.3, 2.64, 3),
    ("hypocalcemia_ionized", 1.59, "mEq/L", 2.3, 2.64, 4),
    ("hypercalcemia_ionized", 2.64, "mEq/L", 2.3, 2.64, 0),
    ("hypercalcemia_ionized", 3.0, "mEq/L", 2.3, 2.64, 1),  # 6.01 mg/dL would be grade 2
    ("hypercalcemia_ionized", 3.01, "mEq/L", 2.3, 2.64, 2),
    ("hypercalcemia_ionized", 3.2, "mEq/L", 2.3, 2.64, 2),  # 6.41 mg/dL would be grade 3
    ("hypercalcemia_ionized", 3.21, "mEq/L", 2.3, 2.64, 3),
    ("hypercalcemia_ionized", 3.6, "mEq/L", 2.3, 2.64, 3),  # 7.21 mg/dL would be grade 4
    ("hypercalcemia_ionized", 3.61, "mEq/L", 2.3, 2.64, 4),
]


@pytest.mark.parametrize(("term", "value", "unit", "lln", "uln", "grade"), MEQ_CASES)
def test_mEq_values_are_graded_on_the_si_cut_offs(term, value, unit, lln, uln, grade) -> None:
    assert ctcae_grade(term, value, unit, lln=lln, uln=uln) == grade
    # the same value in mmol/L (half the number, Mg and Ca being divalent) grades alike
    assert ctcae_grade(term, value / 2, "mmol/L", lln=lln / 2, uln=uln / 2) == grade


def test_unknown_term_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown CTCAE term"):
        ctcae_grade("hyponatremia", 120, "mmol/L")


# Censored values: the grade every value the censoring allows shares, else the least of
# them where the rest are more severe ("at least"), else none.
CENSORED = [
    # every K below 2.5 mmol/L is grade 4; a plain 2.5 is grade 3
    ("hypokalemia", 2.5, "mmol/L", "<", 3.5, 5.1, 4),
    ("hypokalemia", 2.5, "mmol/L", "<=", 3.5, 5.1, 3),
    # "<1.2 mg/dL" Mg is grade 2 or worse: at least 2 (the plain value is grade 1)
    ("hypomagnesemia", 1.2, "mg/dL", "<", 1.7, 2.4, 2),
    ("hypomagnesemia", 0.5, "mmol/L", "<", 0.7, 1.05, 2),
    # above the range's low limit: grade 0 whatever the value
    ("hypomagnesemia", 1.0, "mmol/L", ">", 0.7, 1.05, 0),
    # ">0.45 mmol/L" may be grade 2 (0.46) or 0 (0.9): unknown
    ("hypomagnesemia", 0.45, "mmol/L", ">", 0.7, 1.05, None),
    # ">7.0 mmol/L" K is grade 4; "<7.0" may be anything from 0 to 3
    ("hyperkalemia", 7.0, "mmol/L", ">", 3.5, 5.1, 4),
    ("hyperkalemia", 7.0, "mmol/L", "<", 3.5, 5.1, None),
    # "<5.0 mmol/L" with a ULN of 5.1: never above the ULN, grade 0
    ("hyperkalemia", 5.0, "mmol/L", "<", 3.5, 5.1, 0),
    # "<6.0 mg/dL" corrected Ca: grade 4 (the conventional cut-off), in SI "<1.5" too
    ("hypocalcemia", 6.0, "mg/dL", "<", 8.5, 10.5, 4),
    ("hypocalcemia", 1.5, "mmol/L", "<", 2.15, 2.55, 4),
]


@pytest.mark.parametrize(("term", "value", "unit", "comparator", "lln", "uln", "grade"), CENSORED)
def test_censored_grade(term, value, unit, comparator, lln, uln, grade) -> None:
    assert ctcae_grade(term, value, unit, lln, uln, comparator=comparator) == grade


def test_censored_grades_in_arrays_and_exact_values_unchanged() -> None:
    got = ctcae_grade(
        "hypokalemia", [2.5, 2.5, 2.5], "mmol/L", 3.5, 5.1, comparator=["<", "", None]
    )
    assert got == [4, 3, 3]


# A result's own grade, by both terms of its analyte (grading.grade_results):
# (analyte, value, unit, lln, uln, comparator, grade or None, term)
RESULT_GRADES = [
    ("magnesium", 0.6, "mg/dL", 1.7, 2.2, "", 4, "hypomagnesemia"),
    ("magnesium", 2.0, "mg/dL", 1.7, 2.2, "", 0, ""),
    # above the LLN with no ULN printed: it may still be high, so no grade 0
    ("magnesium", 2.0, "mg/dL", 1.7, None, "", None, ""),
    # below the LLN with no ULN: the low term alone tells
    ("magnesium", 0.35, "mmol/L", 0.7, None, "", 3, "hypomagnesemia"),
    ("potassium", 6.5, "mmol/L", 3.5, 5.1, "", 3, "hyperkalemia"),
    ("potassium", 2.5, "mmol/L", 3.5, 5.1, "<", 4, "hypokalemia"),
    ("calcium", 5.5, "mg/dL", 8.5, 10.5, "", 4, "hypocalcemia"),
    ("calcium_ionized", 1.85, "mmol/L", 1.12, 1.32, "", 4, "hypercalcemia_ionized"),
    ("albumin", 20.0, "g/L", 35, 50, "", None, ""),
    ("potassium", 3.0, None, 3.5, 5.1, "", None, ""),
]


def test_each_result_is_graded_by_the_terms_of_its_analyte() -> None:
    import numpy as np

    from labinterp.grading import TERM_NAMES, grade_results

    analytes, values, unit_list, lln, uln, cmp, want, terms = zip(*RESULT_GRADES, strict=True)
    names = sorted({u for u in unit_list if u})
    codes = np.array([names.index(u) if u else -1 for u in unit_list])
    analyte_names = sorted(set(analytes))
    for comparators in (list(cmp), np.array(cmp)):  # a list, or numpy text as the engine has
        grade, term = grade_results(
            np.array([analyte_names.index(a) for a in analytes]),
            analyte_names,
            np.array(values, dtype=float),
            codes,
            names,
            np.array(lln, dtype=float),
            np.array([np.nan if u is None else u for u in uln], dtype=float),
            comparators,
        )
        got = [None if np.isnan(g) else int(g) for g in grade]
        assert got == list(want)
        assert [TERM_NAMES[t] for t in term] == list(terms)
