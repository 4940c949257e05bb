"""Public reading API: any supported export -> canonical RESULTS + REJECTED tables.

    result = labinterp.read("export.csv")
    result.results    # one row per usable in-scope result, canonical units
    result.rejected   # one row per unusable row, with a reason
    assert result.rows_in == result.rows_used + result.rows_rejected

Steps per file: sniff the format -> read a text table (or FHIR resources) -> plan which
column feeds which field -> build the RAW table -> normalize -> (all files) deduplicate.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from labinterp.errors import (
    ColumnDetectionError,
    DamagedFileError,
    DateFormatError,
    InputFileError,
    LabinterpError,
    MappingFileError,
)
from labinterp.normalize import (
    Options,
    decimal_evidence,
    normalize,
    normalize_unique,
    patient_id_text,
    slash_order,
)
from labinterp.readers import columns as colplan
from labinterp.readers import duplicates, fhir, formats, medications, sniff, table
from labinterp.readers.hl7v2 import iter_hl7
from labinterp.readers.medications import MedicationRecord
from labinterp.schema import RAW, REJECTED, RESULTS, STR, check, conform, empty
from labinterp.test_names import not_read_detail

PathLike = str | os.PathLike[str]
log = logging.getLogger("labinterp")


@dataclass
class FileReport:
    """What happened to one input file (printed by `labinterp check`)."""

    name: str
    format: str
    plan: str  # where the column mapping came from
    mapping_toml: str  # the mapping as a file a user can copy
    rows_in: int
    rows_used: int = 0
    rows_rejected: int = 0
    undated: bool = False
    fields: tuple[str, ...] = ()  # the RAW fields the file's columns feed (tables only)
    header_line: int = 1  # below a title block above the table, if the file has one
    # records of their own (FHIR resources, a companion list) naming a medicine the
    # patterns read: written into the medication text of the results they cover
    medication_records: int = 0
    warnings: tuple[str, ...] = ()  # what the user should know about the file as a whole
    unused_columns: tuple[str, ...] = ()  # columns holding values that feed no field


@dataclass
class ReadResult:
    results: pd.DataFrame
    rejected: pd.DataFrame
    files: list[FileReport] = field(default_factory=list)
    # files found in folders that are not exports: {"file": name, "reason": why}, and the
    # medication records of a FHIR file without results ("medication_records")
    skipped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows_in(self) -> int:
        return sum(f.rows_in for f in self.files)

    @property
    def rows_used(self) -> int:
        return len(self.results)

    @property
    def rows_rejected(self) -> int:
        return len(self.rejected)


@dataclass(frozen=True)
class UnusedPatients:
    """The patients whose every row was rejected: they have no result, so no finding and
    no handout. `by_reason`: per reason, how many of them have rows rejected for it (a
    patient with rows of two reasons counts under both)."""

    patients: int
    by_reason: dict[str, int]


def unused_patients(rejected: pa.Table, used_ids: pa.Array | pa.ChunkedArray) -> UnusedPatients:
    """The patients of the `rejected` rows (REJECTED columns patient_id and reason) who are
    not among `used_ids`. A damaged id ("1.23457E+11") is left out: it may be several
    patients whose ids a spreadsheet made one (its rows are counted by reason elsewhere)."""
    ids = rejected.column("patient_id")
    reason = rejected.column("reason")
    wanted = pc.and_(pc.is_valid(ids), pc.not_equal(reason, "damaged_patient_id"))
    used = pc.unique(used_ids).cast(ids.type)
    wanted = pc.and_(wanted, pc.invert(pc.is_in(ids, value_set=used)))
    pairs = (
        rejected.select(["patient_id", "reason"])
        .filter(wanted)
        .group_by(["patient_id", "reason"])
        .aggregate([])
    )
    by_reason = {
        str(row["values"]): int(row["counts"])
        for row in pairs.column("reason").value_counts().to_pylist()
    }
    return UnusedPatients(
        len(pc.unique(pairs.column("patient_id"))), dict(sorted(by_reason.items()))
    )


# ---------------------------------------------------------------- public API


def read(
    paths: PathLike | Iterable[PathLike],
    *,
    mapping: PathLike | None = None,
    date_format: str | None = None,
) -> ReadResult:
    """Read one or more exports, or the exports inside folders, into canonical results;
    duplicates across them are rejected.

    A file found in a folder that cannot be read as an export (an item dictionary, a
    demographics table, an HL7 message without results) is skipped and listed in
    `skipped` with the reason; a file named directly that cannot be read is an error.
    """
    found = sniff.expand_paths([paths] if isinstance(paths, (str, os.PathLike)) else paths)
    labels = sniff.display_names([f for f, _ in found])
    parts: list[ReadResult] = []
    skipped: list[dict[str, Any]] = []
    # One file drops its repeats while normalizing, on codes it already holds; several
    # files can repeat one another, so their union goes through `deduplicate`.
    alone = len(found) == 1
    bulk = BulkExport.of([f for f, _ in found])
    for (p, in_folder), label in zip(found, labels, strict=True):
        try:
            parts.append(
                _read_one(
                    p,
                    mapping=Path(mapping) if mapping else None,
                    date_format=date_format,
                    dedupe=alone,
                    label=label,
                    other_medicines=bulk.records_beside(p),
                )
            )
        except (ColumnDetectionError, InputFileError) as exc:
            if not in_folder or isinstance(exc, DamagedFileError):
                raise  # a damaged export is not skipped: its rows would vanish unseen
            skipped.append(bulk.skipped(p, label, exc))
    if skipped:  # file names only: the reasons can quote a header
        log.info(
            "skipped %d file(s) found in folders that are not lab exports: %s "
            "(`labinterp check` shows why)",
            len(skipped),
            ", ".join(s["file"] for s in skipped),
        )
    if not parts:  # file names only here too: the reasons are `check`'s to show
        names = [s["file"] for s in skipped]
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        raise InputFileError(
            f"none of the files found could be read as a lab export ({shown}).",
            fix="`labinterp check FILE` on one of them says why; name the export files"
            " directly, or pass --mapping for their columns.",
        )
    if alone:
        results, rejected = parts[0].results, parts[0].rejected
    else:
        results, rejected = _concat(parts)
        results, dups = deduplicate(results)
        rejected = pd.concat([rejected, dups], ignore_index=True) if len(dups) else rejected
    reports = [f for p in parts for f in p.files]
    for f in reports:
        if alone and len(reports) == 1:
            f.rows_used, f.rows_rejected = len(results), len(rejected)
        else:
            f.rows_used = int((results["source_file"] == f.name).sum())
            f.rows_rejected = int((rejected["source_file"] == f.name).sum())
    out = ReadResult(
        check(conform(results, RESULTS), RESULTS, "results"),
        check(conform(rejected, REJECTED), REJECTED, "rejected"),
        reports,
        skipped,
    )
    assert out.rows_in == out.rows_used + out.rows_rejected, "row accounting broke"
    return out


@dataclass
class BulkExport:
    """The FHIR NDJSON files among files read together, each with its index pass (see
    fhir.ndjson_index). A bulk export writes each resource type to a file of its own, so
    the medication records of the results' patients stand in other files than the
    Observations: every FHIR file is read with the records of the others."""

    indexes: dict[Path, fhir.Referenced] = field(default_factory=dict)

    @classmethod
    def of(cls, paths: list[Path]) -> BulkExport:
        if len(paths) < 2:  # a file alone has only its own records
            return cls()
        indexes = {}
        for p in paths:
            try:
                sniffed = sniff.sniff(p)
                # a one-line NDJSON file is also one JSON document: its name tells
                lines_named = p.name.lower().removesuffix(".gz").endswith((".ndjson", ".jsonl"))
                if (sniffed.kind == "ndjson" or lines_named) and _is_fhir(p, sniffed):
                    lines = formats.iter_ndjson(p, sniffed, fhir.ndjson_wanted_for_index)
                    indexes[p] = fhir.ndjson_index(lines)
            except LabinterpError:
                continue  # reading the file itself says what is wrong with it, in its turn
        # an order may name its medicine by a Medication resource of another file
        products = {k: v for index in indexes.values() for k, v in index.products.items()}
        for index in indexes.values():
            index.products = {**products, **index.products}  # its own file's first
        return cls(indexes)

    def records_beside(self, path: Path) -> list[MedicationRecord]:
        """The medication records of the other files (none unless `path` is FHIR)."""
        if not self.indexes or not _may_be_fhir(path):
            return []
        return [
            r for q, index in self.indexes.items() if q != path for r in index.medication_records()
        ]

    def skipped(self, path: Path, label: str, exc: LabinterpError) -> dict[str, Any]:
        """The entry of `skipped` for a file found in a folder that is not read as an export
        (see `why_skipped`); a FHIR file without results may hold medication records the
        other files' results are read with, and says how many."""
        index = self.indexes.get(path)
        records = len(index.medication_records()) if index is not None else 0
        if not records and index is not None and index.products:
            reason = (
                f"no Observation resources (lab results); its {len(index.products)} Medication"
                " resources name the medicines of the other FHIR files' medication records."
            )
            return {"file": label, "reason": reason}
        if not records:
            return {"file": label, "reason": why_skipped(path, exc)}
        reason = (
            f"no Observation resources (lab results); its {records} medication records naming"
            " a vitamin D supplement or a medicine that lowers Mg are used with the results"
            " of the other FHIR files."
        )
        return {"file": label, "reason": reason, "medication_records": records}


