"""Limits printed in two units ("0.70 mmol/L (1.7 mg/dL)") judge a result in the unit it
was reported in: the bundled fallback ranges and the rule thresholds with `also`.

Converting a result and a limit that the source rounded separately lets the rounding decide
a tie: 1.7 mg/dL is 0.6994 mmol/L, under the 0.70 mmol/L printed for the same range.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labinterp import catalog, parameters
from labinterp.errors import ConfigError
from labinterp.reading import read

HEADER = "patient_id,collected_at,test,result,unit\n"


def _results(tmp_path: Path, body: str):
    path = tmp_path / "export.csv"
    path.write_text(HEADER + body, encoding="utf-8")
    res = read(path)
    assert res.rows_rejected == 0, res.rejected.to_dict("records")
    return res.results


def _refused(
    monkeypatch: pytest.MonkeyPatch, module: Any, loader: Any, bad: Path, match: str
) -> None:
    """`loader` (a cached reader of a reference file of `module`) refuses the file `bad`."""
    monkeypatch.setattr(module, "reference_file", lambda name: bad)
    loader.cache_clear()
    try:
        with pytest.raises(ConfigError, match=match):
            loader()
    finally:
        monkeypatch.undo()
        loader.cache_clear()


@pytest.mark.parametrize(
    ("test", "value", "unit", "printed"),
    [
        ("Magnesium", "1.7", "mg/dL", (1.7, 2.55)),  # as printed in mg/dL
        ("Magnesium", "1.7", "mg/dl", (1.7, 2.55)),  # another spelling of the same unit
        ("Magnesium", "0.70", "mmol/L", (0.70, 1.05)),  # the canonical row
        ("Magnesium", "1.4", "mEq/L", (1.4, 2.1)),  # no row in mEq/L: converted
        ("Calcium", "8.5", "mg/dL", (8.5, 10.5)),
        ("Phosphate", "2.5", "mg/dL", (2.5, 4.5)),
        ("25-OH Vitamin D", "20", "ng/mL", (20.0, 100.0)),
    ],
)
def test_a_bundled_range_is_taken_as_printed_in_the_reported_unit(
    tmp_path: Path, test: str, value: str, unit: str, printed: tuple[float, float]
) -> None:
    r = _results(tmp_path, f"P1,2024-03-01 08:00,{test},{value},{unit}\n").iloc[0]
    assert r["range_origin"] == "bundled"
    assert (r["range_low_reported"], r["range_high_reported"]) == pytest.approx(printed)
    # the value sits exactly on the lower limit in both units: not below it
    assert r["value"] == pytest.approx(r["range_low"], rel=1e-12)
    assert not r["value"] < r["range_low"]


def test_a_value_on_the_printed_lower_limit_is_not_low_and_one_under_it_is(
    tmp_path: Path,
) -> None:
    from labinterp.interpret import interpret

    body = (
        "P1,2024-03-01 08:00,Magnesium,1.7,mg/dL\n"
        'P1,2024-03-01 08:00,"Calcium, ionized",1.01,mmol/L\n'
        "P2,2024-03-01 08:00,Magnesium,1.69,mg/dL\n"
        'P2,2024-03-01 08:00,"Calcium, ionized",1.01,mmol/L\n'
    )
    path = tmp_path / "export.csv"
    path.write_text(HEADER + body, encoding="utf-8")
    f = interpret(path)
    p1 = f[f["rule_id"] == "hypomagnesemia_hypocalcemia"].set_index("patient_id")["status"]
    assert p1.to_dict() == {"P1": "not_fired", "P2": "fired"}


def test_every_bundled_range_in_a_lab_unit_repeats_a_canonical_one() -> None:
    ranges = catalog.fallback_ranges()
    lab_unit = [r for r in ranges if not r.canonical]
    assert {(r.analyte, r.unit) for r in lab_unit} >= {
        ("magnesium", "mg/dL"),
        ("calcium", "mg/dL"),
        ("phosphate", "mg/dL"),
        ("vitamin_d_25oh", "ng/mL"),
    }
    for r in lab_unit:
        (twin,) = [
            c
            for c in ranges
            if c.canonical and (c.analyte, c.sex, c.age_min) == (r.analyte, r.sex, r.age_min)
        ]
        for mine, theirs in ((r.low, twin.low), (r.high, twin.high)):
            assert (mine is None) == (theirs is None)
            if mine is not None and theirs is not None:
                assert mine == pytest.approx(theirs, rel=0.02)


# A reference file whose second printing of a number disagrees with the first (a typo in
# either): (module, its cached loader, the file's name, its text, what the refusal names).
PRINTED_TWICE_TYPOS = {
    "range_in_a_lab_unit": (
        catalog,
        "fallback_ranges",
        "fallback_ranges.csv",
        "analyte,sex,age_min_years,age_max_years,low,high,unit,source\n"
        "magnesium,any,18,,0.70,1.05,mmol/L,S7 S8\n"
        "magnesium,any,18,,1.7,25.5,mg/dL,S7 S8\n",  # a typo: 25.5 for 2.55
        "magnesium range in mg/dL",
    ),
    "threshold_also_printed": (
        parameters,
        "parameters",
        "rule_parameters.toml",
        '[p1_mg_pth_failure_below]\nvalue = 0.5\nunit = "mmol/L"\nanalyte = "magnesium"\n'
        'also = { "mg/dL" = 2.1 }\nsource = "S1"\n',
        "also",
    ),
}


@pytest.mark.parametrize("case", sorted(PRINTED_TWICE_TYPOS))
def test_a_number_printed_twice_must_agree_or_the_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    module, loader, name, text, match = PRINTED_TWICE_TYPOS[case]
    bad = tmp_path / name
    bad.write_text(text, encoding="utf-8")
    _refused(monkeypatch, module, getattr(module, loader), bad, match)


def test_a_threshold_is_compared_as_printed_in_the_reported_unit() -> None:
    mmol = 10 / 24.305  # mg/dL -> mmol/L for magnesium
    reported = np.array([1.2, 1.19, 0.5, 0.49, 1.0])
    canonical = np.array([1.2 * mmol, 1.19 * mmol, 0.5, 0.49, 1.0 * 0.5])  # last: mEq/L
    values, limits = parameters.as_compared("p1_mg_pth_failure_below", canonical, reported)
    below = values < limits
    # 1.2 mg/dL is the printed cut-off, not below it; 1.0 mEq/L is exactly 0.5 mmol/L
    assert below.tolist() == [False, True, False, True, False]
    assert limits[:2].tolist() == [1.2, 1.2]
    assert limits[2:].tolist() == [0.5, 0.5, 0.5]


def test_a_change_is_compared_as_printed_only_when_both_results_share_the_unit() -> None:
    ng = 2.495944090852365  # ng/mL -> nmol/L for 25-OH vitamin D
    first_rep = np.array([6.0, 6.0, 15.0])
    first = np.array([6.0 * ng, 6.0 * ng, 15.0])  # the last pair: first result in nmol/L
    last_rep = np.array([16.0, 15.9, 16.0])
    last = last_rep * ng
    change, least = parameters.change_as_compared(
        "p2_min_expected_rise", (first, first_rep), (last, last_rep)
    )
    assert change[:2] == pytest.approx([10.0, 9.9])
    assert least.tolist() == [10.0, 10.0, 25.0]
    assert (change < least).tolist() == [False, True, True]


def test_a_converted_bundled_limit_shows_enough_digits_to_tell_a_value_from_it(
    tmp_path: Path,
) -> None:
    # no mg/dL printing of the ionized Ca range: 1.15 mmol/L is 4.6092 mg/dL, shown as
    # 4.609, so an ionized Ca of 4.6 mg/dL (1.1477 mmol/L, low) does not sit on a limit
    # that reads "4.6"
    r = _results(tmp_path, 'P1,2024-03-01 08:00,"Calcium, ionized",4.6,mg/dL\n').iloc[0]
    assert (r["range_low_reported"], r["range_high_reported"]) == (4.609, 5.29)
    assert r["value"] < r["range_low"] and r["value_reported"] < r["range_low_reported"]


def test_a_bundled_range_printed_in_the_reported_unit_is_used_as_printed(
    tmp_path: Path,
) -> None:
    # PTH 15-65 pg/mL as labs print it in pmol/L, 1.6-6.9: a PTH of 6.9 pmol/L is the
    # upper limit, not 65.03 pg/mL above 65
    r = _results(tmp_path, 'P1,2024-03-01 08:00,"PTH, intact",6.9,pmol/L\n').iloc[0]
    assert (r["range_low_reported"], r["range_high_reported"]) == (1.6, 6.9)
    assert r["value_reported"] <= r["range_high_reported"]
