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
    # the file's columns that feed nothing: listed by `check` and warned about, so that a
    # column dropped for want of a known header (a lab's own ranges, a comment) is seen
    unused: list[str] = field(default_factory=list)

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


_RANGE_FIELDS = ("range_raw", "range_low_raw", "range_high_raw")
# "Normal" alone may be a flag as well as a range: read as the range only when no other
# column is one
_RANGE_LAST_RESORT = "normal"


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


# "Mg (mg/dL)", "Calcium [mmol/L]" -> analyte + unit from a wide header
_WIDE_HEADER = re.compile(r"^\s*(?P<name>.+?)\s*[\(\[]\s*(?P<unit>[^\)\]]+?)\s*[\)\]]\s*$")


def _wide_columns(header: list[str]) -> dict[str, tuple[str, str]]:
    found = {}
    for col in header:
        read = _wide_header(col)
        if read:
            found[col] = read
    return found


def _wide_header(col: str) -> tuple[str, str] | None:
    """(analyte, unit) of a wide header: a test name with its unit in brackets
    ("Mg (mg/dL)"), or followed by a unit labinterp knows ("K+ mmol/L", "Magnesium
    mmol/L"); None for any other header."""
    from labinterp import units
    from labinterp.catalog import analyte_for

    m = _WIDE_HEADER.match(col)
    if m:
        analyte = analyte_for(None, None, m.group("name"))
        return (analyte, m.group("unit")) if analyte else None
    # without brackets the unit is the last word(s): requiring a known unit keeps a test
    # name of several words ("Vitamin D") from being cut into name and "unit"
    words = col.split()
    for cut in range(len(words) - 1, 0, -1):
        unit = " ".join(words[cut:])
        if units.lookup(unit) is None:
            continue
        analyte = analyte_for(None, None, " ".join(words[:cut]))
        return (analyte, unit) if analyte else None
    return None


def plan_from_mapping(path: Path, header: list[str], file_label: str) -> ColumnPlan:
    if not path.is_file():
        raise MappingFileError(
            "the mapping file does not exist." if not path.exists() else "this is not a file.",
            file=path.name,
            fix="check the path given to --mapping.",
        )
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
    if missing_cols:  # the file's own headers are not quoted: see `_undetected`
        if looks_like_data(header):
            error = MappingFileError(
                f"{file_label}: {_DATA_NOT_HEADER}", file=path.name, fix=_ADD_HEADER
            )
        else:
            n = len(header)
            error = MappingFileError(
                f"the mapping names column(s) {missing_cols} that {file_label} does not have"
                f" ({n} column name{'s' if n != 1 else ''} read).",
                file=path.name,
                fix="correct the column names in the mapping file; `labinterp check FILE`"
                " lists the names read.",
            )
        error.columns_read = tuple(header)
        raise error
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
    plan = _plan(header, file_label, mapping)
    used = {*plan.columns.values(), *plan.wide}
    split = (plan.preset or {}).get("split_code")
    if split:  # the preset reads its test code and unit out of this column
        used.add(split["column"])
    plan.unused = [c for c in header if c not in used]
    return plan


def _plan(header: list[str], file_label: str, mapping: Path | None) -> ColumnPlan:
    detected = _detected(header)
    if mapping is not None:
        # a mapping may leave the time out: its rows are then read as undated draws
        plan = _with_mapping(detected, plan_from_mapping(mapping, header, file_label))
        return _checked(plan, header, file_label, need_time=False)
    return _checked(detected, header, file_label, need_time=True)


def _detected(header: list[str]) -> ColumnPlan:
    """The columns a preset or the header names give, not yet checked for the fields a
    file needs (`_checked`)."""
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
    return _plan_from_headers(header)


def _with_mapping(detected: ColumnPlan, mapped: ColumnPlan) -> ColumnPlan:
    """A mapping file's columns, tests and options over what was detected: it names what
    detection missed or got wrong, and leaves the rest as detected (a mapping with only
    [tests] or [options] changes only those). A column the mapping gives a field is taken
    from any field detection gave it."""
    taken = set(mapped.columns.values()) | set(mapped.wide)
    columns = {
        name: col
        for name, col in detected.columns.items()
        if name not in mapped.columns and col not in taken
    }
    columns.update(mapped.columns)
    wide = {col: spec for col, spec in detected.wide.items() if col not in taken}
    wide.update(mapped.wide)
    return ColumnPlan(
        source=mapped.source
        if detected.source == "header names"
        else f"{mapped.source} over {detected.source}",
        columns=columns,
        preset=detected.preset,
        tests={**detected.tests, **mapped.tests},
        layout="wide"
        if mapped.wide or (detected.layout == "wide" and "value_raw" not in mapped.columns)
        else "long",
        wide=wide,
        date_format=mapped.date_format or detected.date_format,
        decimal=mapped.decimal or detected.decimal,
    )