def _may_be_fhir(path: Path) -> bool:
    sniffed = sniff.sniff(path)
    return sniffed.kind in ("json", "ndjson") and _is_fhir(path, sniffed)


def why_skipped(path: Path, exc: LabinterpError) -> str:
    """Why a file found in a folder is not read as an export: the reader's error, or, for a
    side table a preset reads beside its export (MIMIC's D_LABITEMS and PATIENTS, Synthea's
    patients.csv and medications.csv), that it is read with that export."""
    name = path.name.lower().removesuffix(".gz")
    found = {
        what: [
            str(preset["preset"]["description"]).split(" (")[0]
            for preset in colplan.presets()
            if str(preset.get(part, {}).get("file", "")).lower() == name
        ]
        for part, what in _SIDE_TABLES.items()
    }
    for what, exports in found.items():
        if exports:
            return (
                f"not an export: the {what} read beside an export of "
                f"{' or '.join(sorted(exports))}."
            )
    return exc.problem


# the side tables a preset may read beside its export
_SIDE_TABLES = {
    "dictionary": "item dictionary",
    "demographics": "patient table",
    "medications": "medication list",
}


def times_in_utc(results: pd.DataFrame) -> bool:
    """Some collection times were printed with an offset from UTC ("-05:00", or "Z" and
    "+00:00", which are UTC already): the table holds them in UTC, which a person reading
    its times must be told, and which makes them comparable with another export's UTC
    times (a file of "Z" times beside one of "-05:00" times is on one clock)."""
    return bool(results["utc_offset_min"].notna().any())


def _concat(parts: list[ReadResult]) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not parts:
        return empty(RESULTS), empty(REJECTED)
    return (
        pd.concat([p.results for p in parts], ignore_index=True),
        pd.concat([p.rejected for p in parts], ignore_index=True),
    )


def iter_batches(
    path: PathLike,
    *,
    mapping: PathLike | None = None,
    date_format: str | None = None,
    batch_rows: int = 500_000,
    label: str | None = None,
    executor: Executor | None = None,
    bulk: BulkExport | None = None,
) -> Iterator[ReadResult]:
    """Normalized batches of one file, for inputs larger than memory (not deduplicated).

    Run `deduplicate` afterwards on complete per-patient data. `label` names the file in
    source_file (default: its name; see sniff.display_names for files read together).
    `executor`: worker processes that may take CPU-heavy parts of reading (FHIR
    validation), as the audit's do while it reads. `bulk`: the FHIR NDJSON files read
    together with this one (their index passes, and their medication records).
    """
    bulk = bulk or BulkExport()
    p = Path(path)
    sniffed = sniff.sniff(p)
    tables: Iterator[table.Table]
    if sniffed.kind == "delimited":
        tables, kind = table.iter_delimited(p, sniffed, batch_rows), "csv"
    elif sniffed.kind == "parquet":
        tables, kind = formats.iter_parquet(p, batch_rows), "parquet"
    elif sniffed.kind == "xlsx":  # each results sheet with its own columns
        label = label or sniff.display_name(p)
        sheets, skipped = _xlsx_sheets(p, label, Path(mapping) if mapping else None, batch_rows)
        for sheet in sheets:
            parts = _table_batches(p, sheet.label, sheet.kind, sheet.tables, mapping, date_format)
            for batch in parts:
                batch.files[0].warnings += skipped + sheet.notes
                yield batch
        return
    elif sniffed.kind == "xpt":
        tables, kind = formats.iter_xpt(p, batch_rows), "xpt"
    elif sniffed.kind == "ndjson" and not _is_fhir(p, sniffed):  # JSON Lines of records
        tables, kind = formats.iter_records(p, sniffed, batch_rows), "ndjson"
    elif sniffed.kind == "hl7v2":  # messages one after the other, in batches
        label = label or sniff.display_name(p)
        with _hl7_lines(p, sniffed) as lines:
            for raw, invalid in _hl7_batches(lines, label, batch_rows):
                yield _from_records(raw, invalid, label, date_format, False, *_HL7)
        return
    elif sniffed.kind == "ndjson" and _is_fhir(p, sniffed):  # a bulk export: by lines
        label = label or sniff.display_name(p)
        batches = _fhir_ndjson_batches(p, sniffed, label, batch_rows, executor, bulk)
        for raw, invalid, records in batches:
            batch = _from_records(raw, invalid, label, date_format, False, *_FHIR)
            batch.files[0].medication_records = records
            yield batch
        return
    else:  # read whole: the resources of a FHIR document refer to each other
        yield _read_one(
            p,
            mapping=Path(mapping) if mapping else None,
            date_format=date_format,
            dedupe=False,
            label=label,
            other_medicines=bulk.records_beside(p),
        )
        return
    again = (lambda: table.iter_delimited(p, sniffed, batch_rows)) if kind == "csv" else None
    label = label or sniff.display_name(p)
    yield from _table_batches(p, label, kind, tables, mapping, date_format, again)


