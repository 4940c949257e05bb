"""Medication records kept apart from the results (FHIR MedicationRequest, MedicationStatement,
MedicationAdministration and MedicationDispense resources; a medication list beside a research
export), turned into the `medication` text of the results they cover.

The patterns read medicines from a result row's medication column (catalog.names_medicine):
a supplement of vitamin D strengthens the vitamin D pattern, and a proton pump inhibitor or
a diuretic is said in the clinician's text of the Mg patterns (CLINICAL.md sec. 4 and 5).
Exports that list medicines in records of their own say the same thing with dates, so the
medicines of each such record (by the names reference_ranges/medications.toml gives them:
"Pantoprazole 40 mg IV" is "pantoprazole") are written into the medication text of the same
patient's results whose collection day it covers, and everything after that is unchanged.

What a record covers, by day (medicines are prescribed and listed by day, and a day does
not depend on the time zone a time is printed in):
- from its start day to its end day, both included, where the record states both (a
  dispense ends with the last day of the supply it states);
- from its start day on, where it has no end and says the medicine is still taken
  (status active): an active prescription or medication-list entry;
- its start day only, where it has no end and does not say it is still taken (a stopped or
  completed order that states only when it was written, a single administration): labinterp
  does not guess for how long it was taken.
A record without a readable start day covers nothing. Readers keep only the records that
name a medicine labinterp looks for (`names_a_medicine_read`, reference_ranges/
medications.toml); the rest are not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labinterp.catalog import medicines_named, names_medicine
from labinterp.errors import DamagedFileError
from labinterp.normalize import patient_id_text
from labinterp.readers.sniff import sniff

# the groups of reference_ranges/medications.toml the patterns read
_GROUPS = ("vitamin_d", "mg_lowering")


@dataclass(frozen=True)
class MedicationRecord:
    """One medicine a patient was prescribed, listed as taking, or given."""

    patient_id: str
    text: str  # the medicine as the record names it
    start: str  # a date or date-time as written ("2024-03-01", "2024-03-01T08:15:00+01:00")
    end: str = ""  # "" when the record states none
    ongoing: bool = False  # the record says the medicine is still taken


def names_a_medicine_read(text: str) -> bool:
    """Whether `text` names a medicine the patterns read (a form of vitamin D, a medicine
    that lowers Mg)."""
    return any(names_medicine(group, text) for group in _GROUPS)


def _day(text: pd.Series) -> pd.Series:
    """The day a date or ISO 8601 date-time is written for (its first ten characters, so
    the local day as printed); NaT when it is not written as YYYY-MM-DD."""
    return pd.to_datetime(text.str.slice(0, 10), format="%Y-%m-%d", errors="coerce")


def _generic_names(text: str) -> str:
    """The medicines a record's text names that the patterns read, by the words of
    reference_ranges/medications.toml ("Pantoprazole 40 mg IV" -> "pantoprazole"): an ICU
    lists one medicine under many order texts, and the names are what a result is marked
    with."""
    return "; ".join(medicines_named("vitamin_d", text) + medicines_named("mg_lowering", text))


def mark_results(raw: pd.DataFrame, records: list[MedicationRecord]) -> None:
    """Add to `raw`'s medication text (in place) the medicines of the records of `records`
    that cover the row's collection day (see Coverage; made once, it marks any number of
    batches of results)."""
    Coverage(records).mark(raw)


class Coverage:
    """The days medication records cover, per patient and medicine, ready to mark results.

    Per medicine, a row is covered when a record of its patient starting on or before its
    day ends on or after it: with the records sorted by (patient, start), the latest end
    so far tells, one search per row, so a patient with thousands of administrations and
    thousands of results costs no pairing of each with each. Days are counted from the
    first start, and a key per (patient, day) sorts like the pair."""

    def __init__(self, records: list[MedicationRecord]) -> None:
        kept = [r for r in records if r.patient_id]
        texts = {t: _generic_names(t) for t in {r.text for r in kept}}  # each text once
        meds = pd.DataFrame(
            {
                "patient_id": patient_id_text(
                    pd.Series([r.patient_id for r in kept], dtype=object)
                ),
                "name": [texts[r.text] for r in kept],
                "start": _day(pd.Series([r.start for r in kept], dtype=object).astype(str)),
                "end": _day(pd.Series([r.end for r in kept], dtype=object).astype(str)),
                "ongoing": np.array([r.ongoing for r in kept], dtype=bool),
            }
        )
        meds = meds[meds["start"].notna() & (meds["name"] != "")]
        self.patients = pd.Index(meds["patient_id"].unique())
        starts = meds["start"].to_numpy(dtype="datetime64[D]")
        ends = meds["end"].to_numpy(dtype="datetime64[D]")
        self.first = starts.min() if len(starts) else np.datetime64("1970-01-01", "D")
        start = (starts - self.first).astype("int64")
        has_end = ~np.isnat(ends)
        end = np.full(len(ends), np.nan)
        end[has_end] = (ends[has_end] - self.first).astype("int64")
        last = int(max(start.max(initial=0), np.nanmax(end, initial=0)))
        self.span = last + 2  # day span - 1 is "still taken": after every day a record names
        # no end: open for an ongoing medicine, else its start day alone
        end = np.where(np.isnan(end), np.where(meds["ongoing"], self.span - 1, start), end)
        patient = self.patients.get_indexer(meds["patient_id"]).astype("int64")
        names = meds["name"].to_numpy()
        # per medicine: the records' (patient, start) keys sorted, and the latest end so far
        self.by_name: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name in sorted(set(names)):
            of = np.flatnonzero(names == name)
            order = of[np.lexsort((start[of], patient[of]))]
            start_key = patient[order] * self.span + start[order]
            reach = np.maximum.accumulate(patient[order] * self.span + end[order].astype("int64"))
            self.by_name[name] = (start_key, reach)

    def mark(self, raw: pd.DataFrame) -> None:
        """Add the medicines covering each row's collection day to `raw`'s medication text."""
        if not self.by_name or raw.empty:
            return
        patient = self.patients.get_indexer(patient_id_text(raw["patient_id"]))
        mine = np.flatnonzero(patient >= 0)
        day = _day(raw["collected_at"].iloc[mine].astype(str).str.strip()).to_numpy("datetime64[D]")
        mine, day = mine[~np.isnat(day)], day[~np.isnat(day)]
        offset = (day - self.first).astype("int64")
        # a day before every record is covered by none; after every one, only by the open
        usable = offset >= 0
        mine, offset = mine[usable], np.minimum(offset[usable], self.span - 1)
        row_key = patient[mine].astype("int64") * self.span + offset
        marks = np.full(len(mine), "", dtype=object)
        for name, (start_key, reach) in self.by_name.items():
            before = np.searchsorted(start_key, row_key, side="right") - 1
            hit = (before >= 0) & (reach[np.maximum(before, 0)] >= row_key)
            marks[hit] = np.where(marks[hit] == "", name, marks[hit] + "; " + name)
        covered = marks != ""
        if not covered.any():
            return
        position = mine[covered]
        before_text = raw["medication"].iloc[position].fillna("").astype(str).to_numpy()
        joined = [
            f"{b}; {t}" if b.strip() else t
            for b, t in zip(before_text, marks[covered], strict=True)
        ]
        column = raw["medication"].astype(object).to_numpy(copy=True)
        column[position] = joined
        raw["medication"] = pd.Series(column, index=raw.index, dtype=raw["medication"].dtype)


# ---------------------------------------------------------------- companion lists

# rows of a companion list read at a time: a hospital's prescriptions table can be larger
# than memory, and only the few rows naming a medicine the patterns read are kept
_CHUNK_ROWS = 500_000


def companion_records(path: Path, spec: dict[str, Any]) -> list[MedicationRecord]:
    """The records of a medication list beside an export (a preset's [medications]: its
    `file`, and the columns `key` (patient), `text`, `start` and `end`) that name a medicine
    the patterns read. With `ongoing_without_end`, a row without an end is still taken (the
    list writes an end only once a medicine is stopped)."""
    stat = path.stat()
    columns = (spec["key"], spec["text"], spec["start"], spec["end"])
    ongoing = bool(spec.get("ongoing_without_end", False))
    return list(_companion_records(str(path), stat.st_mtime_ns, stat.st_size, columns, ongoing))


@lru_cache(maxsize=4)  # read once for all the batches of the export beside it
def _companion_records(
    path: str, _mtime: int, _size: int, columns: tuple[str, str, str, str], ongoing: bool
) -> tuple[MedicationRecord, ...]:
    named: dict[str, bool] = {}  # a list repeats its medicine names: each is looked up once
    out: list[MedicationRecord] = []
    sniffed = sniff(Path(path))  # its encoding, separator and compression
    try:
        for chunk in pd.read_csv(
            path,
            sep=sniffed.delimiter or ",",
            usecols=lambda c: c in columns,
            dtype=str,
            keep_default_na=False,
            chunksize=_CHUNK_ROWS,
            encoding=sniffed.encoding,
        ):
            out.extend(_records_of(chunk, columns, ongoing, named))
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError) as exc:
        # refused, not skipped: the export's results would be read without its medicines
        raise DamagedFileError(
            f"the medication list beside the export cannot be read ({type(exc).__name__}).",
            file=Path(path).name,
            fix="re-export it as CSV, or move it out of the folder to read the results alone.",
        ) from exc
    return tuple(out)


def _records_of(
    chunk: pd.DataFrame, columns: tuple[str, str, str, str], ongoing: bool, named: dict[str, bool]
) -> list[MedicationRecord]:
    """The records of rows of a medication list naming a medicine the patterns read."""
    out = []
    chunk = chunk.reindex(columns=list(columns), fill_value="")
    texts = chunk[columns[1]].str.strip()
    for text in texts.unique():
        if text not in named:
            named[text] = names_a_medicine_read(text)
    wanted = chunk[texts.map(named).to_numpy(dtype=bool)]
    for key, text, start, end in wanted.itertuples(index=False):
        end = end.strip()
        out.append(MedicationRecord(key, text.strip(), start.strip(), end, ongoing and not end))
    return out
