"""Decide which export column feeds which RAW field: presets, mapping files, header names.

Order of precedence: an explicit mapping file (--mapping) > a preset whose signature
columns are all present (MIMIC, MEDS, Synthea, NHANES) > automatic header detection
using reference_ranges/column_names.toml. `labinterp check` prints the result as a
mapping file that a user can copy and edit.
"""

from __future__ import annotations

import csv
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from labinterp.catalog import analytes, fold_accents
from labinterp.errors import ColumnDetectionError, MappingFileError
from labinterp.resources import reference_file
from labinterp.schema import RAW

# RAW fields a column can feed (everything except provenance and preset-derived ones)
# "collected_time": a time-of-day column joined to the date in "collected_at"
MAPPABLE = (
    *(f for f in RAW if f not in ("source_file", "source_row", "analyte_hint")),
    "collected_time",
)
REQUIRED = ("patient_id", "value_raw")


def header_key(name: str) -> str:
    """'Ref. Range' -> 'ref_range', 'Fecha de extracción' -> 'fecha_de_extraccion'."""
    return re.sub(r"[^a-z0-9]+", "_", fold_accents(name).strip().lower()).strip("_")


@dataclass
class ColumnPlan:
    """How one file's columns become RAW fields."""

    source: str  # "mapping file", "preset <name>", "header names"
    columns: dict[str, str]  # RAW field -> export column
    preset: dict[str, Any] | None = None
    tests: dict[str, str] = field(default_factory=dict)  # test label/code -> analyte id
    layout: str = "long"  # "long" | "wide"
    wide: dict[str, tuple[str, str]] = field(default_factory=dict)  # column -> (analyte, unit)
    date_format: str | None = None
    decimal: str | None = None

    def as_toml(self) -> str:
        lines = [
            f"# mapping used ({self.source}); copy into a file and pass --mapping",
            "[columns]",
        ]
        for name in MAPPABLE:
            if name in self.columns:
                lines.append(f'{name} = "{self.columns[name]}"')
        if self.layout == "wide":
            lines.append("\n[wide]")
            for col, (analyte, unit) in self.wide.items():
                lines.append(f'"{col}" = {{ analyte = "{analyte}", unit = "{unit}" }}')
        if self.tests:
            lines.append("\n[tests]")
            for label, analyte in sorted(self.tests.items()):
                lines.append(f'"{label}" = "{analyte}"')
        options = []
        if self.date_format:
            options.append(f'date_format = "{self.date_format}"')
        if self.decimal:
            options.append(f'decimal = "{self.decimal}"')
        if options:
            lines += ["\n[options]", *options]
        return "\n".join(lines) + "\n"


@cache
def _column_names() -> dict[str, Any]:
    with reference_file("column_names.toml").open("rb") as fh:
        return tomllib.load(fh)


def _synonyms() -> dict[str, tuple[str, ...]]:
    """Header spellings per RAW field (the file's top-level lists)."""
    data = _column_names()
    return {
        k: tuple(header_key(v) for v in vals) for k, vals in data.items() if isinstance(vals, list)
    }