def _table_batches(
    p: Path,
    label: str,
    kind: str,
    tables: Iterator[table.Table],
    mapping: PathLike | None,
    date_format: str | None,
    again: Callable[[], Iterator[table.Table]] | None = None,
) -> Iterator[ReadResult]:
    """The normalized batches of one table read in parts (see iter_batches).

    What a file decides once, its slash-date order and its decimal separator, is decided
    from the first batch; where the first batch leaves it open (every date could be day or
    month first; no number shows its separator), from the whole file, read once more
    (`again`: the batches from the start), as reading it whole would decide it."""
    plan = None
    order = None
    decimal = None
    # Each batch is read once the next one is there: its last draw (which may continue in
    # the next batch) is read with the next one instead; the last batch keeps its own.
    pending: table.Table | None = None
    carry: table.Table | None = None
    for tbl in tables:
        if plan is None:
            plan = colplan.plan_columns(
                list(tbl.frame.columns), label, Path(mapping) if mapping else None
            )
            _note_unused(plan, tbl, label)
            date_column = plan.columns.get("collected_at")
            if date_column and not (date_format or plan.date_format):
                order = _file_slash_order(tbl, date_column, label, again)
            value_column = plan.columns.get("value_raw")
            if value_column and not plan.decimal and again is not None:
                decimal = _file_decimal(tbl, value_column, again)
        if pending is not None:
            whole, carry = _split_last_draw(_joined_tables(carry, pending), plan)
            if len(whole.frame):
                yield _from_table(p, label, kind, whole, plan, date_format, False, order, decimal)
        pending = tbl
    if pending is not None and plan is not None:
        last = _joined_tables(carry, pending)
        yield _from_table(p, label, kind, last, plan, date_format, False, order, decimal)


def _file_slash_order(
    first: table.Table,
    column: str,
    label: str,
    again: Callable[[], Iterator[table.Table]] | None,
) -> str | None:
    """The file's slash-date order: from its first batch, else from every batch's date
    spellings (each distinct one kept once)."""
    try:
        return slash_order([str(v) for v in first.frame[column].dropna().unique()], label)
    except DateFormatError:
        if again is None:
            raise
    spellings: set[str] = set()
    for tbl in again():
        spellings.update(str(v) for v in tbl.frame[column].dropna().unique())
    return slash_order(sorted(spellings), label)


def _file_decimal(
    first: table.Table, column: str, again: Callable[[], Iterator[table.Table]]
) -> tuple[str, bool] | None:
    """The file's decimal separator and whether it shows both (see decimal_evidence): what
    its first batch shows, else the first batch that shows one; None (each batch's own
    guess: points) when none does."""
    for tbl in itertools.chain([first], again()):
        found, mixed = decimal_evidence(tbl.frame[column])
        if found:
            return found, mixed
    return None


def _joined_tables(first: table.Table | None, second: table.Table) -> table.Table:
    """`second` with the rows of `first` (if any) before it."""
    if first is None or not len(first.frame):
        return second
    return table.Table(
        pd.concat([first.frame, second.frame], ignore_index=True),
        np.concatenate([first.source_row, second.source_row]),
        second.header_line,
    )


def _split_last_draw(
    tbl: table.Table, plan: colplan.ColumnPlan
) -> tuple[table.Table, table.Table | None]:
    """(the batch without its last draw, that draw) for a long export: the rows of one
    patient and collection time are read in one batch, so that what marks a sample (a
    hemolysis index printed as a row of its own) finds the sample's results. The last
    draw may continue in the next batch; it is read with it. A file whose rows of a draw
    are not together keeps only what each batch holds."""
    patient, when = plan.columns.get("patient_id"), plan.columns.get("collected_at")
    if plan.layout != "long" or patient is None or when is None or not len(tbl.frame):
        return tbl, None
    n = len(tbl.frame)
    window = 1024  # a draw is a few dozen rows: look back only as far as needed
    while True:
        start = max(0, n - window)
        rows = tbl.frame.iloc[start:]
        key = rows[patient].fillna("").astype(str) + "\x1f" + rows[when].fillna("").astype(str)
        other = np.flatnonzero(key.to_numpy() != key.iloc[-1])
        if len(other) or start == 0:
            break
        window *= 8
    cut = start + int(other[-1]) + 1 if len(other) else 0
    head = table.Table(
        tbl.frame.iloc[:cut].reset_index(drop=True), tbl.source_row[:cut], tbl.header_line
    )
    tail = table.Table(
        tbl.frame.iloc[cut:].reset_index(drop=True), tbl.source_row[cut:], tbl.header_line
    )
    return head, tail


