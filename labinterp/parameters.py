"""Rule parameters: every threshold, window and cut-off, read once from
reference_ranges/rule_parameters.toml and converted to canonical units.

Concentrations name their analyte and are converted with labinterp.units.factor;
durations ("h", "d") become pandas Timedeltas.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache

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
        if unit in _HOURS:
            value = pd.Timedelta(hours=raw * _HOURS[unit])
        elif "analyte" in entry:
            try:
                value = raw * units.factor(str(entry["analyte"]), unit)
            except UnitError as exc:
                raise ConfigError(f"{path.name}: [{key}] {exc}") from exc
        else:
            value = raw
        out[key] = Parameter(key, value, unit, source)
    return out


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
