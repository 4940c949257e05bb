"""Rule parameters: every threshold, window and cut-off, read once from
reference_ranges/rule_parameters.toml and converted to canonical units.

Concentrations name their analyte and are converted with labinterp.units.factor;
durations ("h", "d") become pandas Timedeltas.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

from labinterp import units
from labinterp.errors import ConfigError, UnitError
from labinterp.resources import reference_file

_HOURS = {"h": 1.0, "d": 24.0}


@dataclass(frozen=True)
class Parameter:
    key: str
    value: float | pd.Timedelta  # canonical unit of its analyte, or a duration
    unit: str
    source: str
    # The same threshold as the source prints it in other units (`also` in the file), as
    # (factor of that unit to the canonical one, number in that unit): 1.2 mg/dL beside
    # 0.5 mmol/L. See `as_compared`.
    printed: tuple[tuple[float, float], ...] = ()


@cache
def parameters() -> dict[str, Parameter]:
    """All rule parameters, converted once to canonical units (durations to Timedelta)."""
    path = reference_file("rule_parameters.toml")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name} is not valid TOML: {exc}") from exc
    out: dict[str, Parameter] = {}
    for key, entry in data.items():
        try:
            raw, unit, source = float(entry["value"]), str(entry["unit"]), str(entry["source"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path.name}: [{key}] needs value, unit and source") from exc
        value: float | pd.Timedelta
        printed: tuple[tuple[float, float], ...] = ()
        if unit in _HOURS:
            value = pd.Timedelta(hours=raw * _HOURS[unit])
        elif "analyte" in entry:
            analyte = str(entry["analyte"])
            try:
                value = raw * units.factor(analyte, unit)
                printed = tuple(
                    (units.factor(analyte, u), float(v)) for u, v in entry.get("also", {}).items()
                )
            except (UnitError, TypeError, ValueError, AttributeError) as exc:
                raise ConfigError(f"{path.name}: [{key}] {exc}") from exc
            for f, v in printed:
                # the same threshold printed twice: a typo in either shows here
                if abs(v * f - value) > 0.02 * abs(value):
                    raise ConfigError(
                        f"{path.name}: [{key}] `also` gives {v} in a unit worth {v * f:g} "
                        f"{unit}, not {raw} {unit}"
                    )
        else:
            value = raw
        out[key] = Parameter(key, value, unit, source, printed)
    return out


def printed_unit(key: str, value: np.ndarray, reported: np.ndarray) -> np.ndarray:
    """Per result: which of parameter `key`'s printed units (`also`) the result was
    reported in, as an index into Parameter.printed, or -1 for none. The unit is told by
    the result's own conversion factor (canonical value / reported value)."""
    out = np.full(len(value), -1, dtype=np.int64)
    for i, (f, _) in enumerate(_get(key).printed):
        out[(out == -1) & units.reported_in(value, reported, f)] = i
    return out


def as_compared(key: str, value: np.ndarray, reported: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The numbers to compare with threshold `key`, per result, and the threshold for each.

    A result reported in a unit the source also prints the threshold in is compared as
    reported with that printed number; every other result, canonical value against the
    canonical threshold. Converting both sides would let rounding decide a tie: 1.2 mg/dL
    is 0.4937 mmol/L, "below 0.5 mmol/L", while the source's own cut-off for mg/dL is 1.2.
    """
    values = np.array(value, dtype=float)  # a copy
    limits = np.full(len(values), number(key))
    which = printed_unit(key, values, reported)
    for i, (_, printed) in enumerate(_get(key).printed):
        m = which == i
        values[m] = np.asarray(reported, dtype=float)[m]
        limits[m] = printed
    return values, limits


def change_as_compared(
    key: str,
    first: tuple[np.ndarray, np.ndarray],
    last: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """As `as_compared`, for the change from a first to a last result, each given as
    (canonical values, reported values): the change is taken as reported when both
    results were reported in the same printed unit of threshold `key` (a rise of 10 ng/mL
    is the source's 10 ng/mL, not 24.96 nmol/L), else in the canonical unit."""
    first_unit = printed_unit(key, *first)
    same = (first_unit >= 0) & (first_unit == printed_unit(key, *last))
    change = np.where(same, last[1] - first[1], last[0] - first[0])
    printed = np.array([number(key), *(v for _, v in _get(key).printed)])
    return change, np.where(same, printed[first_unit + 1], number(key))


def number(key: str) -> float:
    """A concentration or coefficient parameter, in the canonical unit of its analyte."""
    p = _get(key)
    if isinstance(p.value, pd.Timedelta):
        raise ConfigError(f"rule parameter '{key}' is a duration, not a number")
    return p.value


def duration(key: str) -> pd.Timedelta:
    p = _get(key)
    if not isinstance(p.value, pd.Timedelta):
        raise ConfigError(f"rule parameter '{key}' must have unit 'h' or 'd'")
    return p.value


def _get(key: str) -> Parameter:
    try:
        return parameters()[key]
    except KeyError:
        raise ConfigError(
            f"rule parameter '{key}' is missing from rule_parameters.toml",
            fix="restore the entry (value, unit, source) in reference_ranges/rule_parameters.toml.",
        ) from None