def _split_date_time() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Header spellings of a date-only and of a time-of-day column."""
    pairs = _column_names()["split_date_time"]
    return tuple(map(header_key, pairs["date"])), tuple(map(header_key, pairs["time"]))


@cache
def presets() -> tuple[dict[str, Any], ...]:
    folder = reference_file("presets")
    found = []
    for path in sorted(folder.glob("*.toml")):
        with path.open("rb") as fh:
            found.append(tomllib.load(fh))
    return tuple(found)


@cache
def item_map(name: str) -> dict[str, str]:
    path = reference_file("presets") / f"{name}.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        return {row["itemid"]: row["analyte"] for row in csv.DictReader(fh)}


def _match_preset(header: list[str]) -> dict[str, Any] | None:
    exact = set(header)
    for preset in presets():
        if all(col in exact for col in preset["preset"]["signature"]):
            return preset
    return None


# "Mg (mg/dL)", "Calcium [mmol/L]", "K mmol/L" -> analyte + unit from a wide header
_WIDE_HEADER = re.compile(r"^\s*(?P<name>.+?)\s*[\(\[]\s*(?P<unit>[^\)\]]+?)\s*[\)\]]\s*$")


def _wide_columns(header: list[str]) -> dict[str, tuple[str, str]]:
    from labinterp.catalog import analyte_for

    found = {}
    for col in header:
        m = _WIDE_HEADER.match(col)
        if not m:
            continue
        analyte = analyte_for(None, None, m.group("name"))
        if analyte:
            found[col] = (analyte, m.group("unit"))
    return found


def plan_from_mapping(path: Path, header: list[str], file_label: str) -> ColumnPlan:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MappingFileError(
            f"the mapping file cannot be read ({exc}).",
            file=path.name,
            fix="check the TOML syntax; `labinterp check FILE` prints a valid example.",
        ) from exc
    columns = dict(data.get("columns", {}))
    unknown_fields = [k for k in columns if k not in MAPPABLE]
    if unknown_fields:
        raise MappingFileError(
            f"unknown field(s) {unknown_fields} in [columns].",
            file=path.name,
            fix=f"use only these field names: {', '.join(MAPPABLE)}.",
        )
    missing_cols = [c for c in columns.values() if c not in header]
    wide = {str(k): (v["analyte"], v["unit"]) for k, v in data.get("wide", {}).items()}
    missing_cols += [c for c in wide if c not in header]
    if missing_cols:
        raise MappingFileError(
            f"the mapping names column(s) {missing_cols} that {file_label} does not have"
            f" (its columns are: {', '.join(header[:30])}).",
            file=path.name,
            fix="correct the column names in the mapping file.",
        )
    tests = {str(k): str(v) for k, v in data.get("tests", {}).items()}
    bad = [a for a in [*tests.values(), *(a for a, _ in wide.values())] if a not in analytes()]
    if bad:
        raise MappingFileError(
            f"unknown analyte id(s) {sorted(set(bad))}.",
            file=path.name,
            fix=f"use one of: {', '.join(analytes())}.",
        )
    options = data.get("options", {})
    return ColumnPlan(
        source=f"mapping file {path.name}",
        columns=columns,
        tests=tests,
        layout="wide" if wide else "long",
        wide=wide,
        date_format=options.get("date_format"),
        decimal=options.get("decimal"),
    )


def plan_columns(header: list[str], file_label: str, mapping: Path | None = None) -> ColumnPlan:
    if mapping is not None:
        return plan_from_mapping(mapping, header, file_label)
    preset = _match_preset(header)
    if preset is not None:
        meta = preset["preset"]
        columns = {k: v for k, v in preset.get("columns", {}).items() if v in header}
        for k, v in preset.get("fallback_columns", {}).items():
            if k not in columns and v in header:
                columns[k] = v
        wide = {
            col: (spec["analyte"], spec["unit"])
            for col, spec in preset.get("wide", {}).items()
            if col in header
        }
        return ColumnPlan(
            source=f"preset {meta['name']}",
            columns=columns,
            preset=preset,
            layout=meta.get("layout", "long"),
            wide=wide,
        )
    return _plan_from_headers(header, file_label)


def _plan_from_headers(header: list[str], file_label: str) -> ColumnPlan:
    keys = {col: header_key(col) for col in header}
    columns: dict[str, str] = {}
    used: set[str] = set()
    for name, spellings in _synonyms().items():
        for spelling in spellings:  # earlier spellings are stronger evidence
            hit = next((c for c in header if keys[c] == spelling and c not in used), None)
            if hit:
                columns[name] = hit
                used.add(hit)
                break
    _pair_date_and_time(header, keys, columns, used)
    wide = _wide_columns([c for c in header if c not in used])
    if wide and "value_raw" not in columns:
        if "patient_id" not in columns:
            raise _undetected(header, file_label, ["patient_id"])
        return ColumnPlan(
            source="header names (wide layout)", columns=columns, layout="wide", wide=wide
        )
    if "test_name" not in columns and "test_code" not in columns and "loinc" not in columns:
        raise _undetected(header, file_label, ["test (name, code or LOINC)"])
    missing = [f for f in (*REQUIRED, "collected_at") if f not in columns]
    if missing:
        raise _undetected(header, file_label, missing)
    return ColumnPlan(source="header names", columns=columns)


def _pair_date_and_time(
    header: list[str], keys: dict[str, str], columns: dict[str, str], used: set[str]
) -> None:
    """When the collection time found is a date-only or a time-of-day column and the file
    has the other half, use both: "collected_at" the date, "collected_time" the time
    (the reader joins them row by row, see reading._joined_time). Alone, the time column
    would have no date, and the date column would make same-day draws one time."""
    found = columns.get("collected_at")
    if found is None:
        return
    dates, times = _split_date_time()

    def unused(spellings: tuple[str, ...]) -> str | None:
        for spelling in spellings:
            hit = next((c for c in header if keys[c] == spelling and c not in used), None)
            if hit:
                return hit
        return None

    if keys[found] in times and (date := unused(dates)):
        columns["collected_at"], columns["collected_time"] = date, found
        used.add(date)
    elif keys[found] in dates and (time := unused(times)):
        columns["collected_time"] = time
        used.add(time)


def _undetected(header: list[str], file_label: str, missing: list[str]) -> ColumnDetectionError:
    shown = ", ".join(header[:20]) + (" ..." if len(header) > 20 else "")
    return ColumnDetectionError(
        f"no column for {', '.join(missing)} could be recognised among the headers ({shown}).",
        file=file_label,
        row=1,
        fix='write a mapping file naming the columns, e.g. [columns] patient_id = "MRN",'
        " and pass it with --mapping (`labinterp check FILE` shows what was recognised).",
    )