def deduplicate(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off the results the lab replaced, then repeated results.

    Replaced: a result whose final or corrected version (by result status) has the same
    patient, analyte, time and specimen is rejected as `superseded`.
    Repeated: same patient, analyte and time, the same value (within 2 %, or within the
    rounding of the less precise printed value) of the same sample and test (see
    readers.duplicates). Catches rows exported twice (joins that duplicate rows), the same
    result given in two unit systems (survey files with mg/dL and mmol/L columns) and the
    same results in two exports, one printing fewer decimals than the other. A row with
    the range its lab printed is kept over a repeat without one (the printed range wins
    over a bundled one), then the earliest by (file name, row), so `read` and the audit
    keep the same row. Must be given all rows of each patient it sees.
    """
    if len(results) == 0:
        return results, empty(REJECTED)
    results, replaced = _drop_replaced(results)
    results, repeated = _drop_repeats(results)
    if len(replaced) == 0:
        return results, repeated
    return results, pd.concat([replaced, repeated], ignore_index=True)


def _drop_replaced(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off the results the lab replaced (see duplicates.replaced)."""
    status = results["result_status"]
    if status.count() < 2:  # most exports print no status
        return results, empty(REJECTED)
    gone, by = duplicates.replaced(
        group=_groups(results),
        time=results["collected_at"].to_numpy().view("int64"),
        specimen=lambda at: _text_codes(results["specimen_id"].iloc[at])[0],
        rank=status.map(duplicates.STATUS_RANK).fillna(0).to_numpy(dtype=np.int64),
        file=pd.factorize(results["source_file"], sort=True)[0],
        row=results["source_row"].to_numpy(dtype=np.int64, na_value=0),
    )
    details = [
        duplicates.replaced_detail(s, f, r)
        for s, f, r in zip(
            status.iloc[by].to_numpy(dtype=object),
            results["source_file"].iloc[by].to_numpy(dtype=object),
            results["source_row"].iloc[by].to_numpy(dtype=object),
            strict=True,
        )
    ]
    return _split_off(results, gone, "superseded", details)


def _drop_repeats(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off repeated results (see duplicates.repeats)."""
    if len(results) == 0:
        return results, empty(REJECTED)
    group = _groups(results)
    times = results["collected_at"].to_numpy().view("int64")

    def details(rows: np.ndarray) -> duplicates.Rows:
        sub = results.iloc[rows]
        # equal texts have equal codes; compare codes instead of Python strings
        text, no_text = _text_codes(sub["text_result"])
        factor = _to_canonical(sub)
        return duplicates.Rows(
            group=group[rows],
            time=times[rows],
            # files by name, as the audit orders its rows (whatever order they were read in)
            file=pd.factorize(results["source_file"], sort=True)[0][rows],
            row=sub["source_row"].to_numpy(dtype=np.int64, na_value=0),
            value=sub["value"].to_numpy(dtype=float),
            text=text,
            no_text=no_text,
            comparator=_text_codes(sub["comparator"])[0],
            rank=(sub["range_origin"] != "row").to_numpy(dtype=np.int64, na_value=1),
            rounding=duplicates.printed_rounding(sub["value_raw"]) * factor,
            specimen=duplicates.present_codes(sub["specimen_id"]),
            loinc=duplicates.present_codes(sub["loinc"]),
            name=duplicates.present_codes(sub["test_label"].str.casefold()),
            unit=duplicates.unit_codes(factor),
        )

    dup_rows, firsts = duplicates.find(group, times, details)

    def at(column: str, rows: np.ndarray) -> list[Any]:
        return results[column].iloc[rows].tolist()

    details_text = duplicates.repeat_details(
        zip(
            at("source_file", firsts),
            at("source_row", firsts),
            at("test_label", firsts),
            strict=True,
        ),
        zip(at("source_file", dup_rows), at("source_row", dup_rows), strict=True),
    )
    return _split_off(results, dup_rows, "duplicate", details_text)


def _groups(results: pd.DataFrame) -> np.ndarray:
    """One group per (patient, analyte), numbered in order of first appearance."""
    patient = pd.factorize(results["patient_id"], use_na_sentinel=False)[0].astype(np.int64)
    analyte, names = pd.factorize(results["analyte"], use_na_sentinel=False)
    return pd.factorize(patient * (len(names) + 1) + analyte)[0].astype(np.int64)


def _split_off(
    results: pd.DataFrame, rows: np.ndarray, reason: str, details: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results without `rows`, REJECTED rows for them with `reason` and `details`)."""
    if len(rows) == 0:
        return results, empty(REJECTED)
    drop = np.zeros(len(results), dtype=bool)
    drop[rows] = True
    kept = results[~drop]  # a mask lets pyarrow copy the long runs of kept rows whole
    sub = results.iloc[rows]
    rejected = pd.DataFrame(
        {
            "source_file": sub["source_file"].to_numpy(),
            "source_row": sub["source_row"].to_numpy(),
            "patient_id": sub["patient_id"].to_numpy(),
            "reason": reason,
            "detail": details,
            "test": sub["test_label"].to_numpy(),
            "value_raw": sub["value_raw"].to_numpy(),
            "unit_raw": sub["unit_raw"].to_numpy(),
        }
    )
    return kept.reset_index(drop=True), conform(rejected, REJECTED)


def _to_canonical(results: pd.DataFrame) -> np.ndarray:
    """Per row, what its reported value is multiplied by in the analyte's canonical unit
    (NaN where labinterp has no factor for the unit), worked out once per distinct pair."""
    pairs = pd.MultiIndex.from_arrays(
        [
            results["analyte"].astype(object).fillna(""),
            results["unit_reported"].astype(object).fillna(""),
        ]
    )
    codes, distinct = pairs.factorize()
    return np.array([_unit_factor(a, u) for a, u in distinct], dtype=np.float64)[codes]


def _unit_factor(analyte: str, unit: str) -> float:
    from labinterp import units

    try:
        return units.factor(analyte, unit)
    except (KeyError, ValueError):
        return np.nan


def _text_codes(column: pd.Series) -> tuple[np.ndarray, int]:
    """Integer codes of a text column (missing counts as ""), and the code of ""."""
    codes, uniques = pd.factorize(column.fillna(""))
    found = np.flatnonzero(np.asarray(uniques, dtype=object) == "")
    return codes.astype(np.int64), int(found[0]) if len(found) else -1


# ---------------------------------------------------------------- one file


def _is_fhir(p: Path, sniffed: sniff.Sniffed) -> bool:
    with sniff.open_binary(p) as fh:
        head = fh.read(sniff.PROBE_BYTES).decode(sniffed.encoding or "utf-8", errors="replace")
    return '"resourceType"' in head


def _table(p: Path, sniffed: sniff.Sniffed) -> table.Table:
    if sniffed.kind == "delimited":
        return table.read_delimited(p, sniffed)
    if sniffed.kind == "parquet":
        return formats.read_parquet(p)
    if sniffed.kind == "xpt":
        return formats.read_xpt(p)
    doc = formats.load_json(p, sniffed)
    if sniffed.kind == "ndjson":
        numbered = doc
    elif isinstance(doc, list):
        numbered = list(enumerate(doc, start=1))
    else:
        numbered = [(1, doc)]
    return formats.records_table(p, numbered)


def _read_one(
    p: Path,
    *,
    mapping: Path | None,
    date_format: str | None,
    dedupe: bool,
    label: str | None,
    other_medicines: list[MedicationRecord] | None = None,
) -> ReadResult:
    """One file's results and rejected rows; `dedupe` also rejects its repeated results.
    A FHIR file's results are covered by its own medication records and `other_medicines`
    (those of the other files of a bulk export, see BulkExport)."""
    sniffed = sniff.sniff(p)
    label = label or sniff.display_name(p)
    if sniffed.kind in ("json", "ndjson") and _is_fhir(p, sniffed):
        doc = formats.load_json(p, sniffed)
        raw, invalid, medication_records = fhir.fhir_raw(doc, label, other_medicines or [])
        if len(raw) == 0 and not invalid:  # e.g. a bundle of Patients: no row to account for
            raise _no_observations(label)
        read = _from_records(raw, invalid, label, date_format, dedupe, *_FHIR)
        read.files[0].medication_records = medication_records
        if fhir.more_pages(doc):
            read.files[0].warnings = (_ONE_PAGE,)
            log.warning("%s: %s", label, _ONE_PAGE)
        return read
    if sniffed.kind == "hl7v2":
        with _hl7_lines(p, sniffed) as lines:
            ((raw, invalid),) = _hl7_batches(lines, label, None)
        return _from_records(raw, invalid, label, date_format, dedupe, *_HL7)
    kind = sniffed.kind
    if kind == "xlsx":
        return _read_workbook(p, label, mapping, date_format, dedupe)
    tbl = _table(p, sniffed)
    plan = colplan.plan_columns(list(tbl.frame.columns), label, mapping)
    _note_unused(plan, tbl, label)
    read = _from_table(p, label, kind, tbl, plan, date_format, dedupe)
    if read.rows_in == 0:  # an export cut off after its header reads as "nothing to flag"
        log.warning("%s: %s", label, _NO_ROWS)
        read.files[0].warnings += (_NO_ROWS,)
    return read


_NO_ROWS = "the file has a header but no result rows; check that the export is complete."


def _note_unused(plan: colplan.ColumnPlan, tbl: table.Table, label: str) -> None:
    """Keep in plan.unused only the columns that hold a value in `tbl` (an empty column,
    such as a trailing separator makes, loses nothing), and warn once for the file: a
    column whose header was not recognised is otherwise dropped without a word."""
    plan.unused = [c for c in plan.unused if tbl.frame[c].fillna("").str.strip().ne("").any()]
    note = _unused_note(plan)
    if note:
        log.warning("%s: %s", label, note)


def _unused_note(plan: colplan.ColumnPlan) -> str | None:
    """The warning naming the columns not used (their headers, never their values). None
    for a preset's known layout (MIMIC's ROW_ID, HADM_ID), whose other columns are left
    out by design: `check` lists them all the same."""
    if not plan.unused or plan.preset:
        return None
    shown = ", ".join(repr(c) for c in plan.unused[:12])
    more = f" and {len(plan.unused) - 12} more" if len(plan.unused) > 12 else ""
    n = len(plan.unused)
    return (
        f"{n} column{'s' if n > 1 else ''} not used: {shown}{more}; their values are not"
        " read. To use one, name it in a mapping file (--mapping; `labinterp check FILE`"
        " prints the mapping used, to edit)."
    )


@dataclass
class _Sheet:
    """A worksheet holding a results table: the name its rows are reported under, the
    format to report, its tables, and what its report warns of (see _formula_note)."""

    label: str
    kind: str
    tables: Iterator[table.Table]
    notes: tuple[str, ...] = ()


def _xlsx_sheets(
    p: Path, label: str, mapping: Path | None, batch_rows: int | None
) -> tuple[list[_Sheet], tuple[str, ...]]:
    """The sheets of a workbook whose columns can be read (a workbook may open with a
    summary or a cover sheet, or hold its results on several sheets), and a note naming
    each other sheet and why it is not read. One such sheet: its rows are reported as the
    file's, the format names the sheet when it is not the first ("xlsx, sheet 'Results'").
    Several: each sheet's rows are reported under "file.xlsx[Sheet]". None: the first
    sheet's error, naming the others."""
    names = formats.xlsx_sheet_names(p)
    found: list[tuple[int, str, Iterator[table.Table], tuple[str, ...]]] = []
    skipped: list[str] = []
    first_error: LabinterpError | None = None
    for index, name in enumerate(names):
        probe = formats.iter_xlsx(p, batch_rows, index)
        try:
            head = next(probe)
            colplan.plan_columns(list(head.frame.columns), label, mapping)
        except (ColumnDetectionError, MappingFileError, InputFileError) as exc:
            probe.close()
            first_error = first_error or exc
            skipped.append(f"sheet '{name}' skipped, not a results table: {exc.problem}")
            continue
        notes = _formula_note(p, index, name, head)
        if found and batch_rows is not None and len(head.frame) >= batch_rows:
            # a long sheet after the first is read again in its turn, not held meanwhile
            probe.close()
            found.append((index, name, formats.iter_xlsx(p, batch_rows, index), notes))
        else:
            found.append((index, name, itertools.chain([head], probe), notes))
    if len(found) > 1:
        sheets = [
            _Sheet(f"{label}[{name}]", "xlsx", tables, notes) for _, name, tables, notes in found
        ]
        return sheets, tuple(skipped)
    if found:
        ((index, name, tables, notes),) = found
        kind = "xlsx" if index == 0 else f"xlsx, sheet '{name}'"
        return [_Sheet(label, kind, tables, notes)], tuple(skipped)
    assert first_error is not None  # a workbook has at least one sheet
    if len(names) == 1:
        raise first_error
    error = type(first_error)(
        f"{first_error.problem} No other sheet has them either ({', '.join(names)}).",
        file=first_error.file,
        row=first_error.row,
        fix=first_error.fix,
    )
    error.columns_read = first_error.columns_read
    raise error from first_error


def _formula_note(p: Path, index: int, sheet: str, head: table.Table) -> tuple[str, ...]:
    """The warning naming the sheet and rows of its table with a formula saved without its
    value (see formats.xlsx_unsaved_formulas): the cell reads as empty, and a result cell
    would be rejected as holding no result, for a reason the user cannot see. The sheet is
    named: every sheet of a workbook has a row 4."""
    columns = list(head.frame.columns)
    cells = [
        (row, columns[col - 1])
        for row, col in formats.xlsx_unsaved_formulas(p, index)
        if row > head.header_line and col <= len(columns)
    ]
    if not cells:
        return ()
    rows = sorted({row for row, _ in cells})
    shown = ", ".join(map(str, rows[:10])) + (
        f" and {len(rows) - 10} more" if len(rows) > 10 else ""
    )
    names = ", ".join(repr(c) for c in dict.fromkeys(c for _, c in cells))
    return (
        f"a formula whose value was not saved, read as empty: sheet '{sheet}',"
        f" row{'s' if len(rows) > 1 else ''}"
        f" {shown} (column {names}); the program that wrote the file does not compute"
        " formulas. Fix: open the file in Excel or LibreOffice and save it again, which"
        " stores the values.",
    )


def _read_workbook(
    p: Path, label: str, mapping: Path | None, date_format: str | None, dedupe: bool
) -> ReadResult:
    """Each results sheet of a workbook read with its own column plan (see _xlsx_sheets);
    the sheets skipped are named in the first one's warnings. `dedupe`: repeats are
    rejected across the sheets too."""
    sheets, skipped = _xlsx_sheets(p, label, mapping, None)
    for note in skipped:
        log.warning("%s: %s", label, note)
    parts = []
    for sheet in sheets:
        (tbl,) = sheet.tables
        plan = colplan.plan_columns(list(tbl.frame.columns), sheet.label, mapping)
        _note_unused(plan, tbl, sheet.label)
        alone = dedupe and len(sheets) == 1
        parts.append(_from_table(p, sheet.label, sheet.kind, tbl, plan, date_format, alone))
        parts[-1].files[0].warnings += sheet.notes
    parts[0].files[0].warnings += skipped
    if len(parts) == 1:
        return parts[0]
    results, rejected = _concat(parts)
    if dedupe:
        results, repeated = deduplicate(results)
        rejected = _append(rejected, repeated)
    # each sheet's rows used and rejected are counted by `read`, as for several files
    return ReadResult(results, rejected, [f for part in parts for f in part.files])


_ONE_PAGE = (
    "the bundle is one page of a FHIR search (it links to a 'next' page): the results on "
    "the pages after it are not in this file. Fetch every page (follow the 'next' links, or "
    "use a bulk $export) and read the pages together."
)
_HL7 = ("hl7v2", "HL7 v2 OBX segments")
_FHIR = ("fhir", "FHIR Observation fields")


def _no_observations(label: str) -> InputFileError:
    return InputFileError(
        "the FHIR file holds no Observation resources (lab results).",
        file=label,
        fix="export the Observations (or a Bundle holding them) for these patients.",
    )


def _fhir_ndjson_batches(
    p: Path,
    sniffed: sniff.Sniffed,
    label: str,
    batch_rows: int,
    executor: Executor | None,
    bulk: BulkExport,
) -> Iterator[tuple[pd.DataFrame, list[tuple[int, str, str]], int]]:
    """A FHIR NDJSON file (a bulk export) in batches of lines, each with the number of the
    file's medication records: a first pass finds the Patient, Specimen and medication
    resources any line may refer to or be covered by (done already when the file is read
    with others: `bulk`), a second reads the rest."""
    referenced = bulk.indexes.get(p) or fhir.ndjson_index(
        formats.iter_ndjson(p, sniffed, fhir.ndjson_wanted_for_index)
    )
    records = len(referenced.medication_records())
    lines = formats.iter_ndjson(p, sniffed)
    found = False
    other = bulk.records_beside(p)
    rows = fhir.iter_ndjson_rows(lines, referenced, label, batch_rows, executor, other)
    for raw, invalid in rows:
        found = True
        yield raw, invalid, records
    if not found:
        raise _no_observations(label)


def _hl7_lines(p: Path, sniffed: sniff.Sniffed) -> io.TextIOWrapper:
    """The file's segments as lines: universal newlines end them at CR, LF or CRLF."""
    raw = cast(BinaryIO, sniff.open_binary(p))  # a plain or gzip file object
    return io.TextIOWrapper(
        raw, encoding=sniffed.encoding or "utf-8", errors="replace", newline=None
    )


def _hl7_batches(
    lines: Iterable[str], label: str, batch_rows: int | None
) -> Iterator[tuple[pd.DataFrame, list[tuple[Any, ...]]]]:
    """iter_hl7, refusing a file without any result."""
    found = False
    for batch in iter_hl7(lines, label, batch_rows):
        found = True
        yield batch
    if not found:
        raise InputFileError(
            "the HL7 v2 file holds no results (OBX segments).",
            file=label,
            fix="send or export the result messages (ORU^R01, OUL^R22) themselves.",
        )


def _from_records(
    raw: pd.DataFrame,
    invalid: list[tuple[Any, ...]],
    label: str,
    date_format: str | None,
    dedupe: bool,
    kind: str,
    plan: str,
) -> ReadResult:
    """A message format's RAW rows normalized, with the rows it could not use at all
    (record number, reason, detail[, {"patient_id", "test", "value_raw", "unit_raw"} of
    the result, so the user sees whose test was dropped]) among the rejected ones."""
    options = Options(date_format=date_format, source_format=kind)
    results, rejected, repeated = _normalize(raw, label, options, dedupe)

    def shown(column: str) -> list[Any]:
        return [entry[3].get(column) if len(entry) > 3 else None for entry in invalid]

    bad = conform(
        pd.DataFrame(
            {
                "source_file": label,
                "source_row": [entry[0] for entry in invalid],
                "reason": [entry[1] for entry in invalid],
                "detail": [entry[2] for entry in invalid],
                **{column: shown(column) for column in ("test", "value_raw", "unit_raw")},
            }
        ),
        REJECTED,
    )
    # cleaned as the normalizer cleans the ids of the used rows, "" (none) as missing
    ids = patient_id_text(pd.Series(shown("patient_id"), dtype=STR))
    bad["patient_id"] = ids.mask(ids == "")
    rejected = _append(rejected, bad, repeated)
    report = FileReport(label, kind, plan, "", len(raw) + len(invalid))
    return ReadResult(results, rejected, [report])


def _from_table(
    p: Path,
    label: str,
    kind: str,
    tbl: table.Table,
    plan: colplan.ColumnPlan,
    date_format: str | None,
    dedupe: bool,
    slash_order: str | None = None,
    decimal: tuple[str, bool] | None = None,
) -> ReadResult:
    """One table's rows normalized. `slash_order` and `decimal`: what the whole file
    decided, for a batch of it (else the table decides)."""
    raw = _raw_frame(p, label, tbl, plan)
    medication_records = _mark_medications(p, raw, plan.preset or {})
    undated = "collected_at" not in plan.columns
    not_rows = _not_result_rows(tbl, plan)
    malformed = empty(REJECTED)
    if not_rows:
        bad = raw["source_row"].isin(list(not_rows)).to_numpy()
        lines = raw.loc[bad, "source_row"].to_numpy()
        # no patient id: a row with fields missing or split has them shifted, and a header
        # repeat or a footer holds none, so its id cell would name the wrong patient or none
        malformed = conform(
            pd.DataFrame(
                {
                    "source_file": label,
                    "source_row": lines,
                    "reason": "malformed_row",
                    "detail": [not_rows[n] for n in lines],
                    "value_raw": raw.loc[bad, "value_raw"].to_numpy(),
                    "unit_raw": raw.loc[bad, "unit_raw"].to_numpy(),
                }
            ),
            REJECTED,
        )
        raw = raw.loc[~bad].reset_index(drop=True)
    options = Options(
        date_format=date_format or plan.date_format,
        # a separator the mapping names decides every number; else the file's (see
        # decimal_evidence), which leaves a number it cannot tell unread
        decimal=plan.decimal or (decimal[0] if decimal else None),
        decimal_mixed=not plan.decimal and bool(decimal and decimal[1]),
        tests=tuple(plan.tests.items()),
        undated=undated,
        slash_order=slash_order,
    )
    results, rejected, repeated = _normalize(raw, label, options, dedupe)
    if options.date_format:
        _check_date_format(options.date_format, label, results, rejected)
    rejected = _append(rejected, malformed, repeated)
    report = FileReport(
        label,
        kind if plan.layout == "long" else f"{kind} (wide)",
        plan.source,
        plan.as_toml(),
        len(raw) + len(malformed),
        undated=undated,
        fields=tuple(plan.columns),
        header_line=tbl.header_line,
        medication_records=medication_records,
        warnings=tuple(filter(None, [_unused_note(plan)])),
        unused_columns=tuple(plan.unused),
    )
    return ReadResult(results, rejected, [report])


def _check_date_format(
    date_format: str, label: str, results: pd.DataFrame, rejected: pd.DataFrame
) -> None:
    """A date format given (--date-format, a mapping's option) that reads none of a file's
    collection times is a mistake in the format, not a file of bad dates: every row would
    be rejected and the command end as if all were well."""
    bad = rejected["reason"].isin(["unparseable_date", "ambiguous_two_digit_year"])
    if len(results) or not bad.any():
        return
    first = int(rejected.loc[bad, "source_row"].min())
    raise InputFileError(
        f"the date format '{date_format}' reads none of the collection times (this row's"
        " is the first).",
        file=label,
        row=first,
        fix="give the format of the whole date and time as the file prints them (add"
        " ' %H:%M' when they have a clock time), or leave --date-format out to let"
        " labinterp work it out.",
    )


# Fields a row may lack at its end and still be read, those left empty: a writer that
# drops a line's trailing empty fields drops these (a comment, a flag). A row short of a
# field that says what the result is may have lost one in its middle instead, which
# shifts every value after it: it is not read.
_MAY_BE_MISSING = frozenset(
    {"comment", "flag", "result_status", "medication", "specimen_type"}
    | {"range_raw", "range_low_raw", "range_high_raw"}
)

_REPEATED_HEADER = (
    "a repeat of the header line (a page break in the export), not a result row; nothing to fix"
)
_ONE_FIELD = (
    "only one field is filled: a page footer, title or note inside the table (such as"
    " 'Page 1 of 2'), not a result row; nothing to fix"
)


def _not_result_rows(tbl: table.Table, plan: colplan.ColumnPlan) -> dict[int, str]:
    """Line -> why, for the lines of the table that are not result rows: rows with another
    number of fields than the header (but rows short only of trailing fields that may be
    missing, read with those empty), repeats of the header line, and lines of a long
    export with one field filled (footers and notes)."""
    header = list(tbl.frame.columns)
    optional = {c for f, c in plan.columns.items() if f in _MAY_BE_MISSING} | set(plan.unused)
    why = {
        line: _ragged_detail(fields, len(header))
        for line, fields in getattr(tbl, "ragged", [])
        if fields >= len(header) or not set(header[fields:]) <= optional
    }

    def cells(name: str, rows: np.ndarray | None = None) -> pa.Array:
        column = pa.array(tbl.frame[name].array if rows is None else tbl.frame[name].array[rows])
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            return column
        return column.cast(pa.large_string())

    def empty(column: pa.Array) -> np.ndarray:
        return ~_true(pc.greater(pc.binary_length(column), 0))

    # A header repeat holds the value column's own name there, and a lone footer field
    # leaves the value or the patient id empty: only such rows are looked at closely, so
    # a million good rows cost a comparison or two each.
    value_column = plan.columns.get("value_raw")
    patient_column = plan.columns.get("patient_id")
    if value_column is None or patient_column is None:
        rows = np.arange(len(tbl.frame))
    else:
        value = cells(value_column)
        rows = np.flatnonzero(
            _true(pc.equal(value, value_column)) | empty(value) | empty(cells(patient_column))
        )
    # counted column by column with Arrow compute: no Python string per cell
    filled = np.zeros(len(rows), dtype=np.int64)
    same = np.zeros(len(rows), dtype=np.int64)
    for name in header:
        column = cells(name, rows)
        filled += _true(pc.greater(pc.binary_length(column), 0))
        same += _true(pc.equal(column, name))
    repeated = (same >= 2) & (same * 2 > filled)
    lone = (filled == 1) & (plan.layout == "long")
    for i in np.flatnonzero(repeated | lone):
        line = int(tbl.source_row[rows[i]])
        why.setdefault(line, _REPEATED_HEADER if repeated[i] else _ONE_FIELD)
    return why


def _true(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An Arrow boolean column as a numpy one, missing as False."""
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def _ragged_detail(fields: int, header_fields: int) -> str:
    """Why a row with another number of fields than the header is not read."""
    if fields == 1:  # no separator at all: a line of text inside or below the table
        return (
            "a line of text without the file's separators (a note, or a footer such as "
            "'End of report'), not a row of the table; nothing to fix"
        )
    if fields < header_fields:
        return (
            f"the row has {fields} fields and the header {header_fields}: fields are missing;"
            " correct the row in the export"
        )
    return (
        f"the row has {fields} fields and the header {header_fields}: a value holding the "
        "separator was split; put quotes around such values in the export"
    )


def _normalize(
    raw: pd.DataFrame, label: str, options: Options, dedupe: bool
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    if dedupe:
        results, rejected, repeated = normalize_unique(raw, label, options)
    else:
        results, rejected = normalize(raw, label, options)
        repeated = empty(REJECTED)
    return results, _why_not_read(rejected), repeated


def _why_not_read(rejected: pd.DataFrame) -> pd.DataFrame:
    """`rejected` with the out-of-scope rows of a test printed like a catalog test that
    is another one (a calculated ionized calcium) saying so, not "not in the catalog"
    (test_names.not_read_detail; worked out once per distinct test)."""
    out = np.flatnonzero(
        (rejected["reason"] == "out_of_scope").to_numpy(dtype=bool, na_value=False)
    )
    if len(out) == 0:
        return rejected
    codes, tests = pd.factorize(rejected["test"].iloc[out].fillna(""))
    said = np.asarray([not_read_detail(str(t)) for t in tests], dtype=object)[codes]
    hit = said != ""
    if not hit.any():
        return rejected
    detail = rejected["detail"].to_numpy(dtype=object)
    detail[out[hit]] = said[hit]
    return rejected.assign(detail=pd.Series(detail, rejected.index, REJECTED["detail"]))


def _append(rejected: pd.DataFrame, *more: pd.DataFrame) -> pd.DataFrame:
    """REJECTED rows in the order the steps found them (no copy when nothing is added)."""
    extra = [m for m in more if len(m)]
    return pd.concat([rejected, *extra], ignore_index=True) if extra else rejected


def _raw_frame(p: Path, label: str, tbl: table.Table, plan: colplan.ColumnPlan) -> pd.DataFrame:
    frame = tbl.frame
    n = len(frame)
    # one all-"" column shared by every field the file does not have (no per-row Python
    # strings; large strings are what pandas stores, so nothing is cast)
    blank = table.text_series(pa.repeat(pa.scalar("", pa.large_string()), n))

    def column(name: str) -> pd.Series:
        src = plan.columns.get(name)
        if src is None:
            return blank
        text = frame[src].astype("string[pyarrow]")
        return text.fillna("") if text.hasnans else text

    if plan.layout == "wide":
        return _melt_wide(label, tbl, plan, column)
    data = {name: column(name) for name in RAW if name not in ("source_file", "source_row")}
    if "collected_time" in plan.columns:
        data["collected_at"] = _joined_time(data["collected_at"], column("collected_time"))
    raw = pd.DataFrame(data)
    raw["source_file"] = table.text_series(pa.repeat(pa.scalar(label, pa.large_string()), n))
    raw["source_row"] = tbl.source_row
    preset = plan.preset or {}
    from_name = preset.get("patient_from_file_name")
    if from_name and "patient_id" not in plan.columns:
        m = re.search(from_name["pattern"], p.name)
        raw["patient_id"] = m.group(1) if m else ""
    split = preset.get("split_code")
    if split and split["column"] in frame.columns:
        parts = (
            frame[split["column"]]
            .astype("string[pyarrow]")
            .fillna("")
            .str.extract(split["pattern"])
        )
        matched = parts["test_code"].notna()
        raw["test_code"] = parts["test_code"].where(matched, frame[split["column"]]).fillna("")
        unit = parts["unit_raw"].fillna("")
        raw["unit_raw"] = unit.where(unit != split.get("missing_unit", ""), "")
    items_name = preset.get("preset", {}).get("items")
    if items_name:
        items = colplan.item_map(items_name)
        raw["analyte_hint"] = raw["test_code"].str.strip().map(items).fillna("")
    dictionary = preset.get("dictionary")
    if dictionary:
        _join_dictionary(p, raw, dictionary)
    demographics = preset.get("demographics")
    if demographics:
        _join_demographics(p, raw, demographics)
    return conform(raw, RAW)


# a time of day alone: "8:30", "08:30:15", "8:30 PM", "08:30:15.250"
_TIME_OF_DAY = r"\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:\s?[AaPp][Mm])?"


def _joined_time(date: pd.Series, time: pd.Series) -> pd.Series:
    """The collection time from a date column and a time-of-day column, row by row: the
    date and the time where the time is a time of day; the time column's text where it
    holds a whole date and time itself; the date alone where the time is empty. Anything
    odd is left for the date parser to reject with its reason, never guessed."""
    # spreadsheets store a date as a date and time at midnight: that time says nothing
    date = date.str.strip().str.replace(r"[ T]0?0:00(?::00(?:\.0+)?)?$", "", regex=True)
    time = time.str.strip()
    bare = time.str.fullmatch(_TIME_OF_DAY).fillna(False).astype(bool)
    # a date that still has a time of its own keeps it
    joinable = bare & (date != "") & ~date.str.contains(":", regex=False)
    joined = (date + " " + time).where(joinable, time.where(~bare, date))
    return joined.where(time != "", date)


def _melt_wide(label: str, tbl: table.Table, plan: colplan.ColumnPlan, column) -> pd.DataFrame:
    """One RAW row per (input row, analyte column); the row's other fields repeat."""
    shared = {
        name: column(name)
        for name in RAW
        if name
        not in ("source_file", "source_row", "test_name", "value_raw", "unit_raw", "analyte_hint")
    }
    pieces = []
    for col, (analyte, unit) in plan.wide.items():
        piece = pd.DataFrame(shared)
        piece["source_row"] = tbl.source_row
        piece["test_name"] = col
        piece["value_raw"] = tbl.frame[col].astype("string[pyarrow]").fillna("")
        piece["unit_raw"] = unit
        piece["analyte_hint"] = analyte
        pieces.append(piece)
    raw = pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame(columns=list(RAW))
    raw["source_file"] = label
    if "collected_at" not in plan.columns and "specimen_id" not in plan.columns:
        # an undated wide row is one draw: let its line number identify the specimen
        raw["specimen_id"] = "line-" + raw["source_row"].astype(str)
    raw = raw.sort_values(["source_row"], kind="stable").reset_index(drop=True)
    return conform(raw, RAW)


def _sibling(p: Path, name: str) -> Path | None:
    """The side table `name` beside the export `p`, in any case, plain or gzipped (MIMIC is
    published as .csv.gz)."""
    names = {q.name.lower(): q for q in p.parent.iterdir()}
    return names.get(name.lower()) or names.get(name.lower() + ".gz")


def _mark_medications(p: Path, raw: pd.DataFrame, preset: dict[str, Any]) -> int:
    """Write a preset's companion medication list (Synthea's medications.csv, MIMIC's
    prescriptions, plain or gzipped, beside the export) into the medication text of the
    results its records cover; how many of its records name a medicine the patterns read."""
    spec = preset.get("medications")
    if not spec:
        return 0
    path = _sibling(p, spec["file"])
    if path is None:
        return 0
    records = medications.companion_records(path, spec)
    medications.mark_results(raw, records)
    return len(records)


def _read_small_csv(path: Path) -> list[dict[str, str]]:
    raw = cast(BinaryIO, sniff.open_binary(path))  # a plain or gzip file object
    with io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def _join_dictionary(p: Path, raw: pd.DataFrame, spec: dict[str, str]) -> None:
    path = _sibling(p, spec["file"])
    if path is None:
        return
    rows = _read_small_csv(path)
    names = {r.get(spec["code"], ""): r.get(spec["name"], "") for r in rows}
    loincs = {r.get(spec["code"], ""): r.get(spec.get("loinc", ""), "") for r in rows}
    code = raw["test_code"].str.strip()
    raw["test_name"] = raw["test_name"].where(raw["test_name"] != "", code.map(names).fillna(""))
    raw["loinc"] = raw["loinc"].where(raw["loinc"] != "", code.map(loincs).fillna(""))


def _join_demographics(p: Path, raw: pd.DataFrame, spec: dict[str, str]) -> None:
    path = _sibling(p, spec["file"])
    if path is None:
        return
    rows = _read_small_csv(path)
    # both sides' ids cleaned as the results' ids are ("93705.0", invisible characters)
    key = patient_id_text(raw["patient_id"])
    side_ids = patient_id_text(pd.Series([r.get(spec["key"], "") for r in rows], dtype=object))
    for field_name in ("sex", "birth_date"):
        src = spec.get(field_name)
        if not src:
            continue
        lookup = dict(zip(side_ids, (r.get(src, "") for r in rows), strict=True))
        raw[field_name] = raw[field_name].where(raw[field_name] != "", key.map(lookup).fillna(""))