def _plan_from_headers(header: list[str]) -> ColumnPlan:
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
    last_resort = next((c for c in header if keys[c] == _RANGE_LAST_RESORT), None)
    if last_resort and last_resort not in used and not any(f in columns for f in _RANGE_FIELDS):
        columns["range_raw"] = last_resort
        used.add(last_resort)
    _pair_date_and_time(header, keys, columns, used)
    wide = _wide_columns([c for c in header if c not in used])
    if wide and "value_raw" not in columns:
        return ColumnPlan(
            source="header names (wide layout)", columns=columns, layout="wide", wide=wide
        )
    return ColumnPlan(source="header names", columns=columns)


def _checked(plan: ColumnPlan, header: list[str], file_label: str, need_time: bool) -> ColumnPlan:
    """`plan`, if it has the fields every row needs: a patient id, and in the long layout
    a test, a value and a collection time; else the error naming what is missing. A
    preset's layout is known to hold them, wherever it keeps them."""
    if plan.preset is not None:
        return plan
    columns = plan.columns
    if plan.layout == "wide":
        if "patient_id" not in columns:
            raise _undetected(header, file_label, ["patient_id"], columns)
        return plan
    if "test_name" not in columns and "test_code" not in columns and "loinc" not in columns:
        raise _undetected(header, file_label, ["test (name, code or LOINC)"], columns)
    missing = [f for f in (*REQUIRED, *(["collected_at"] if need_time else [])) if f not in columns]
    if missing:
        raise _undetected(header, file_label, missing, columns)
    return plan


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


_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|ene|abr|ago|dic)[a-z]*\.?"
# a cell that is a number ("0801234", "1.4", "1.6-2.6", "<0.5"), perhaps with a unit
# ("1.23 mg/dL", "3.1 mmol/L"), a date ("2024-02-01 07:00", "2024-03-01T08:30:00",
# "03/04/2024", "01 Mar 2024", "Mar 1, 2024", "1-Mar-2024") or a time of day ("08:30"):
# what a row of results holds, and column names almost never are
_DATA_CELL = re.compile(
    r"\s*(?:"
    r"[<>]?=?\s*[-+]?\d+(?:[.,]\d+)?(?:\s*-\s*\d+(?:[.,]\d+)?)?(?:\s+[^\s\d]\S{0,11})?"
    r"|\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}(?!\d).*"
    rf"|\d{{1,2}}[-/. ]*{_MONTH}[-/., ]*\d{{2,4}}(?!\d).*"
    rf"|{_MONTH}\s*\d{{1,2}}(?:st|nd|rd|th)?,?\s*\d{{2,4}}(?!\d).*"
    r"|\d{1,2}:\d{2}(?::\d{2})?(?:\s*[ap]\.?m\.?)?"
    r")\s*",
    re.IGNORECASE,
)


def looks_like_data(header: list[str]) -> bool:
    """Whether the line read as the header is a row of results (a headerless export).
    Such a line is patient data: messages must not quote it (nor any header that was not
    recognised, see `_undetected`)."""
    return sum(bool(_DATA_CELL.fullmatch(c)) for c in header) >= 2


_DATA_NOT_HEADER = (
    "the line read as the header looks like a row of results, not column names"
    " (it holds numbers or dates where column names would be)."
)
_ADD_HEADER = (
    "add a header line naming the columns above the first row (e.g. Patient,Collected,Test,"
    "Result,Unit): labinterp reads the first line as the column names. If it then does not"
    " recognise them, pass a mapping file with --mapping (`labinterp check FILE` prints one)."
)


def _recognised(columns: dict[str, str], header: list[str]) -> str:
    """The fields recognised, by field and column number (never the header's text)."""
    found = sorted((header.index(col) + 1, name) for name, col in columns.items() if col in header)
    if not found:
        return "none of them is a column name labinterp knows"
    return "recognised: " + ", ".join(f"{name} (column {n})" for n, name in found)


def _undetected(
    header: list[str], file_label: str, missing: list[str], columns: dict[str, str] | None = None
) -> ColumnDetectionError:
    """The error for a file whose columns lack a required field. It quotes no header: one
    not recognised may be a patient's data (a headerless export, a cover sheet naming the
    patient, JSON keyed by patient id). `labinterp check FILE` lists them on request."""
    if looks_like_data(header):
        error = ColumnDetectionError(_DATA_NOT_HEADER, file=file_label, row=1, fix=_ADD_HEADER)
    else:
        n = len(header)
        error = ColumnDetectionError(
            f"no column for {', '.join(missing)} could be recognised among the {n} column"
            f" name{'s' if n != 1 else ''} read there ({_recognised(columns or {}, header)}).",
            file=file_label,
            row=1,
            fix="if that is the header, write a mapping file naming the missing column(s),"
            ' e.g. [columns] patient_id = "MRN", and pass it with --mapping (the columns it'
            " does not name are still recognised by their headers); `labinterp check FILE`"
            " lists the names read. If the file has no header line, add one above the"
            " first row.",
        )
    error.columns_read = tuple(header)
    return error
