"""RAW rows -> canonical RESULTS rows + REJECTED rows (each with a machine-readable reason).

Every input row ends in exactly one of the two tables. The work is done on the distinct
values of each column (a few hundred test, unit, range and date spellings even in a
million-row export) and the answers are gathered back to the rows with integer codes, so
the cost per row is a handful of array look-ups.
"""

from __future__ import annotations

import logging
import math
import os
import re
import unicodedata
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from labinterp import grading, units
from labinterp.catalog import (
    UNRECOGNISED_STATUS,
    ResultStatus,
    analyte_for,
    analytes,
    comparator_code,
    fallback_ranges,
    fold_accents,
    index_flag_raised,
    index_text_raised,
    medicines_named,
    names_medicine,
    not_blood_specimen,
    result_status,
    sample_index_kind,
    sample_indices,
)
from labinterp.errors import DateFormatError, UnitError
from labinterp.parameters import number
from labinterp.readers import duplicates
from labinterp.readers.duplicates import STATUS_RANK
from labinterp.resources import read_reference_toml, reference_file
from labinterp.schema import REJECTED, RESULTS, STR, conform
from labinterp.test_names import egfr_race_form, unit_in_test_name, vitamin_d_component

SIGNIFICANT_DIGITS = 6  # no lab reports more; removes float32 noise (1.7999999523 -> 1.8)
# Column jobs run on this many threads: the per-row work in them (hashing, gathering
# strings, numpy indexing) is in pyarrow and numpy, which release the GIL.
THREADS = os.cpu_count() or 1
_T = TypeVar("_T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    date_format: str | None = None  # strftime format forced by the user
    decimal: str | None = None  # "," for decimal-comma files; None = detect
    # the file shows both separators (see decimal_evidence); only with `decimal` given
    decimal_mixed: bool = False
    tests: tuple[tuple[str, str], ...] = ()  # user mapping: test label/code -> analyte
    undated: bool = False  # the file has no collection-time column at all
    slash_order: str | None = None  # "mdy" | "dmy" already decided for this file (batches)
    # "table" (CSV, XLSX, ...), "fhir" or "hl7v2": where a rejected row's fix points to
    source_format: str = "table"


# ---------------------------------------------------------------- distinct-value helpers


class _Coded:
    """A per-row column kept as its distinct `values` and each row's index into them.

    Every per-value computation (parsing, look-ups, pandas string methods) runs once per
    distinct value; only integer codes and finished arrays ever touch a million rows.
    Text straight from the file also keeps its distinct values as a pyarrow array
    (`text`): a column with 150k distinct times or specimen ids then goes to pyarrow and
    back without becoming 150k Python strings.
    """

    def __init__(
        self, codes: np.ndarray, values: list[Any] | None = None, text: pa.Array | None = None
    ) -> None:
        self.codes = codes  # int64, one per row: index into `values`
        self._values = values  # distinct values (text, None for missing, or tuples of them)
        self.text = text  # the same distinct values as a pyarrow string array, if known
        assert values is not None or text is not None

    @property
    def values(self) -> list[Any]:
        if self._values is None:
            assert self.text is not None
            self._values = self.text.to_pylist()
        return self._values

    def map(self, func: Callable[[Any], Any]) -> _Coded:
        """`func` applied once per distinct value."""
        return _Coded(self.codes, [func(v) for v in self.values])

    def field(self, k: int) -> _Coded:
        """Item `k` of tuple values."""
        return _Coded(self.codes, [v[k] for v in self.values])

    def via_pandas(self, func: Callable[[pd.Series], pd.Series]) -> _Coded:
        """A pandas string operation applied to the distinct values (same semantics as on rows)."""
        if self.text is not None:
            out = func(_text_series(self.text)).array.__arrow_array__()
            return _Coded(self.codes, text=out.combine_chunks().cast(pa.large_string()))
        listed = func(pd.Series(self.values, dtype=STR)).tolist()
        return _Coded(self.codes, [None if v is pd.NA else v for v in listed])

    def compact(self) -> _Coded:
        """Equal values merged, so that equal codes mean equal values."""
        if self.text is not None:  # in pyarrow, numbered the same way (first appearance)
            enc = pc.dictionary_encode(self.text, null_encoding="encode")
            remap = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
            return _Coded(remap[self.codes], text=enc.dictionary)
        index: dict[Any, int] = {}
        remap = np.array([index.setdefault(v, len(index)) for v in self.values], dtype=np.int64)
        return _Coded(remap[self.codes], list(index))

    def at(self, rows: np.ndarray) -> _Coded:
        if self._values is not None and len(self._values) == 1:
            # one value (a field the file does not have): no gather over a million rows
            n = int(np.count_nonzero(rows)) if rows.dtype == bool else len(rows)
            return _Coded(np.zeros(n, dtype=np.int64), self._values, self.text)
        return _Coded(self.codes[rows], self._values, self.text)

    def rows_equal(self, value: str) -> np.ndarray:
        """Boolean per row: the value is `value` (missing is not)."""
        if self.text is None:
            return self.rows_where(lambda v: v == value)
        hit = pc.fill_null(pc.equal(self.text, value), False)
        return np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool)[self.codes]

    def rows_where(self, test: Callable[[Any], bool]) -> np.ndarray:
        """Boolean per row; `test` runs once per distinct value."""
        hit = np.array([bool(test(v)) for v in self.values], dtype=bool)
        return hit[self.codes]

    def floats(self) -> np.ndarray:
        """Float per row (None -> NaN)."""
        table = np.array([np.nan if v is None else v for v in self.values], dtype=float)
        return table[self.codes]

    def strings(self, empty_is_missing: bool = False) -> pd.Series:
        """The values per row as a "string[pyarrow]" Series (None -> <NA>)."""
        table = self._distinct_text()
        if empty_is_missing:
            table = pc.if_else(pc.equal(table, ""), pa.scalar(None, pa.large_string()), table)
        if len(table) == 1:  # e.g. the file name: one value, no per-row look-up needed
            return _text_series(_repeated(table[0].as_py(), len(self.codes)))
        return _text_series(table.take(pa.array(self.codes)))

    def _distinct_text(self) -> pa.Array:
        """The distinct values as large strings (what pandas stores; saves a cast per row)."""
        if self.text is not None:
            return self.text.cast(pa.large_string())
        return pa.array(self.values, type=pa.large_string())

    def filled(self) -> _Coded:
        """Missing values as ""."""
        return _Coded(self.codes, ["" if v is None else v for v in self.values])


def _in_threads(jobs: dict[str, Callable[[], _T]]) -> dict[str, _T]:
    """The result of each independent column job, computed on THREADS threads."""
    if THREADS < 2 or len(jobs) < 2:
        return {name: job() for name, job in jobs.items()}
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


class _Side:
    """One helper thread for jobs that overlap the caller's own work (none when THREADS < 2:
    each job then runs when its result is asked for)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1) if THREADS >= 2 else None

    def submit(self, job: Callable[..., _T], *args: Any) -> Future[_T] | partial[_T]:
        return self._pool.submit(job, *args) if self._pool else partial(job, *args)

    def result(self, handle: Future[_T] | partial[_T]) -> _T:
        return handle.result() if isinstance(handle, Future) else handle()

    def __enter__(self) -> _Side:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool:
            self._pool.shutdown(cancel_futures=True)


def _coded(series: pd.Series) -> _Coded:
    """Encode a text column by its distinct values (missing -> None)."""
    if isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow":
        arr = series.array.__arrow_array__()
        if _all_empty(arr):  # a field the file does not have: nothing to hash
            return _Coded(np.zeros(len(arr), dtype=np.int64), [""])
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        enc = pc.dictionary_encode(arr, null_encoding="encode")
        codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        return _Coded(codes, text=enc.dictionary)
    codes, uniques = pd.factorize(series, use_na_sentinel=False)
    return _Coded(codes.astype(np.int64), [None if pd.isna(v) else v for v in uniques])


def _coded_label(series: pd.Series) -> _Coded:
    """`_coded`, with a cheap check first for a column holding a single text value."""
    if isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow":
        arr = series.array.__arrow_array__()
        if len(arr) and arr.null_count == 0:
            first = arr[0]
            if pc.all(pc.equal(arr, first)).as_py():
                one = pa.array([first.as_py()], type=arr.type)
                return _Coded(np.zeros(len(arr), dtype=np.int64), text=one)
    return _coded(series)


def _specimen_ids(series: pd.Series, rows: np.ndarray) -> pd.Series:
    """The output specimen ids: the rows' text, stripped, "" as missing.

    Row by row rather than by distinct value: nearly every specimen id is distinct, so
    hashing them would cost more than it saves.
    """
    text = _strip(_take(series, rows).astype(pd.StringDtype("pyarrow"))).array.__arrow_array__()
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    text = _without_excel_text(text.cast(pa.large_string()))
    return _text_series(pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.large_string()), text))


def _all_empty(arr: pa.ChunkedArray) -> bool:
    """Every value is "": no text bytes at all and nothing missing (checks buffers, not rows)."""
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    return (
        len(arr) > 0
        and arr.null_count == 0
        and all(not c.buffers()[2] or c.buffers()[2].size == 0 for c in chunks)
    )


def _joint(*parts: _Coded) -> _Coded:
    """Rows coded by the distinct combinations of several coded columns (tuple values).

    The parts' codes are packed into one mixed-radix key per row, and the keys are
    renumbered only when the next part would push them past what a bitmap can cover:
    most joints then cost a single renumbering pass instead of one per part.
    """
    n = len(parts[0].codes)
    limit = _bitmap_bound(n)
    ids = np.zeros(n, dtype=np.int64)  # per row: its combination, packed or renumbered
    count = 1  # how many combinations `ids` can take
    picks: list[np.ndarray] = []  # per renumbered part: its value in each combination
    pending: list[int] = []  # widths of the parts packed into `ids` since the last renumber
    used: list[int] = []  # indexes of the parts with more than one value, in packing order

    def renumber() -> None:
        nonlocal ids, count, picks
        ids, combos = _renumber(ids, count)
        packed = combos
        mine = []
        for width in reversed(pending):  # the last packed part is the least significant
            mine.append(packed % width)
            packed = packed // width
        picks = [p[packed] for p in picks] + mine[::-1]
        count = len(combos)
        pending.clear()

    for i, part in enumerate(parts):
        width = len(part.values)
        if width <= 1:  # e.g. a field the file leaves empty: nothing to combine
            continue
        if pending and count * width > limit:
            renumber()
        ids = ids * width + part.codes
        count *= width
        pending.append(width)
        used.append(i)
    if pending:
        renumber()
    pick_of = dict(zip(used, picks, strict=True))
    columns = [
        [part.values[k] for k in pick_of[i]] if i in pick_of else [part.values[0]] * count
        for i, part in enumerate(parts)
    ]
    return _Coded(ids, list(zip(*columns, strict=True)))


def _bitmap_bound(n: int) -> int:
    """Keys below this bound are renumbered with a bitmap over the range, not a hash."""
    return 4 * n + 1024


def _renumber(keys: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys in [0, bound) renumbered 0..k-1, and the k distinct keys."""
    if bound <= _bitmap_bound(len(keys)):  # a bitmap over the key range beats hashing
        seen = np.zeros(bound, dtype=bool)
        seen[keys] = True
        number = np.cumsum(seen) - 1
        return number[keys], np.flatnonzero(seen)
    codes, distinct = pd.factorize(keys)
    return codes.astype(np.int64), np.asarray(distinct, dtype=np.int64)


def _repeated(value: str | None, n: int) -> pa.Array:
    """`value` n times as a large-string array, built from its bytes without a gather."""
    if value is None:
        return pa.nulls(n, pa.large_string())
    data = value.encode()
    offsets = np.arange(n + 1, dtype=np.int64) * len(data)
    return pa.Array.from_buffers(
        pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data * n)]
    )


def _text_series(values: pa.Array | pa.ChunkedArray) -> pd.Series:
    return pd.Series(pd.arrays.ArrowStringArray(values))


def _take(series: pd.Series, rows: np.ndarray) -> pd.Series:
    """Rows of a column, keeping its dtype (and its missing values)."""
    return pd.Series(series.array.take(rows))


class _Verdicts:
    """Each row's first reject reason and its detail; rows without one are kept."""

    def __init__(self, n: int) -> None:
        self.texts = [""]  # reasons and details, by number (0 = none)
        self._number = {"": 0}
        self.reason = np.zeros(n, dtype=np.int64)
        self.detail = np.zeros(n, dtype=np.int64)

    def _id(self, text: str) -> int:
        if text not in self._number:
            self._number[text] = len(self.texts)
            self.texts.append(text)
        return self._number[text]

    def mark(self, mask: np.ndarray, reason: str, detail: str) -> None:
        fresh = mask & (self.reason == 0)
        self.reason[fresh] = self._id(reason)
        self.detail[fresh] = self._id(detail)

    def mark_each(self, mask: np.ndarray, why: _Coded) -> None:
        """Like `mark`, with a (reason, detail) pair per distinct value of `why`."""
        reasons = np.array([self._id(r) for r, _ in why.values], dtype=np.int64)
        details = np.array([self._id(d) for _, d in why.values], dtype=np.int64)
        fresh = mask & (self.reason == 0)
        self.reason[fresh] = reasons[why.codes[fresh]]
        self.detail[fresh] = details[why.codes[fresh]]

    @property
    def kept(self) -> np.ndarray:
        return self.reason == 0

    def text_of(self, numbers: np.ndarray) -> pd.Series:
        return _Coded(numbers, self.texts).strings()


def _text(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return ""
    text = str(value).strip()
    if text.startswith('="') and text.endswith('"') and len(text) > 2:
        return text[2:-1].strip()  # ="000123": a spreadsheet's way to keep leading zeros
    return text


def _without_excel_text(text: pa.Array) -> pa.Array:
    """`text` with ="000123" (a spreadsheet formula that keeps a text's leading zeros) as
    000123; a scan for '="' first, as nearly no export has any."""
    if not pc.any(pc.starts_with(text, '="')).as_py():
        return text
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r'^="(.*)"$', r"\1"))


# ---------------------------------------------------------------- values

_COMPARATORS = {
    "<": "<",
    "<=": "<=",
    "=<": "<=",
    "≤": "<=",
    ">": ">",
    ">=": ">=",
    "=>": ">=",
    "≥": ">=",
}
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_SYMBOLIC = re.compile(rf"^(?P<cmp><=|>=|=<|=>|≤|≥|<|>)?\s*(?P<num>{_NUMBER})$")
_WORDED = re.compile(
    rf"^(?P<cmp>less than or equal to|greater than or equal to|less than|greater than|below|"
    rf"above|under|over|menor de|menor que|inferior a|mayor de|mayor que|superior a)"
    rf"\s*(?P<num>{_NUMBER})$",
    re.IGNORECASE,
)
_WORD_CMP = {
    "less than or equal to": "<=",
    "greater than or equal to": ">=",
    "less than": "<",
    "greater than": ">",
    "below": "<",
    "under": "<",
    "above": ">",
    "over": ">",
    "up to": "<=",  # only in ranges: "up to 10"
    # Spanish: "menor de 0,5", "superior a 10", "hasta 5" (ranges only)
    "menor de": "<",
    "menor que": "<",
    "inferior a": "<",
    "mayor de": ">",
    "mayor que": ">",
    "superior a": ">",
    "hasta": "<=",
}


def _round_sig(x: float) -> float:
    if x == 0 or not np.isfinite(x):
        return x
    return float(f"{x:.{SIGNIFICANT_DIGITS}g}")


# Numbers grouped in thousands by the separator that is not the file's decimal one: "1,250"
# or "12,500.5" in a file of decimal points, "1.250" or "1.250,5" in a file of decimal
# commas, also inside a range ("1,000-3,000"). A group never starts a number with 0 ("0.500"
# is a decimal), and a comma followed by one or two digits is never a group ("12,5").
_GROUPED = {
    ".": re.compile(r"(?<![\d.,])[1-9]\d{0,2}(?:,\d{3})+(?![\d,])"),
    ",": re.compile(r"(?<![\d.,])[1-9]\d{0,2}(?:\.\d{3})+(?![\d.])"),
}


def _ungrouped(text: str, decimal: str) -> str:
    """`text` with the thousands grouping of its numbers taken out (see _GROUPED)."""
    pattern = _GROUPED.get(decimal)
    if pattern is None:
        return text
    group = "," if decimal == "." else "."
    return pattern.sub(lambda m: m[0].replace(group, ""), text)


# Numbers that can be read only one way whatever the file's separator, so that a value
# from a lab of the other convention (two exports joined) is read, not dropped: a decimal
# comma ("0,62", "12,5", "1,2345", "0,500", "1.250,5") is never a thousands group, as a group
# has exactly three digits and never starts a number with 0; "1,250.5" has a decimal point.
# "1,250" and "1.250" fit both and are left to the file's separator (see _GROUPED).
_ONLY_DECIMAL_COMMA = re.compile(
    r"(?<![\d.,])(?:0,\d+|\d+,(?:\d{1,2}|\d{4,})|[1-9]\d{0,2}(?:\.\d{3})+,\d+)(?![\d.,])"
)
_ONLY_DECIMAL_POINT_GROUPED = re.compile(r"(?<![\d.,])[1-9]\d{0,2}(?:,\d{3})+\.\d+(?![\d.,])")


def _other_convention_read(text: str, decimal: str) -> str:
    """`text` with its numbers that can be read only with the separator the file does not
    use (see _ONLY_DECIMAL_COMMA) written with decimal points and no grouping."""
    if decimal == "." and "," in text:
        return _ONLY_DECIMAL_COMMA.sub(lambda m: m[0].replace(".", "").replace(",", "."), text)
    if decimal == "," and "." in text:
        return _ONLY_DECIMAL_POINT_GROUPED.sub(lambda m: m[0].replace(",", ""), text)
    return text


def parse_value(text: str, decimal: str) -> tuple[str, float | None]:
    """('<', 0.5) for '<0.5'; ('', 7.9) for '7.9'; ('', None) when not a number. A number
    grouped in thousands by the other separator reads whole: PTH "1,250" is 1250 in a file
    of decimal points, "1.250" is 1250 in a file of decimal commas. A number that can be
    read only one way is read that way in either file: "0,62" is 0.62 in a file of decimal
    points, "1,250.5" is 1250.5 in a file of decimal commas."""
    s = _ungrouped(_other_convention_read(text.strip(), decimal), decimal)
    if decimal == ",":
        s = s.replace(".", "").replace(",", ".") if re.search(r"\d,\d", s) else s
    m = _SYMBOLIC.match(s)
    if m:
        return _COMPARATORS.get(m.group("cmp") or "", ""), _round_sig(float(m.group("num")))
    m = _WORDED.match(s)
    if m:
        return _WORD_CMP[m.group("cmp").lower()], _round_sig(float(m.group("num")))
    return "", None


# An abnormal-flag marker labs print after the number ("7.6 L", "1.2*", "3.1 (H)"): high,
# low, critical high/low, abnormal, critical ("2.4 (C)", "2.4 CRIT"), and the symbols some
# systems use for abnormal. A letter counts only right after the number or after a space,
# so the L of "mmol/L" is never one.
_MARK_WORDS = r"CRITICAL|CRIT|HH|LL|H|L|A|C"
_MARKS = rf"{_MARK_WORDS}|\*|!"
_MARKED = re.compile(
    rf"^(?P<body>.*?)(?:\s*\((?P<paren>{_MARKS})\)|\s*\[(?P<square>{_MARKS})\]"
    rf"|\s*(?P<symbol>\*|!)|(?:(?<=\d)|\s+)(?P<letter>{_MARK_WORDS})[*!]?)$",
    re.I,
)
# The same marker between the number and its unit ("3.0* mmol/L", "1.2 H mg/dL"), as the
# start of what follows the number; a letter counts only before a space.
_MARK_BEFORE_UNIT = re.compile(
    rf"^(?:\((?P<paren>{_MARKS})\)|\[(?P<square>{_MARKS})\]|(?P<symbol>\*|!)"
    rf"|(?P<letter>{_MARK_WORDS})(?=\s))\s*(?P<unit>\S.*)$",
    re.I,
)
# The same marker before the number ("LL 2.4", "(C) 2.4", "* 2.4 mmol/L"); a letter only
# before a space, so a word ("LESS THAN 0.4") is never one.
_MARK_BEFORE_NUMBER = re.compile(
    rf"^(?:\((?P<paren>{_MARKS})\)|\[(?P<square>{_MARKS})\]|(?P<symbol>\*|!)"
    rf"|(?P<letter>{_MARK_WORDS})(?=\s))\s*(?P<body>[<>=≤≥]*\s*[\d.].*)$",
    re.I,
)


def _marker(m: re.Match[str]) -> str:
    return m["paren"] or m["square"] or m["symbol"] or m["letter"]


# A number with text after it that may be its unit ("1.2 mg/dL", "12%", "<0.5mmol/L"); the
# text starts with neither a digit nor what continues a number or a range (". , + -").
_UNIT_TAIL = re.compile(r"^(?P<number>.*?\d)\s*(?P<unit>[^\s\d.,+\-].*)$")


def _plain_text(text: str) -> str:
    """`text` in NFKC form (full-width digits, odd spaces) without invisible format
    characters (Unicode category Cf, e.g. zero-width spaces), stripped."""
    if text.isascii():  # ASCII has neither
        return text.strip()
    folded = unicodedata.normalize("NFKC", text)
    return "".join(c for c in folded if unicodedata.category(c) != "Cf").strip()


# An amount or volume with an optional metric prefix: "mmol", "mEq", "mg", "uL", "IU", "U"
# printed where a concentration belongs. Plainly a unit, not a word of a text result.
_AMOUNT_UNIT = re.compile(r"^[munpkdµμ]?(?:mol|eq|g|l|iu|u)$", re.IGNORECASE)


def _unit_shaped(text: str) -> bool:
    """Text after a number that is a unit: one in the unit table, or one that is plainly a
    unit though labinterp does not know it ("%", "K/uL", "mmol"); words ("see comment")
    are not. A number with such a unit is rejected for its unit, with the fix, instead of
    being kept as a text result that hides it."""
    return (
        units.lookup(text) is not None
        or "%" in text
        or "/" in text
        or _AMOUNT_UNIT.match(text) is not None
    )


@cache
def _result_note() -> re.Pattern[str]:
    """A number's trailing note of reference_ranges/result_notes.toml ("1.2 verified"),
    with what precedes it as `body`."""
    notes = read_reference_toml(
        "result_notes.toml",
        lambda data: [" ".join(fold_accents(str(n)).lower().split()) for n in data["notes"]],
    )
    words = "|".join(
        re.escape(n).replace(r"\ ", r"\s+") for n in sorted(notes, key=len, reverse=True)
    )
    return re.compile(rf"^(?P<body>.*\d.*?)[\s,;]*[(\[]?\s*(?:{words})\s*[)\]]?\.?$", re.I)


def _read_value(text: str, decimal: str) -> tuple[str, float | None, str, str, bool]:
    """(comparator, number, unit printed after it, abnormal-flag marker, hides a number)
    of a result text: ('<', 0.5, 'mg/dL', '', False) for '<0.5 mg/dL', ('', 7.6, '', 'L',
    False) for '7.6 L'. Without a readable number: ('', None, '', '', hides), where `hides`
    says the text is digits and signs without a word ("(1.2)", "1.2.3", "12-15"), which
    would hide a number if it were kept as a text result."""
    s = _plain_text(text)
    cmp_, number = parse_value(s, decimal)
    if number is not None:
        return cmp_, number, "", "", False
    if any(c.isalpha() for c in s):  # "1.2 verified": the number
        noted = _result_note().match(fold_accents(s))
        s = noted["body"] if noted else s
        cmp_, number = parse_value(s, decimal)
        if number is not None:
            return cmp_, number, "", "", False
    m = _MARK_BEFORE_NUMBER.match(s)
    if m:
        cmp_, number, unit, marker, _ = _read_value(m["body"], decimal)
        if number is not None:
            return cmp_, number, unit, marker or _marker(m), False
    body, marker = s, ""
    m = _MARKED.match(s)
    if m:
        body = m["body"]
        marker = _marker(m)
        cmp_, number = parse_value(body, decimal)
        if number is not None:
            return cmp_, number, "", marker, False
    core = body
    m = _UNIT_TAIL.match(body)
    if m:
        unit = m["unit"]
        inner = None if marker else _MARK_BEFORE_UNIT.match(unit)
        if inner and _unit_shaped(inner["unit"]):
            unit = inner["unit"]
            marker = _marker(inner)
    if m and _unit_shaped(unit):
        cmp_, number = parse_value(m["number"], decimal)
        if number is not None:
            return cmp_, number, units.clean_spelling(unit), marker, False
        core = m["number"]
    hides = any(c.isdigit() for c in core) and not any(c.isalpha() for c in core)
    return "", None, "", "", hides


# A number that reads differently with either separator: "1,250" is 1250 with decimal
# points, 1.25 with decimal commas (a thousands group: three digits, not after a 0).
_EITHER_SEPARATOR = re.compile(r"(?<![\d.,])[1-9]\d{0,2}[.,]\d{3}(?![\d.,])")


def _value_of(
    value_raw: object,
    valuenum_raw: object,
    comparator_raw: object,
    decimal: str,
    mixed_decimals: bool = False,
):
    """(comparator, number, text_result, reason, detail, unit printed with the number,
    abnormal-flag marker) for one distinct value triple. `mixed_decimals`: the file shows
    both decimal separators, so a number that reads differently with either is not read."""
    text = _text(value_raw)
    cmp_, number, unit, marker, hides = (
        _read_value(text, decimal) if text else ("", None, "", "", False)
    )
    either = _EITHER_SEPARATOR.search(text) if number is not None and mixed_decimals else None
    if either:
        detail = (
            f"the result '{text}' is ambiguous: this file has numbers with decimal points"
            f" and others with decimal commas, and '{either[0][-4]}' followed by three digits"
            " can be either a decimal or a thousands separator; write the number without"
            " a thousands separator in the export, or name the file's decimal separator"
            ' in a mapping file ([options] decimal = "." or ",") passed with --mapping'
        )
        return ("", None, "", "unparseable_value", detail, "", "")
    if number is None:
        num_text = _text(valuenum_raw)
        if num_text:
            _, number = parse_value(num_text, ".")
            cmp_ = ""
    code = _text(comparator_raw)
    extra_cmp = comparator_code(code) if code else ""
    if number is not None and extra_cmp is None:  # "NE": an exact reading would be wrong
        detail = (
            f"the comparator '{code[:20]}' beside the result is not one labinterp knows"
            " (<, <=, >=, >, LT, LE, GE, GT, EQ); correct it in the export"
        )
        return ("", None, "", "unparseable_value", detail, "", "")
    if number is not None:
        return (extra_cmp or cmp_, number, "", "", "", unit, marker)
    if hides:
        detail = f"the result '{text}' is not a number labinterp can read; correct it in the export"
        return ("", None, "", "unparseable_value", detail, "", "")
    if _plain_text(text):
        return ("", None, text, "", "", "", "")
    return ("", None, "", "missing_value", _DETAIL["missing_value"], "", "")


# ---------------------------------------------------------------- analytes


def _analyte_of(hint: object, loinc: object, code: object, name: object, tests: dict[str, str]):
    """(analyte id, reason it has none, whether the test is defined per 1.73 m2 of body
    surface, the kind of sample-quality index it is if it is one, the unit its name prints
    in brackets, its form: which race form of eGFR it is if it is one of two printed for a
    draw, which component of 25-OH vitamin D if it is one) for one distinct set of test
    fields."""
    h, lc, cd, nm = _text(hint), _text(loinc), _text(code), _text(name)
    race, without_race = egfr_race_form(lc, nm)  # "eGFR Non-Afr. American" -> "eGFR"
    if h:
        form = race if h == "egfr" else _COMPONENT_FORM.get(h, "")
        return (h, "", _per_body_surface(h, lc, cd, nm), "", "", form)
    for label in (nm, cd, lc):
        if label and label in tests:
            mapped = tests[label]
            per_area = _per_body_surface(mapped, lc, cd, nm)
            return (
                mapped,
                "",
                per_area,
                "",
                unit_in_test_name(nm),
                race if mapped == "egfr" else "",
            )
    # the catalog's spellings are plain text: full-width letters or an invisible character
    # in a test name must not make a magnesium result "out of scope"
    lc, cd, nm = _plain_text(lc), _plain_text(cd), _plain_text(nm)
    component = vitamin_d_component(lc, cd, nm)  # "25-OH Vitamin D3": see _vitamin_d_parts
    if component:
        return (COMPONENT_ANALYTE[component], "", False, "", unit_in_test_name(nm), component)
    found = None
    if race:  # its name read without the race words must be eGFR's
        found = analyte_for(lc or None, cd or None, _plain_text(without_race) or None)
        if found != "egfr":
            found, race = None, ""
    found = found or analyte_for(lc or None, cd or None, nm or None)
    if found:
        per_area = _per_body_surface(found, lc, cd, nm)
        return (found, "", per_area, "", unit_in_test_name(nm), race)
    if not (lc or cd or nm):
        return ("", "missing_test", False, "", "", "")
    index = sample_index_kind(nm) or sample_index_kind(cd)
    if index:
        return ("", "sample_quality_index", False, index, "", "")
    return ("", "out_of_scope", False, "", "", "")


def _index_outcome(
    kind: str, parsed: tuple[Any, ...], limits: tuple[float, float, str], flag: object, raw: object
):
    """(reason, detail, quality flag for the rest of the sample) of a sample-quality index
    row (`kind`: "hemolysis", ...); ("", "", "") for any other row. An index is raised
    when the lab says so: above the upper limit printed on the row, flagged high or
    abnormal, or worded so ("2+", "Moderate"); labinterp has no limit of its own."""
    if not kind:
        return ("", "", "")
    cmp_, number, text = parsed[0], parsed[1], _text(raw)  # "2+" is no number, nor text
    high = limits[1]
    raised: bool | None = None
    if number is not None and not np.isnan(high):
        if cmp_.startswith("<"):
            raised = False if number <= high else None
        else:
            raised = number > high or (cmp_ == ">=" and number >= high)
    elif number is None and text:
        raised = index_text_raised(text)
    if raised is not True and index_flag_raised(_text(flag)):
        raised = True
    mark = sample_indices().flags[kind]
    if raised:
        detail = (
            f"a {kind} index the lab marks as raised: the other results of this sample"
            f" are marked {mark}; nothing to fix"
        )
    elif raised is False:
        detail = (
            f"a {kind} index within the lab's limit: a check of the sample, nothing to mark;"
            " nothing to fix"
        )
    else:
        detail = (
            f"a {kind} index with no printed limit or flag to judge it by (limits depend on"
            " the analyzer: labinterp has none of its own): nothing marked; to have it"
            " judged, export the index with the lab's limit or flag"
        )
    return ("sample_quality_index", detail, mark if raised else "")


def _marks_from_indices(
    marks: _Coded, pid: _Coded, when: np.ndarray, specimen: pd.Series
) -> _Coded | None:
    """Per row, the quality flags ("hemolyzed", ...) that raised sample-quality indices give
    the rows of their sample: same patient, and the same collection time or the same
    specimen id. None when no index is raised (nearly every export)."""
    raised = np.array([bool(v) for v in marks.values], dtype=bool)[marks.codes]
    if not raised.any():
        return None
    spec = _specimen_text(specimen)
    out = np.full(len(marks.codes), "", dtype=object)
    for mark in sorted({v for v in marks.values if v}):
        source = raised & (np.array(marks.values, dtype=object)[marks.codes] == mark)
        hit = _in_draws_of(source, pid.codes, when, spec)
        out[hit] = np.where(out[hit] == "", mark, out[hit] + ";" + mark)
    codes, values = pd.factorize(out)
    return _Coded(codes.astype(np.int64), list(values))


def _race_adjusted_egfr(
    race: _Coded, kept: np.ndarray, pid: _Coded, when: np.ndarray, specimen: pd.Series
) -> tuple[np.ndarray, np.ndarray]:
    """(the race-adjusted eGFR rows whose draw has a kept race-free eGFR row: same patient,
    and the same collection time or specimen id; the race-adjusted rows left without one)."""
    form = np.array(race.values, dtype=object)[race.codes]
    free = kept & (form == "race_free")
    adjusted = kept & (form == "race_adjusted")
    paired = _in_draws_of(free, pid.codes, when, _specimen_text(specimen))
    return adjusted & paired, adjusted & ~paired


# The catalog analyte of each 25-OH vitamin D component (reference_ranges/analytes.csv):
# each converts ng/mL to nmol/L by its own factor (CLINICAL.md sec. 1, D2 x 2.423).
COMPONENT_ANALYTE = {"vitamin_d2": "vitamin_d2_25oh", "vitamin_d3": "vitamin_d3_25oh"}
_COMPONENT_FORM = {a: form for form, a in COMPONENT_ANALYTE.items()}


def _vitamin_d_parts(
    analyte: _Coded,
    form: _Coded,
    kept: np.ndarray,
    numeric: np.ndarray,
    pid: _Coded,
    when: np.ndarray,
    specimen: pd.Series,
) -> tuple[list[tuple[np.ndarray, str, str]], np.ndarray]:
    """(the 25-OH vitamin D component rows not read, each set with its reason and why; the
    D3 rows read as the patient's vitamin D) by draw: same patient, and the same collection time or
    specimen id (reference_ranges/vitamin_d_components.toml).

    Not read: the components of a draw that has its total; a D2 without a D3; D2 and D3
    of a draw where one of its component rows has no number to add (a text result, or a
    row already rejected for its own reason), or whose sample does not hold exactly one D2
    and one D3 (`vitamin_d_not_summed`: a result is lost, which a handout says). Kept: the
    D2 and D3 of a draw without a total, one of each, of one sample, both with a number;
    the engine sums them (episodes). A D3 without a D2 is the patient's vitamin D
    (CLINICAL.md sec. 1)."""
    forms = np.array(form.values, dtype=object)[form.codes]
    placed = ~pid.rows_equal("")  # a row without a patient belongs to no draw
    d2_any, d3_any = placed & (forms == "vitamin_d2"), placed & (forms == "vitamin_d3")
    d2, d3 = kept & d2_any, kept & d3_any
    total = kept & (np.array(analyte.values, dtype=object)[analyte.codes] == "vitamin_d_25oh")
    spec = _specimen_text(specimen)

    def in_draws(source: np.ndarray) -> np.ndarray:
        return _in_draws_of(source, pid.codes, when, spec)

    with_total = in_draws(total)
    beside_d2, beside_d3 = in_draws(d2_any), in_draws(d3_any)
    # a component row with no number to add keeps its draw's total from being summed
    unsummable = in_draws((d2_any | d3_any) & ~(kept & numeric))
    paired = (d2 | d3) & ~with_total & beside_d2 & beside_d3
    summable = paired & ~unsummable
    one_pair = _one_pair_of_one_sample(summable, d2, pid.codes, when, spec)
    rejected = [
        ((d2 | d3) & with_total, "vitamin_d_component", _DETAIL["vitamin_d_component"]),
        (
            d2 & ~with_total & ~beside_d3,
            "vitamin_d_component",
            _DETAIL["vitamin_d_component_no_total"],
        ),
        (paired & unsummable, "vitamin_d_not_summed", _DETAIL["vitamin_d_component_no_sum"]),
        (summable & ~one_pair, "vitamin_d_not_summed", _DETAIL["vitamin_d_component_not_one"]),
    ]
    return rejected, d3 & ~with_total & ~beside_d2


def _one_pair_of_one_sample(
    rows: np.ndarray, d2: np.ndarray, patient: np.ndarray, when: np.ndarray, spec: np.ndarray
) -> np.ndarray:
    """Of the component `rows` (D2 or D3 with a number, of draws without a total), those
    whose sample holds exactly one D2 and one D3 of them: the same specimen id, else (both
    without one) the same collection time, as the engine pairs them (episodes). Two D2
    lines, or parts on different specimen ids, give no single sum: choosing one would make
    the total depend on row order."""
    at = np.flatnonzero(rows)
    if not len(at):
        return rows
    sample = pd.DataFrame(
        {
            "patient": patient[at],
            "spec": spec[at],
            # the time matters only for rows without a specimen id
            "when": np.where(spec[at] == "", when[at].astype("int64"), 0),
            "d2": d2[at],
        }
    )
    counts = sample.groupby(["patient", "spec", "when"])["d2"].transform("sum")
    sizes = sample.groupby(["patient", "spec", "when"])["d2"].transform("size")
    out = np.zeros(len(rows), dtype=bool)
    out[at] = (counts.to_numpy() == 1) & (sizes.to_numpy() == 2)
    return out


def _as_total(analyte: _Coded, rows: np.ndarray) -> _Coded:
    """`analyte` with `rows` read as the total 25-OH vitamin D (a D3 printed alone: its
    unit factor is the total's, the catalog's D3 molar mass)."""
    values = list(analyte.values)
    if "vitamin_d_25oh" not in values:
        values.append("vitamin_d_25oh")
    return _Coded(np.where(rows, values.index("vitamin_d_25oh"), analyte.codes), values)


def _specimen_text(specimen: pd.Series) -> np.ndarray:
    return specimen.fillna("").astype(str).str.strip().to_numpy()


def _in_draws_of(
    source: np.ndarray, patient: np.ndarray, when: np.ndarray, spec: np.ndarray
) -> np.ndarray:
    """The rows of the same draw as a row of `source` (a mask; the source rows too): the
    same patient, and the same collection time or the same specimen id."""
    hit = np.zeros(len(patient), dtype=bool)
    for key, usable in ((when, ~np.isnat(when)), (spec, spec != "")):
        src = np.flatnonzero(source & usable)
        if len(src):
            wanted = pd.MultiIndex.from_arrays([patient[src], key[src]])
            hit |= pd.MultiIndex.from_arrays([patient, key]).isin(wanted) & usable
    return hit


def _per_body_surface(analyte: str, loinc: str, code: str, name: str) -> bool:
    """An eGFR test whose code or name defines it per 1.73 m2 of body surface: every eGFR
    LOINC code of the catalog does ("Glomerular filtration rate/1.73 sq M.predicted"), or
    a name saying "1.73". Such a result printed in plain "mL/min" (Synthea's FHIR does) is
    in mL/min/1.73 m2; a plain "mL/min" from a test that does not say so may be a measured,
    unindexed clearance and stays rejected."""
    if analyte != "egfr":
        return False
    codes = analytes()["egfr"].loinc_codes
    return loinc.strip() in codes or code.strip() in codes or "1.73" in name or "1.73" in code


# ---------------------------------------------------------------- units


def _unit_of(
    analyte: str,
    unit_raw: object,
    value_unit: str = "",
    per_body_surface: bool = False,
    name_unit: str = "",
    no_unit_detail: str = "",
):
    """(factor, reported spelling, system, reason, detail), from the unit column, the unit
    printed after the number in the result and the unit printed in the test's name, if
    any. `per_body_surface`: the test is defined per 1.73 m2 (_per_body_surface), so a
    plain "mL/min" means mL/min/1.73 m2. `no_unit_detail`: the detail of a result with no
    unit anywhere, in the words of the export's format (see _detail)."""
    raw = _text(unit_raw)
    if not analyte:
        return (np.nan, raw, "", "", "")
    if name_unit and not raw:
        raw = name_unit  # "Magnesium (mg/dL)" with no unit column: the name's unit
    elif name_unit and not _same_unit(analyte, raw, name_unit):
        detail = (
            f"the test's name says '{name_unit}' but the unit column says '{raw}';"
            " correct one of them in the export"
        )
        return (np.nan, raw, "", "unit_conflict", detail)
    if value_unit and not raw:
        raw = value_unit  # the unit printed with the number is the row's unit
    elif value_unit and not _same_unit(analyte, raw, value_unit):
        # picking either could be a 10x error: the export has to say which is right
        detail = (
            f"the result is printed in '{value_unit}' but the unit column says '{raw}';"
            " correct one of them in the export"
        )
        return (np.nan, raw, "", "unit_conflict", detail)
    if not raw:
        return (np.nan, "", "", "unknown_unit", no_unit_detail or _DETAIL["missing_unit"])
    alias = units.lookup(raw)
    if per_body_surface and alias is not None and alias.pint_expr == _PLAIN_FLOW:
        indexed = units.factor(analyte, analytes()[analyte].canonical_unit)
        return (indexed, alias.raw, alias.system, "", "")
    try:
        f = units.factor(analyte, raw)
    except UnitError as exc:
        reason = "unknown_unit" if units.lookup(raw) is None else "unit_not_valid_for_analyte"
        # the problem and its fix, as one sentence
        fix = f"; {exc.fix.rstrip('.')}" if exc.fix else ""
        return (np.nan, raw, "", reason, exc.problem.rstrip(".") + fix)
    alias = units.lookup(raw)
    assert alias is not None
    return (f, alias.raw, alias.system, "", "")


_PLAIN_FLOW = "milliliter / minute"  # unit_aliases.csv: "mL/min", not per body surface


def _same_unit(analyte: str, a: str, b: str) -> bool:
    """Two unit spellings mean the same number for the analyte: the same spelling up to
    case and spaces, the same unit ("mg%", "mg/dL"), or an equal conversion factor
    (mEq/L and mmol/L of potassium)."""
    if units.clean_spelling(a).casefold() == units.clean_spelling(b).casefold():
        return True
    ua, ub = units.lookup(a), units.lookup(b)
    if ua is None or ub is None:
        return False
    if ua.pint_expr == ub.pint_expr:
        return True
    try:
        return math.isclose(units.factor(analyte, a), units.factor(analyte, b), rel_tol=1e-9)
    except UnitError:
        return False


@cache
def _loinc_properties() -> dict[str, str]:
    import csv

    with reference_file("loinc_properties.csv").open(encoding="utf-8", newline="") as fh:
        return {row["loinc"]: row["property"] for row in csv.DictReader(fh)}


def _unit_kind(spelling: str) -> str:
    alias = units.lookup(spelling)
    if alias is None:
        return ""
    expr = alias.pint_expr
    if "mole" in expr or "equivalent" in expr:
        return "substance"
    if "gram" in expr:
        return "mass"
    return ""


# ---------------------------------------------------------------- dates

_ISO = re.compile(
    r"^\d{4}-\d{1,2}-\d{1,2}(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?$"
)
# the clock may be written without its colon, as Epic prints it ("03/22/2024 0815")
_SLASH = re.compile(
    r"^(\d{1,2})/(\d{1,2})/(\d{2}|\d{4})"
    r"(?:[ T](\d{1,2}:\d{2}(?::\d{2})?|[0-2]\d[0-5]\d)(\s?[AaPp][Mm])?)?$"
)
_DOT = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{2}|\d{4})(?:[ T](\d{1,2}:\d{2}(?::\d{2})?))?$")
# Shapes whose order is never in doubt: the year first ("2024/03/01 10:00"), or the month
# by its English or Spanish name ("01-Mar-2024 08:00", "1 March 2024", "Mar 1, 2024 12:00
# PM", "15-ene-2024").
_CLOCK = r"(?:[ T,]+(\d{1,2}:\d{2}(?::\d{2})?)(\s?[AaPp][Mm])?)?$"
# the year first with "/" or "." ("2024/03/01", "2024.03.01"), or an ISO date with a
# 12-hour clock that ISO does not read ("2024-03-01 8:15 AM")
_YMD_SLASH = re.compile(r"^(\d{4})([/.-])(\d{1,2})\2(\d{1,2})" + _CLOCK)
# HL7-style compact stamps: "20240301", "202403010815", "20240301081500"
_COMPACT = r"(?:19|20)\d{6}(?:\d{4}(?:\d{2})?)?"
# day and month with dashes ("13-03-2024"), read like slashes (same order for the file)
_DASHED = re.compile(r"^(\d{1,2})-(\d{1,2})-(\d{2}|\d{4})(?=$|[ T])")
_DAY_MONTH_NAME = re.compile(r"^(\d{1,2})\.?[ -]([^\W\d_]{3,10})\.?[ -](\d{2}|\d{4})" + _CLOCK)
_MONTH_NAME_DAY = re.compile(r"^([^\W\d_]{3,10})\.? (\d{1,2}),? (\d{2}|\d{4})" + _CLOCK)
_MONTHS = (  # English, Spanish, German, French; accents dropped
    ("january", "enero", "januar", "janvier"), ("february", "febrero", "februar", "fevrier"),
    ("march", "marzo", "marz", "mars"), ("april", "abril", "avril"),
    ("may", "mayo", "mai"), ("june", "junio", "juni", "juin"),
    ("july", "julio", "juli", "juillet"), ("august", "agosto", "aout"),
    ("september", "septiembre", "setiembre", "septembre"),
    ("october", "octubre", "oktober", "octobre"), ("november", "noviembre", "novembre"),
    ("december", "diciembre", "dezember", "decembre"),
)  # fmt: skip


def _month_number(name: str) -> int:
    """1-12 for a month name (English, Spanish, German, French) or its abbreviation of 3
    letters or more ("Mar", "Sept", "MARCH", "ene", "Okt", "févr", "juil"); 0 for anything
    else, and for an abbreviation of two months ("jui": juin or juillet)."""
    low = fold_accents(name).lower()
    if len(low) < 3:
        return 0
    found = {i for i, names in enumerate(_MONTHS, 1) if any(m.startswith(low) for m in names)}
    return found.pop() if len(found) == 1 else 0


def _slash_order(values: list[str], file_label: str) -> str:
    """'mdy' or 'dmy' for a file's slash (or dashed) dates, decided from the whole file,
    never per row."""
    first_gt12 = second_gt12 = False
    four_digit_years = False
    for v in map(_as_slashed, values):
        m = _SLASH.match(v)
        if m and len(m.group(3)) == 4:  # a two-digit year is rejected whatever the order
            four_digit_years = True
            first_gt12 |= int(m.group(1)) > 12
            second_gt12 |= int(m.group(2)) > 12
    if not four_digit_years:
        return "mdy"  # only two-digit years: each is rejected, no order needs deciding
    if first_gt12 and second_gt12:
        raise DateFormatError(
            "the file mixes day-first and month-first dates.",
            file=file_label,
            fix=f"pass --date-format (for example --date-format '{_format_like(values, 'mdy')}').",
        )
    if second_gt12:
        return "mdy"
    if first_gt12:
        return "dmy"
    raise DateFormatError(
        "every date written with slashes or dashes could be read as month/day or as day/month.",
        file=file_label,
        fix=(
            f"pass --date-format '{_format_like(values, 'mdy')}' (US) or "
            f"'{_format_like(values, 'dmy')}' (European)."
        ),
    )


def _format_like(values: list[str], order: str) -> str:
    """A --date-format that reads the file's first slash date as it is written (two- or
    four-digit year, seconds or not, 12-hour clock with AM/PM or not, slashes or dashes),
    in `order`."""
    first = next((v for v in values if _SLASH.match(_as_slashed(v))), "")
    m = _SLASH.match(_as_slashed(first))
    sep = "-" if _DASHED.match(first) else "/"
    year = "%y" if m and len(m.group(3)) == 2 else "%Y"
    day_month = f"%m{sep}%d{sep}" if order == "mdy" else f"%d{sep}%m{sep}"
    if not m or not m.group(4):
        return day_month + year if m else f"{day_month}{year} %H:%M"
    seconds = ":%S" if m.group(4).count(":") == 2 else ""
    if m.group(5):  # "8:30 AM" / "8:30PM"
        space = " " if m.group(5).startswith(" ") else ""
        return f"{day_month}{year} %I:%M{seconds}{space}%p"
    return f"{day_month}{year} %H:%M{seconds}"


def parse_dates(
    distinct: list[str], file_label: str, forced: str | None
) -> tuple[list[pd.Timestamp | None], list[str]]:
    """Timestamps (naive, UTC when the text had an offset) and a reject reason per value."""
    stamps, reasons = _parse_dates(pd.Series(distinct, dtype=object), file_label, forced)
    return [None if pd.isna(t) else pd.Timestamp(t) for t in stamps], [
        _REASON.get(r, r) for r in reasons
    ]


def slash_order(values: list[str], file_label: str) -> str | None:
    """The file's slash-date order from some of its date spellings; None if it has none.

    A file read in batches decides this once (from its first batch, or from the whole file
    where the first leaves it open), so that every batch reads "3/5/2024" the same way.
    """
    slashed = [v.strip() for v in values if _SLASH.match(_as_slashed(v.strip()))]
    return _slash_order(slashed, file_label) if slashed else None


def _as_slashed(value: str) -> str:
    """One date as _dashes_as_slashes reads it."""
    return _DASHED.sub(r"\1/\2/\3", value) if "-" in value else value


def _dashes_as_slashes(values: pd.Series) -> pd.Series:
    """'13-03-2024 08:00' as '13/03/2024 08:00': dashed day-month dates are read as slashed
    ones, with the file's one order. ISO dates (the year first) do not match."""
    if not values.str.contains("-", regex=False).any():
        return values
    return values.str.replace(_DASHED, r"\1/\2/\3", regex=True)


def _parse_dates(
    values: pd.Series, file_label: str, forced: str | None, order: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`parse_dates` as arrays (datetime64[ns], reasons): one vectorized parse per date shape.

    The shapes are exclusive (ISO starts with a 4-digit year, the others with 1-2 digits and
    "/" or "."), so only what is not ISO is tried against the others.
    """
    stamps = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    reasons = pd.Series("", index=values.index, dtype=object)
    reasons[values == ""] = "missing_date"
    far = pd.Series(False, index=values.index)  # a real date that datetime64[ns] cannot hold
    if forced:
        stamps[:], far[:] = _ns(pd.to_datetime(values, format=forced, errors="coerce"))
        # a date the format does not fit may be ISO, whose order is never in doubt: the
        # real date cells of a spreadsheet whose other dates are text come as ISO
        iso = stamps.isna() & (values != "") & _match_iso(values)
        if iso.any():
            parsed = pd.to_datetime(values[iso], format="ISO8601", utc=True, errors="coerce")
            stamps[iso], far[iso] = _ns(parsed)
    else:
        iso = _match_iso(values)
        if iso.any():
            parsed = pd.to_datetime(values[iso], format="ISO8601", utc=True, errors="coerce")
            stamps[iso], far[iso] = _ns(parsed)
        raw = values
        rest = _dashes_as_slashes(values[~iso])
        values = values.where(iso, rest)  # what the shapes below read
        slash = rest.str.match(_SLASH).reindex(values.index, fill_value=False).astype(bool)
        if slash.any():
            order = order or _slash_order(list(raw[slash]), file_label)
            stamps[slash], two_digit, far[slash] = _parse_numeric_dates(
                values[slash], _SLASH, order
            )
            reasons[two_digit[two_digit].index] = "ambiguous_two_digit_year"
        dot = rest.str.match(_DOT).reindex(values.index, fill_value=False).astype(bool)
        if dot.any():
            stamps[dot], two_digit, far[dot] = _parse_numeric_dates(values[dot], _DOT, "dmy")
            reasons[two_digit[two_digit].index] = "ambiguous_two_digit_year"
        # the shapes that need no order, tried only on what no shape above has read
        left = values[~iso & ~slash & ~dot & (values != "")]
        compact = left.str.fullmatch(_COMPACT).astype(bool)
        if compact.any():
            hit = compact.reindex(values.index, fill_value=False).astype(bool)
            full = values[hit].str.ljust(14, "0")
            stamps[hit], far[hit] = _ns(
                pd.to_datetime(full, format="%Y%m%d%H%M%S", errors="coerce")
            )
            left = left[~compact]
        for pattern, order in (
            (_YMD_SLASH, "ymd"),
            (_DAY_MONTH_NAME, "dmy"),
            (_MONTH_NAME_DAY, "mdy"),
        ):
            if left.empty:
                break
            matched = left.str.match(pattern).astype(bool)
            hit = matched.reindex(values.index, fill_value=False).astype(bool)
            left = left[~matched]
            if hit.any():
                stamps[hit], two_digit, far[hit] = _parse_numeric_dates(values[hit], pattern, order)
                reasons[two_digit[two_digit].index] = "ambiguous_two_digit_year"
    reasons[far & (reasons == "")] = "date_out_of_range"
    bad = stamps.isna() & (reasons == "")
    # with a format given, "pass --date-format" would be no fix: the time does not fit it
    reasons[bad] = "date_not_in_format" if forced else "unparseable_date"
    if forced and "%Y" in forced and bad.any():
        # "3/6/24" against "%m/%d/%Y": a two-digit year, which labinterp never guesses
        short = pd.to_datetime(values[bad], format=forced.replace("%Y", "%y"), errors="coerce")
        reasons[short[short.notna()].index] = "two_digit_year_not_in_format"
    # a plain number: a spreadsheet's date serial (45352.5) in a cell not formatted as a date
    serial = bad & values.str.fullmatch(r"\d{5}(?:\.\d+)?").fillna(False).astype(bool)
    reasons[serial] = "date_serial"
    return stamps.to_numpy(dtype="datetime64[ns]"), reasons.to_numpy(dtype=object)


# Plain ASCII "2024-03-01 08:30[:00]" (nearly every date in an export) always matches _ISO;
# pyarrow checks that shape for all values at once, Python's regex sees only the rest.
_PLAIN_ISO = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[ T][0-9]{2}:[0-9]{2}(?::[0-9]{2})?)?$"


def _match_iso(values: pd.Series) -> pd.Series:
    """values.str.match(_ISO), without running Python's regex on the plain shape."""
    plain = pc.match_substring_regex(pa.array(values, type=pa.large_string()), _PLAIN_ISO)
    out = plain.to_numpy(zero_copy_only=False).copy()
    rest = np.flatnonzero(~out)
    out[rest] = [_ISO.match(v) is not None for v in values.iloc[rest]]
    return pd.Series(out, index=values.index)


def _parse_numeric_dates(
    values: pd.Series, pattern: re.Pattern[str], order: str
) -> tuple[np.ndarray, pd.Series, np.ndarray]:
    """(datetime64[ns], two-digit year?, out of the datetime64[ns] range?) per value."""
    parts = values.str.extract(pattern)
    if order == "ymd":  # the year first: "2024/03/01" (group 1 is the separator)
        parts = parts[[2, 3, 0, *parts.columns[4:]]].set_axis(
            [0, 1, 2, *parts.columns[3:-1]], axis=1
        )
        order = "mdy"
    # only the shapes with a month name need more than int()
    as_number = _as_int_or_month if pattern in (_DAY_MONTH_NAME, _MONTH_NAME_DAY) else _as_int
    first, second, year = as_number(parts[0]), as_number(parts[1]), parts[2]
    month, day = (first, second) if order == "mdy" else (second, first)
    clock = (
        parts[3].fillna("00:00").str.replace(r"^(\d\d)(\d\d)$", r"\1:\2", regex=True)
        if 3 in parts.columns
        else "00:00"
    )
    two_digit = year.str.len() == 2
    text = (
        year
        + "-"
        + month.astype(str).str.zfill(2)
        + "-"
        + day.astype(str).str.zfill(2)
        + " "
        + clock
    )
    parsed = pd.to_datetime(text.where(~two_digit), format="mixed", errors="coerce")
    if 4 in parts.columns:
        pm = parts[4].fillna("").str.strip().str.upper()
        hours = parsed.dt.hour
        shift = np.where((pm == "PM") & (hours < 12), 12, 0) - np.where(
            (pm == "AM") & (hours == 12), 12, 0
        )
        parsed = parsed + pd.to_timedelta(shift, unit="h")
    stamps, far = _ns(parsed)
    return stamps, two_digit, far


def _as_int(part: pd.Series) -> pd.Series:
    return part.astype(int)


def _as_int_or_month(part: pd.Series) -> pd.Series:
    """Day or month numbers of a date's parts; a month name as its number (0 if unknown,
    which makes the date impossible: unparseable). Numbers are converted at once; only the
    names (a handful of distinct ones) are looked up one by one."""
    numbers = pd.to_numeric(part, errors="coerce")
    named = numbers.isna()
    if named.any():
        numbers[named] = part[named].map(_month_number)
    return numbers.astype(int)


def _ns(parsed: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Parsed times as naive datetime64[ns] (UTC where they had a zone), and per value
    whether it was a real time outside the years datetime64[ns] can hold (NaT there).

    pandas parses to the unit the text needs (microseconds, seconds), which reaches years
    1 to 9999; `.to_numpy(dtype="datetime64[ns]")` and numpy's unit casts then multiply
    without an overflow check, so year 1 silently became 1754. Checked here instead.
    """
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_convert(None)
    return _to_ns(parsed.to_numpy())


# nanoseconds per tick of the units pandas and pyarrow parse times to
_NS_PER_TICK = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


def _to_ns(stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_ns` of a numpy datetime64 array in seconds, milli-, micro- or nanoseconds."""
    unit, count = np.datetime_data(stamps.dtype)
    per = _NS_PER_TICK[unit] * count
    if per == 1:
        return stamps, np.zeros(len(stamps), dtype=bool)
    ticks = stamps.view(np.int64)
    nat = np.isnat(stamps)
    limit = np.iinfo(np.int64).max // per  # ticks beyond this overflow int64 nanoseconds
    far = ~nat & ((ticks > limit) | (ticks < -limit))
    ns = np.clip(ticks, -limit, limit) * per  # clipped: no overflow, even where discarded
    ns[nat | far] = np.iinfo(np.int64).min  # NaT
    return ns.view("datetime64[ns]"), far


# ---------------------------------------------------------------- reference ranges

_RANGE_BETWEEN = re.compile(
    # "to", and Spanish "a", German "bis", French "à" between the limits; ".." or "..."
    # (the dots only after a digit: "0.70..." must not read as the number "0.70.")
    rf"^\s*({_NUMBER})\s*(?:-|–|—|to|(?<=[\d\s])\.{{2,3}}|…|\s(?:a|à|bis)(?=\s))\s*({_NUMBER})\s*"
    r"(?P<tail>[^\d\s].*)?$",
    re.I,
)
# A one-sided range in words: "less than 10", "greater than or equal to 60", "hasta 5".
_RANGE_WORDED = re.compile(
    rf"^\s*(less than or equal to|greater than or equal to|less than|greater than|below|"
    rf"above|under|over|up to|menor de|menor que|inferior a|mayor de|mayor que|superior a|"
    rf"hasta)(?=\s*{_NUMBER})",
    re.I,
)
_RANGE_BETWEEN_ANYWHERE = re.compile(rf"({_NUMBER})\s*(?:-|–|—|to)\s*({_NUMBER})", re.I)
_RANGE_ONE_SIDED = re.compile(rf"^\s*(<=|>=|=<|=>|≤|≥|<|>)\s*({_NUMBER})\s*(?P<tail>[^\d\s].*)?$")


# A range wrapped in brackets: "[1.6-2.6]", "(3.5 to 5.1)".
_RANGE_WRAPPED = re.compile(r"^\s*[\[(]\s*(.*?)\s*[\])]\s*$")
# A label before the range: "Adult: 1.6-2.6", "Normal range: 3.5-5.1", "Ref. 1.6-2.6".
_RANGE_LABEL = re.compile(r"^\s*[A-Za-z][A-Za-z .'/-]{0,30}?(?::|\.)\s*(?=[\d<>≤≥=.-])")
# Words naming a range before it without a colon: "range 1.6-2.6", "Ref. range 1.6-2.6".
_RANGE_WORDS = re.compile(
    r"^\s*(?:(?:ref(?:erence)?\.?|normal)\s*)?(?:range|interval)\s+(?=[\d<>≤≥=.-])", re.I
)
# Words that say a text holds ranges for different groups of patients.
_RANGE_GROUPS = re.compile(
    r"\b(males?|females?|men|women|man|woman|m|f|h|w|boys?|girls?|child(?:ren)?|adults?|"
    r"infants?|newborns?|hombres?|mujer(?:es)?|varon(?:es)?|ninos?|manner|mann|frauen?|"
    r"hommes?|femmes?|enfants?|kinder)\b",
    re.I,
)
# Labels of a group of one sex in a printed range, once accents are folded: English,
# Spanish, German and French words. Each names one sex whatever the language.
_RANGE_SEX_WORDS = {
    **{w: "male" for w in ("male", "males", "man", "men", "masculino", "hombre", "hombres")},
    **{w: "male" for w in ("varon", "varones", "mann", "manner", "mannlich", "masculin")},
    **{w: "male" for w in ("homme", "hommes")},
    **{w: "female" for w in ("female", "females", "woman", "women", "femenino", "mujer")},
    **{w: "female" for w in ("mujeres", "frau", "frauen", "weiblich", "feminin", "femme")},
    **{w: "female" for w in ("femmes",)},
}
# One-letter labels name a sex only by the pair they come in: "M" is male beside "F"
# (English) or "W" (German, weiblich) but female beside "H" (Spanish hombre/mujer), and "H"
# is male beside "F" too (French homme/femme). A lone letter of a pair not listed is no
# label: the group is then not picked from.
_RANGE_SEX_LETTERS = {
    frozenset("mf"): {"m": "male", "f": "female"},
    frozenset("mw"): {"m": "male", "w": "female"},
    frozenset("hm"): {"h": "male", "m": "female"},
    frozenset("hf"): {"h": "male", "f": "female"},
}
# What may stand around the two ranges of a text of ranges by sex besides the labels and
# the ranges' units: separators, and "adult" (the same adults, split by sex).
_RANGE_SEX_FILLER = {"adult", "adults", "adulto", "adultos", "erwachsene", "adulte", "adultes"}
# Decimal commas in a range of a file that otherwise uses points: "8,5-10,5" (a comma
# followed by one or two digits is never a thousands separator).
_RANGE_DECIMAL_COMMAS = re.compile(r"^\s*(\d+),(\d{1,2})\s*([-–—]|to)\s*(\d+),(\d{1,2})\s*$", re.I)


def parse_range(
    text: str, low_text: str, high_text: str, decimal: str, sex: str = ""
) -> tuple[float, float, str]:
    """(low, high, unit printed after them: "" for none); NaN where the range gives no limit.

    Besides plain ranges ("3.5-5.1", "<10", ">= 60", with a unit or a note after them) it
    reads ranges in brackets, after a label ("Adult: 1.6-2.6"), and with decimal commas
    ("8,5-10,5"). A text giving one range per sex ("M: 3.5-5.0; F: 3.4-4.8") gives the
    range of the patient's `sex` ("female" or "male"); for an unknown sex, or ranges for
    other groups (children, ages), it gives none: picking one would be a guess about the
    patient (and sex-specific ranges never default to male, CLINICAL.md sec. 2).
    """
    low = high = np.nan
    if low_text or high_text:
        _, lo = parse_value(low_text, decimal) if low_text else ("", None)
        _, hi = parse_value(high_text, decimal) if high_text else ("", None)
        low = lo if lo is not None else np.nan
        high = hi if hi is not None else np.nan
        if low == 0 and high == 0:  # "0/0" placeholders seen in re-saved exports
            return (np.nan, np.nan, "")
        return (low, high, "")
    s = text.strip()
    if not s:
        return (low, high, "")
    s = _ungrouped(s, decimal)  # "1,000-3,500" in a file of decimal points
    if decimal == ",":
        s = re.sub(r"(\d),(\d)", r"\1.\2", s)
    elif m := _RANGE_DECIMAL_COMMAS.match(s):
        s = f"{m.group(1)}.{m.group(2)}-{m.group(4)}.{m.group(5)}"
    if len(_RANGE_BETWEEN_ANYWHERE.findall(s)) > 1 and _RANGE_GROUPS.search(fold_accents(s)):
        return _range_of_sex(s, sex)  # ranges for several groups of patients
    if m := _RANGE_WRAPPED.match(s):
        s = m.group(1)
    s = _RANGE_LABEL.sub("", s, count=1)
    s = _RANGE_WORDS.sub("", s, count=1)  # "Ref. range 1.6-2.6": the label's last words
    m = _RANGE_BETWEEN.match(s)
    if m:
        return (float(m.group(1)), float(m.group(2)), _range_unit(m["tail"]))
    if m := _RANGE_WORDED.match(s):  # "less than 10", "above 60 mL/min"
        s = f"{_WORD_CMP[m.group(1).lower()]}{s[m.end(1) :]}"
    m = _RANGE_ONE_SIDED.match(s)
    if m:
        cmp_ = _COMPARATORS[m.group(1)]
        bound = float(m.group(2))
        unit = _range_unit(m["tail"])
        return (np.nan, bound, unit) if cmp_.startswith("<") else (bound, np.nan, unit)
    return (low, high, "")


def _range_of_sex(text: str, sex: str) -> tuple[float, float, str]:
    """The range for `sex` of a text printing two ranges, one per sex, each labelled before
    it ("M: 3.6-5.2; F: 3.3-5.0 mmol/L", "Hombres 3,5-5,0 / Mujeres 3,4-4,8") or each after
    it ("3.5-5.0 (men) 3.4-4.8 (women)"); (NaN, NaN, "") for an unknown sex or any other
    text: a word around the ranges that is neither a sex label, "adult" nor a unit (a
    child's or a pregnancy range, a note) means the two ranges may not be the patient's
    only choice."""
    none = (np.nan, np.nan, "")
    found = list(_RANGE_BETWEEN_ANYWHERE.finditer(text))
    if not sex or len(found) != 2:
        return none
    gaps = [text[: found[0].start()], text[found[0].end() : found[1].start()]]
    gaps.append(text[found[1].end() :])
    # a "/" between words separates groups ("Hombres 3,5-5,0 / Mujeres ..."); inside one
    # it belongs to a unit ("mmol/L")
    words = [re.split(r"[\s;,|:()\[\]]+", g) for g in gaps]
    labels: list[list[str]] = [[], [], []]
    units_after: list[list[str]] = [[], [], []]
    for i, gap in enumerate(words):
        for word in filter(None, (w.strip("./") for w in gap)):
            folded = fold_accents(word).lower()
            if folded in _RANGE_SEX_WORDS or (len(folded) == 1 and folded in "mfhw"):
                labels[i].append(folded)
            elif units.lookup(word) is not None:
                units_after[i].append(word)
            elif folded not in _RANGE_SEX_FILLER:
                return none
    if [len(x) for x in labels] == [1, 1, 0]:  # each label before its range
        named = [labels[0][0], labels[1][0]]
    elif [len(x) for x in labels] == [0, 1, 1]:  # each label after its range
        named = [labels[1][0], labels[2][0]]
    else:
        return none
    letters = {w for w in named if len(w) == 1}
    by_letter = _RANGE_SEX_LETTERS.get(frozenset(letters), {}) if len(letters) == 2 else {}
    if len(letters) == 1:  # a letter beside a word: only one that names a sex on its own
        by_letter = {"f": "female", "w": "female", "h": "male"}
    sexes = [_RANGE_SEX_WORDS.get(w) or by_letter.get(w) for w in named]
    if sorted(map(str, sexes)) != ["female", "male"]:
        return none
    k = sexes.index(sex)
    unit_words = units_after[k + 1]  # the range's unit is printed after its numbers
    if len(unit_words) > 1:
        return none
    unit = units.clean_spelling(unit_words[0]) if unit_words else ""
    return (float(found[k].group(1)), float(found[k].group(2)), unit)


def _range_unit(tail: str | None) -> str:
    """The unit a range prints after its numbers ("mEq/L" of "1.3-2.1 mEq/L", "mmol/L" of
    "3.5-5.1 mmol/L (adult)"), "" for none. A word in brackets is a note ("(adult)"),
    unless it is a unit labinterp knows ("(mmol/L)"); any other unit-shaped word is the
    range's unit, known or not."""
    words = (tail or "").split()
    if not words:
        return ""
    first = words[0]
    if first[0] in "([":
        inner = first.strip("()[]")
        return units.clean_spelling(inner) if units.lookup(inner) else ""
    return units.clean_spelling(first) if _unit_shaped(first) else ""


def _range_in_unit(
    analyte: str, unit: str, per_body_surface: bool, printed: tuple[float, float, str]
) -> tuple[float, float]:
    """The printed (low, high) in the row's `unit`: converted from the unit the range
    prints, as the values are; (NaN, NaN) (an unreadable range) when that unit is unknown
    or cannot express the analyte. `per_body_surface`: as in `_unit_of`, a plain "mL/min"
    of an eGFR test is per 1.73 m2."""
    low, high, in_unit = printed
    alias = units.lookup(in_unit) if in_unit else None
    if per_body_surface and alias is not None and alias.pint_expr == _PLAIN_FLOW:
        in_unit = analytes()[analyte].canonical_unit
    if not in_unit or not analyte or not unit or _same_unit(analyte, in_unit, unit):
        return (low, high)
    try:
        row_factor = units.factor(analyte, unit)
    except UnitError:  # the row is rejected for its own unit
        return (low, high)
    try:
        scale = units.factor(analyte, in_unit) / row_factor
    except UnitError:
        return (np.nan, np.nan)
    return (_round_sig(low * scale), _round_sig(high * scale))


def _status_of(raw: object) -> ResultStatus:
    """The meaning of a row's result status; a word reference_ranges/result_statuses.toml
    does not list is kept as UNRECOGNISED_STATUS, to be counted, not taken as none."""
    text = _text(raw)
    status = result_status(text)
    if text and status == ResultStatus():
        return ResultStatus(usable=UNRECOGNISED_STATUS)
    return status


def _warn_unrecognised(status: _Coded, source_row: pd.Series, file_label: str):
    """A warning naming the rows whose status word is not understood. The words are not
    quoted: a status column can hold free text (a patient id, a value), and patient data
    never goes into the log."""
    rows = np.flatnonzero(status.rows_where(lambda s: s.usable == UNRECOGNISED_STATUS))
    listed = _take(source_row, rows[:5]).astype(str).tolist()
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    log.warning(
        "%s: the result status on row(s) %s%s is not one labinterp knows; the results are"
        " read, with result_status 'unrecognised'. Add the word to"
        " reference_ranges/result_statuses.toml, or correct the status in the export.",
        file_label,
        ", ".join(listed),
        more,
    )


def _warn_ids_alike_but_for_zeros(pid: _Coded, source_row: pd.Series, file_label: str) -> None:
    """A warning when numeric patient ids differ only by leading zeros ("00789", "789"):
    a spreadsheet that saved the column as numbers drops them, so one patient may be two
    here. They stay two (a guess could merge two patients); the warning names rows, never
    the ids, which are patient data."""
    ids = pid.text if pid.text is not None else pa.array(pid.values, type=pa.string())
    numeric = pc.fill_null(pc.match_substring_regex(ids, r"^\d+$"), False).to_numpy(
        zero_copy_only=False
    )
    if not numeric.any():
        return
    # "0" and "000" are alike too: each loses every zero
    stripped = pc.utf8_ltrim(ids.filter(pa.array(numeric)), "0").to_pandas()
    stripped.index = np.flatnonzero(numeric)  # positions among the distinct ids
    alike = stripped[stripped.duplicated(keep=False)]
    if alike.empty:
        return
    # a pair of rows to look at: the first row of each of two ids that read alike
    first_row = pd.Series(pid.codes).drop_duplicates()
    first_row = pd.Series(first_row.index.to_numpy(), index=first_row.to_numpy())
    pair = alike[alike == alike.iloc[0]].index[:2]
    rows = _take(source_row, first_row[pair].to_numpy()).astype(str).tolist()
    log.warning(
        "%s: %d patient ids differ from another only by leading zeros (for example on rows"
        " %s and %s); they are read as different patients. If a spreadsheet dropped the"
        " zeros, export the id column as text so one patient keeps one id.",
        file_label,
        len(alike),
        rows[0],
        rows[1],
    )


def _status_verdict(status: ResultStatus) -> tuple[str, str]:
    """("result_status", detail) for a status that says the row holds no result."""
    if not status.no_result:
        return ("", "")
    return (
        "result_status",
        f"the export's result status says {status.no_result}; nothing to fix, unless the"
        " status is wrong in the export",
    )


def _specimen_verdict(specimen_type: object) -> tuple[str, str]:
    """("non_blood_specimen", detail) for a specimen type that is not blood, else ("", "")."""
    text = _text(specimen_type).strip()
    if not text or not not_blood_specimen(text):
        return ("", "")
    return (
        "non_blood_specimen",
        f"the specimen is '{text[:40]}', not blood; labinterp reads serum, plasma and "
        "whole-blood results: nothing to fix, unless the specimen type is wrong in the export",
    )


# ---------------------------------------------------------------- quality flags

# Row flags for a medication column that names a medicine of a group of
# reference_ranges/medications.toml: the vitamin D pattern reads the first, the Mg
# patterns the second.
MEDICINE_FLAGS = {"vitamin_d": "vitamin_d_supplement", "mg_lowering": "mg_lowering_medication"}

# Mentions of what a comment may say about the sample, matched on the text with its accents
# dropped, in English, Spanish, German and French ("muestra hemolizada", "hämolytisch",
# "hémolysé", "coagulada", "lipémica", "ictérica").
_QUALITY_MENTIONS = (
    ("hemolyzed", re.compile(r"ha?emol[iy][sz]|hamoly", re.I)),
    ("contamination_comment", re.compile(r"contamina[td]|contaminacion|edta", re.I)),
    ("clotted", re.compile(r"\bclot|\bcoagulad|\bcoagulo", re.I)),
    ("lipemic", re.compile(r"lip(a)?emi", re.I)),
    ("icteric", re.compile(r"icter", re.I)),
)
# A mention is denied by a negation at most two words before it in its clause ("No
# hemolysis", "non-hemolyzed", "No EDTA contamination detected", "no evidence of
# hemolysis", "sin hemólisis", "keine Hämolyse")...
_DENIED_BEFORE = re.compile(
    r"\b(?:no|not|non|without|free of|negative for|absence of|sin|kein|keine|nicht|ohne|sans)"
    r"(?:\W+\w+){0,2}\W*$",
    re.I,
)
# ... or by a negative word right after it, past the rest of its word and an "index"-like
# word ("Hemolysis: none", "Hemolysis index 0", "Hemolysis absent", "hemolysis-free",
# "EDTA contamination excluded", "Contamination not detected").
_DENIED_AFTER = re.compile(
    r"^\w*(?:[\s:=-]+(?:index|level|status|check|contamination|interference))?[\s:=()-]*"
    r"(?:none|nil|absent|negative|neg|no|free|excluded|ruled out|0(?![\d.,]*[1-9])"
    r"|not (?:detected|seen|present|found|observed)|negativo|ausente|negativ|absente|aucune)\b",
    re.I,
)
# Clauses: a negation in one never reaches a mention in another ("Specimen hemolyzed;
# recollect non-hemolyzed specimen" is hemolyzed). A full stop inside a number is none.
_CLAUSE = re.compile(r"[;,!?]|\.(?!\d)")
# LIS codes for a hemolysis index given as a word or pluses ("H.I. 3+", "HIL: H=2+"),
# judged by reference_ranges/sample_indices.toml like an index row; a number alone ("HIL
# index: H=250") is not judged, as an index row without a printed limit is not.
_HEMOLYSIS_CODE = re.compile(
    r"\b(?:H\.\s?I\.?|HIL(?:\s+index)?\s*[:=]?\s*H)\s*[:=]?\s*(?P<level>\d?\++|[a-z]+)", re.I
)


def quality_flags(*texts: object) -> str:
    """The quality flags the comment, flag and result texts of a row say: a kind is flagged
    when one of its mentions is not denied; `not_hemolyzed` when hemolysis is mentioned
    and every mention denies it."""
    joined = fold_accents(" ; ".join(t for t in map(_text, texts) if t))
    if not joined:
        return ""
    clauses = _CLAUSE.split(joined)
    flags = []
    for name, pattern in _QUALITY_MENTIONS:
        said = [
            not (
                _DENIED_BEFORE.search(c[: m.start()].rsplit(":", 1)[-1])
                or _DENIED_AFTER.match(c[m.start() :])
            )
            for c in clauses
            for m in pattern.finditer(c)
        ]
        if name == "hemolyzed" and any(
            index_text_raised(m["level"]) for m in _HEMOLYSIS_CODE.finditer(joined)
        ):
            said.append(True)
        if any(said):
            flags.append(name)
        elif said and name == "hemolyzed":
            flags.append("not_hemolyzed")  # "VERIFIED. NOT HEMOLYZED."
    return ";".join(flags)


# ---------------------------------------------------------------- demographics

_SEX = {
    "f": "female",
    "female": "female",
    "w": "female",
    "woman": "female",
    "m": "male",
    "male": "male",
    "man": "male",
    # Spanish words; not the letters "H" (hombre) and "M" (mujer), which would turn the
    # English "M" around
    "femenino": "female",
    "mujer": "female",
    "masculino": "male",
    "hombre": "male",
    "varon": "male",
    # German and French
    "weiblich": "female",
    "mannlich": "male",
    "feminin": "female",
    "femme": "female",
    "masculin": "male",
    "homme": "male",
}


def _sex(text: object) -> str:
    return _SEX.get(fold_accents(_text(text)).lower(), "")


# ---------------------------------------------------------------- the stage


_DETAIL = {
    # kept short: it is the commonest detail of all (every sodium or glucose row of an
    # export), and rejected_rows.csv repeats it on each
    "out_of_scope": (
        "test not interpreted by labinterp; nothing to fix (to have it read, see --mapping [tests])"
    ),
    "missing_test": "the row names no test (no code, name or LOINC); add the test column",
    "missing_patient_id": "the row has no patient identifier; fill it in the export",
    "scientific_patient_id": (
        "the patient identifier is a number in scientific notation (such as 1.23457E+11), as"
        " a spreadsheet shows a long number: its last digits are lost, so different patients"
        " could be merged; re-export the ids as text (format the id column as Text)"
    ),
    "missing_date": "the row has no collection time; fill it in or check the date column",
    "unparseable_date": "the collection time is not a date labinterp can read; pass --date-format",
    "date_serial": (
        "the collection time is a plain number, as a spreadsheet keeps a date in a cell not"
        " formatted as a date; format the column as dates (or save it as CSV with the dates"
        " written out) and read it again"
    ),
    "date_out_of_range": (
        "the collection time is outside the years 1677-2262 that labinterp can hold;"
        " check the date in the export"
    ),
    "ambiguous_two_digit_year": (
        "two-digit year (a spreadsheet re-save?); re-export with 4-digit years"
    ),
    # labinterp has no default unit per test: the unit has to come with the result
    "missing_unit": (
        "the result has no unit; add it in the export (a unit column, the unit after the"
        " number as in '1.2 mg/dL', or in the test's name as in 'Magnesium (mg/dL)'), or if"
        " the file has a unit column labinterp did not find, name it in a mapping file"
        ' (unit_raw = "..." under [columns]) passed with --mapping'
    ),
    "missing_value": (
        "the row has neither a result nor a result text; fill in the result in the export"
    ),
    "missing_value_commented": (
        "the result column is empty; the comment may give the result as free text, which"
        " labinterp does not read as a value (put the result in the result column)"
    ),
    "sample_quality_index": (
        "a sample-quality index (hemolysis, icterus or lipemia), not a result; nothing to fix"
    ),
    "vitamin_d_component": (
        "a 25-OH vitamin D2 or D3 result of a draw whose total 25-OH vitamin D is read;"
        " nothing to fix (reference_ranges/vitamin_d_components.toml)"
    ),
    "vitamin_d_component_no_total": (
        "a 25-OH vitamin D2 result without the draw's total or its D3: D2 alone is not the"
        " patient's vitamin D; export the total 25-OH vitamin D, or the D3 of the same draw"
        " (reference_ranges/vitamin_d_components.toml)"
    ),
    "vitamin_d_component_not_one": (
        "a 25-OH vitamin D2 or D3 result of a draw without a total whose sample does not hold"
        " exactly one D2 and one D3 (two lines of one, or parts on different specimen ids):"
        " the total 25-OH vitamin D (D2 + D3) is not summed; export the total, or correct"
        " the specimen ids (reference_ranges/vitamin_d_components.toml)"
    ),
    "vitamin_d_component_no_sum": (
        "a 25-OH vitamin D2 or D3 result of a draw without a total whose other component"
        " (or a second line of one) has no number to add: a text result, or a row rejected"
        " for its own reason (see it); the total 25-OH vitamin D (D2 + D3) is not summed;"
        " correct that row or export the total (reference_ranges/vitamin_d_components.toml)"
    ),
    "race_adjusted_egfr": (
        "the eGFR of this draw computed with a race coefficient; the same draw's eGFR "
        "without race is used (reference_ranges/egfr_race.toml); nothing to fix"
    ),
    # unit_conflict and unparseable_value carry a detail naming the value and units
}
# The same two details for the message formats, naming where the field lives in them.
_DETAIL_BY_FORMAT = {
    ("missing_patient_id", "hl7v2"): (
        "the result has no patient identifier (PID-3, else PID-2, of its message); an"
        " analyzer's message that names only the specimen cannot be read per patient: export"
        " the results from the LIS instead"
    ),
    ("missing_patient_id", "fhir"): (
        "the Observation names no patient: give it a subject (a reference to a Patient, or"
        " an identifier), or export it inside the DiagnosticReport or Bundle that does"
    ),
    ("missing_unit", "hl7v2"): (
        "the result has no unit (OBX-6 is empty); check the sending system's message, or"
        " export the results from the LIS with their units"
    ),
    ("missing_unit", "fhir"): (
        "the Observation's valueQuantity has no unit (neither unit nor code); export the"
        " Observations with their units"
    ),
    ("missing_date", "hl7v2"): (
        "the result has no collection time: neither SPM-17, OBR-7 nor OBX-14 holds one;"
        " check the sending system's message"
    ),
    ("missing_date", "fhir"): (
        "the Observation has no effectiveDateTime or effectivePeriod (nor has its"
        " DiagnosticReport); export the Observations with their collection time"
    ),
}


def _detail(reason: str, source_format: str) -> str:
    """The detail of a reject reason, in the words of the export's format where it has its
    own (a FHIR Observation's subject, not "the column")."""
    return _DETAIL_BY_FORMAT.get((reason, source_format), _DETAIL.get(reason, ""))


# Reasons found here that schema.REJECT_REASONS names otherwise; the detail tells them apart.
_REASON = {
    "date_out_of_range": "unparseable_date",
    "date_serial": "unparseable_date",
    "date_not_in_format": "unparseable_date",
    "two_digit_year_not_in_format": "ambiguous_two_digit_year",
}


def _date_detail(reason: str, opts: Options) -> str:
    """The detail of a collection time's reject reason; one that does not fit the date
    format given names it."""
    given = f"the date format given ('{opts.date_format}', by --date-format or a mapping)"
    if reason == "date_not_in_format":
        return (
            f"the collection time does not match {given}; correct the date in the export, or"
            " give the format the file's dates are printed in (or leave it out to let"
            " labinterp work it out)"
        )
    if reason == "two_digit_year_not_in_format":
        return (
            f"the collection time does not match {given}: it has a two-digit year (a"
            " spreadsheet re-save?), which labinterp does not guess the century of;"
            " re-export with 4-digit years"
        )
    return _detail(reason, opts.source_format)


def _strip(series: pd.Series) -> pd.Series:
    return series.fillna("").str.strip()


def _first_text(values: tuple[Any, ...]) -> str:
    """The first non-empty text (test name, else code, else LOINC), else ""."""
    return next((v for v in values if v), "")


def normalize(
    raw: pd.DataFrame, file_label: str, options: Options | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Turn one file's RAW table into (RESULTS, REJECTED)."""
    results, rejected, _ = _normalize(raw, file_label, options or Options(), dedupe=False)
    return results, rejected


def normalize_unique(
    raw: pd.DataFrame, file_label: str, options: Options
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """`normalize`, then `reading.deduplicate`, in one pass: (RESULTS, REJECTED, duplicates).

    Finding repeats on the codes normalize already holds, before the output is built,
    saves factorizing the finished table and copying every column to drop a few rows.
    """
    return _normalize(raw, file_label, options, dedupe=True)


def _normalize(
    raw: pd.DataFrame, file_label: str, opts: Options, dedupe: bool
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    n = len(raw)
    if n == 0:
        return (
            conform(pd.DataFrame(), RESULTS),
            conform(pd.DataFrame(), REJECTED),
            conform(pd.DataFrame(), REJECTED),
        )
    frame = raw.reset_index(drop=True)
    # specimen ids are only copied to the output (see _specimen_ids); the file name is
    # one value in nearly every table, which is checked before hashing a million rows
    col = _in_threads(
        {
            "source_file": partial(_coded_label, frame["source_file"]),
            **{
                str(name): partial(_coded, frame[name])
                for name in frame.columns
                if name not in ("source_row", "specimen_id", "source_file")
            },
        }
    )
    # The patient ids and the collection times need nothing from the test and value steps
    # below: a second thread works them out meanwhile (mostly pyarrow and pandas string
    # work, which releases the GIL). Reasons are marked afterwards, in a fixed order.
    with _Side() as side:
        patient_job = side.submit(_patient_ids, col["patient_id"])
        dates_job = (
            None if opts.undated else side.submit(_dates, col["collected_at"], file_label, opts)
        )

        # analyte: (id, reason) per distinct test
        tests = dict(opts.tests)
        test_fields = _joint(col["analyte_hint"], col["loinc"], col["test_code"], col["test_name"])
        found = test_fields.map(lambda v: _analyte_of(v[0], v[1], v[2], v[3], tests))
        test_label = _test_label(test_fields)
        test_why = found.map(lambda v: (v[1], _DETAIL.get(v[1], "")))  # missing_test, out_of_scope
        analyte = found.field(0).compact()

        # value
        if opts.decimal:
            decimal, mixed_decimals = opts.decimal, opts.decimal_mixed
        else:
            decimal, mixed_decimals = _detect_decimal(frame["value_raw"])
        parsed = _joint(col["value_raw"], col["valuenum_raw"], col["comparator_raw"]).map(
            lambda v: _value_of(v[0], v[1], v[2], decimal, mixed_decimals)
        )
        cmp_ = parsed.field(0).compact()
        number = parsed.field(1).floats()
        has_number = ~np.isnan(number)
        # units and abnormal-flag markers printed after the number: rare, so they cost
        # nothing unless a file has them
        printed = any(v[5] or v[6] for v in parsed.values)
        value_unit = parsed.field(5).compact() if printed else _Coded(np.zeros(n, np.int64), [""])
        flag = col["flag"]
        if printed:
            marker = parsed.field(6).compact()
            if any(marker.values):
                flag = _joint(col["flag"], marker).map(lambda v: _with_marker(*v))

        # Each distinct printed range is read once, here: the index check just below, the
        # analyte and unit checks, the repeat check and the range columns all use the same
        # (low, high).
        printed_ranges = _joint(col["range_raw"], col["range_low_raw"], col["range_high_raw"])
        # with the patient's sex: a range printed per sex gives the patient's one
        sex = col["sex"].map(_sex).compact()
        printed_limits = _joint(
            col["range_raw"], col["range_low_raw"], col["range_high_raw"], sex
        ).map(lambda v: parse_range(_text(v[0]), _text(v[1]), _text(v[2]), decimal, v[3]))
        # a sample-quality index ("Hemolysis Index 120 (0-50)") is no result to interpret,
        # but a raised one marks the other results of its sample
        index_kind = found.field(3).compact()
        index = (
            _joint(index_kind, parsed, printed_limits, flag, col["value_raw"]).map(
                lambda v: _index_outcome(*v)
            )
            if any(index_kind.values)  # nearly every export has none
            else None
        )

        # unit (only numeric results need one): (factor, spelling, system, reason, detail)
        per_body_surface = found.field(2).compact()
        name_unit = found.field(4).compact()  # "Magnesium (mg/dL)": rare, "" nearly always
        no_unit_detail = _detail("missing_unit", opts.source_format)
        unit = _joint(analyte, col["unit_raw"], value_unit, per_body_surface, name_unit).map(
            lambda v: _unit_of(v[0], v[1], v[2], v[3], v[4], no_unit_detail)
        )
        factor = unit.field(0).floats()
        unit_rep = unit.field(1).compact()
        # the printed range in the row's unit: "1.3-2.1 mEq/L" beside a Mg in mmol/L
        range_limits = _joint(analyte, unit_rep, per_body_surface, printed_limits).map(
            lambda v: _range_in_unit(*v)
        )

        # each row's first reason, in this order
        verdict = _Verdicts(n)
        pid = side.result(patient_job)
        _warn_ids_alike_but_for_zeros(pid, frame["source_row"], file_label)
        verdict.mark(
            pid.rows_equal(""),
            "missing_patient_id",
            _detail("missing_patient_id", opts.source_format),
        )
        # "1.23457E+11": two patients' ids may now read the same
        verdict.mark(
            pid.rows_where(lambda v: bool(v and _SCIENTIFIC_ID.match(v))),
            "damaged_patient_id",
            _DETAIL["scientific_patient_id"],
        )
        # a cancelled, deleted, withdrawn or pending result (most exports print no status)
        status = col["result_status"].map(_status_of)
        if any(s.usable == UNRECOGNISED_STATUS for s in status.values):
            _warn_unrecognised(status, frame["source_row"], file_label)
        if any(s.no_result for s in status.values):
            verdict.mark_each(
                status.rows_where(lambda s: s.no_result != ""), status.map(_status_verdict)
            )
        if index is not None:  # what each index row said, before the generic reason
            verdict.mark_each(index.rows_where(lambda v: v[0] != ""), index.map(lambda v: v[:2]))
        verdict.mark_each(test_why.rows_where(lambda v: v[0] != ""), test_why)
        # a blood test measured on urine or another fluid is not a blood result
        specimen = col["specimen_type"].map(_specimen_verdict)
        if any(v[0] for v in specimen.values):  # most exports name no specimen type
            verdict.mark_each(specimen.rows_where(lambda v: v[0] != ""), specimen)
        # missing_value, unparseable_value; a row with no result whose comment says
        # something is told apart (exports such as MIMIC-IV print some results, an eGFR
        # estimate or a censored value, only as comment text)
        no_value = parsed.rows_where(lambda v: v[3] == "missing_value")
        if no_value.any():
            commented = no_value & col["comment"].rows_where(lambda v: _text(v).strip() != "")
            verdict.mark(commented, "missing_value", _DETAIL["missing_value_commented"])
        verdict.mark_each(parsed.rows_where(lambda v: v[3] != ""), parsed.map(lambda v: v[3:5]))
        verdict.mark_each(
            has_number & unit.rows_where(lambda v: v[3] != ""), unit.map(lambda v: v[3:])
        )
        if dates_job is None:
            when = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
            offset = None
        else:
            when, offset, date_why = side.result(dates_job)
            verdict.mark_each(date_why.rows_where(lambda v: v[0] != ""), date_why)
    index_marks = (
        None
        if index is None
        else _marks_from_indices(index.field(2).compact(), pid, when, frame["specimen_id"])
    )
    # "Calcium 1.12 mmol/L (1.15-1.32)": a result named as calcium, with no LOINC code,
    # whose printed range is an ionized calcium's is one (a total calcium of 1.12 mmol/L
    # would be a grade 4 emergency)
    ionized = _joint(analyte, unit_rep, range_limits, col["loinc"]).map(
        lambda v: _ionized_by_range(*v)
    )
    if any(ionized.values):  # rare: nothing to change in most exports
        analyte = (
            _joint(analyte, ionized).map(lambda v: "calcium_ionized" if v[1] else v[0]).compact()
        )

    # canonical value and plausibility (suspected unit errors)
    value = number * factor
    lo_p, hi_p, canon_unit = _per_analyte(analyte)
    # A censored value only proves what its comparator allows: "<0.5" is impossible only
    # when 0.5 is already at or below the plausible floor, and ">10" only above the ceiling.
    upper_censored = cmp_.rows_where(lambda c: c in ("<", "<="))
    lower_censored = cmp_.rows_where(lambda c: c in (">", ">="))
    with np.errstate(invalid="ignore"):
        too_low = np.where(upper_censored, value <= lo_p, value < lo_p)
        too_high = np.where(lower_censored, value >= hi_p, value > hi_p)
    implausible = has_number & ~np.isnan(value) & (too_low | too_high)
    if implausible.any():
        verdict.mark_each(implausible, _implausible(implausible, analyte, parsed, unit_rep))
    # a value life-threatening in its stated unit whose number is an ordinary one in
    # another unit of the analyte: the unit label is far likelier wrong than the patient
    # that ill (the canonical grade 4 cut-offs pick the rows to look at; the verdict
    # grades each in its own unit)
    grade4 = analyte.map(_grade4_limits)
    lo_4, hi_4 = grade4.field(0).floats(), grade4.field(1).floats()
    uncensored = has_number & cmp_.rows_equal("")
    with np.errstate(invalid="ignore"):
        extreme = uncensored & ((value < lo_4) | (value > hi_4))
    if extreme.any():
        verdict.mark_each(
            extreme, _per_case(extreme, analyte, parsed, unit_rep, _other_unit_verdict)
        )
    # an analyte CTCAE does not grade here (albumin) far below its adult range, whose
    # number is an ordinary one in another unit: a g/dL albumin labelled g/L
    with np.errstate(invalid="ignore"):
        far_below = uncensored & (value < analyte.map(_far_below_limit).floats())
    if far_below.any():
        verdict.mark_each(
            far_below, _per_case(far_below, analyte, parsed, unit_rep, _far_below_verdict)
        )
    # a printed range that fits another unit far better: the unit label is wrong
    range_unit = _joint(analyte, unit_rep, range_limits).map(lambda v: _range_unit_verdict(*v))
    if any(v[0] for v in range_unit.values):  # rare: nothing to mark in most exports
        verdict.mark_each(has_number & range_unit.rows_where(lambda v: v[0] != ""), range_unit)

    # eGFR printed once without and once with a race coefficient for one draw: the second
    # line is the same measurement (reference_ranges/egfr_race.toml)
    race = found.field(5).compact()
    race_note: _Coded | None = None
    if any(race.values):  # only exports printing eGFR by race have any
        adjusted, unpaired = _race_adjusted_egfr(
            race, verdict.kept, pid, when, frame["specimen_id"]
        )
        verdict.mark(adjusted, "race_adjusted_egfr", _DETAIL["race_adjusted_egfr"])
        race_note = _Coded(unpaired.astype(np.int64), ["", RACE_ADJUSTED_EGFR])

    # 25-OH vitamin D printed by component: the total of a draw is read, else its D2 and
    # D3 for the engine to sum, a D3 alone as the total
    # (reference_ranges/vitamin_d_components.toml)
    if any(v.startswith("vitamin_d") for v in race.values):
        parts, d3_alone = _vitamin_d_parts(
            analyte, race, verdict.kept, has_number, pid, when, frame["specimen_id"]
        )
        for rows, reason, detail in parts:
            verdict.mark(rows, reason, detail)
        if d3_alone.any():
            analyte = _as_total(analyte, d3_alone)

    # facts about what a row's test is: a calcium read as ionized by its range, an eGFR
    # computed with a race coefficient
    analyte_note = ionized.map(lambda v: IONIZED_BY_RANGE if v else "")
    if race_note is not None:
        analyte_note = _joint(analyte_note, race_note).map(lambda v: ";".join(filter(None, v)))

    keep = verdict.kept
    # everything below is output for the kept rows only
    kept = np.flatnonzero(keep)
    repeated = conform(pd.DataFrame(), REJECTED)
    unique: np.ndarray | None = None  # positions in `kept` of the rows that repeat none
    # The range columns do not depend on which kept rows repeat others: they are worked
    # out beside the search for repeats (one thread of numpy), for all kept rows.
    with _Side() as side:
        ranges_job = side.submit(
            _range_columns,
            col,
            kept,
            when,
            factor,
            analyte,
            printed_ranges,
            range_limits,
            _Births(file_label, opts, frame["source_row"]),
        )
        if dedupe:
            text = parsed.field(2).compact()
            repeats = _Repeats(
                frame,
                col,
                pid.compact(),
                analyte,
                when,
                value,
                text,
                cmp_,
                test_label,
                range_limits,
                status,
                factor,
            )
            unique, repeated = repeats.split(kept)
        range_numbers, range_texts = side.result(ranges_job)
    rows = kept if unique is None else kept[unique]

    def unique_of(coded: _Coded) -> _Coded:
        return coded if unique is None else coded.at(unique)

    # every output column (and the few steps that only feed one) is an independent job;
    # the longest go first so that the threads finish together
    out = _in_threads(
        {
            "rejected": lambda: _reject(
                frame, np.flatnonzero(~keep), verdict, col, test_fields, pid
            ),
            "quality": lambda: _quality(
                col,
                flag,
                unit_rep,
                rows,
                opts.undated,
                unique_of(range_texts["range_note"]),
                analyte_note,
                index_marks,
            ).strings(),
            "mg_lowering_medicines": lambda: (
                col["medication"]
                .at(rows)
                .map(lambda v: "; ".join(medicines_named("mg_lowering", _text(v))))
                .strings(empty_is_missing=True)
            ),
            "test_label": lambda: test_label.at(rows).strings(),
            "specimen_id": lambda: _specimen_ids(frame["specimen_id"], rows),
            "ranges": lambda: {
                name: numbers if unique is None else numbers[unique]
                for name, numbers in range_numbers.items()
            },
            "sex": lambda: unique_of(range_texts["sex"]).strings(empty_is_missing=True),
            "range_origin": lambda: unique_of(range_texts["range_origin"]).strings(),
            "range_source": lambda: unique_of(range_texts["range_source"]).strings(),
            "source_file": lambda: col["source_file"].at(rows).strings(),
            "patient_id": lambda: pid.at(rows).strings(),
            "analyte": lambda: analyte.at(rows).strings(),
            "loinc": lambda: col["loinc"].at(rows).strings(),
            "value_raw": lambda: col["value_raw"].at(rows).filled().strings(),
            "unit_raw": lambda: col["unit_raw"].at(rows).filled().strings(),
            "comparator": lambda: cmp_.at(rows).strings(),
            "unit_reported": lambda: unit_rep.at(rows).strings(),
            "unit_system": lambda: unit.at(rows).map(lambda v: v[2]).strings(),
            "unit": lambda: canon_unit.at(rows).strings(),
            "text_result": lambda: parsed.at(rows).map(lambda v: v[2]).strings(),
            "flag": lambda: flag.at(rows).strings(),
            "comment": lambda: col["comment"].at(rows).strings(),
            "result_status": lambda: (
                status.at(rows).map(lambda v: v.usable).strings(empty_is_missing=True)
            ),
            "source_row": lambda: _take(frame["source_row"], rows),
            "collected_at": lambda: when[rows],
            "utc_offset_min": lambda: _offset_column(offset, rows),
            "value_reported": lambda: number[rows],
            "value": lambda: value[rows],
        }
    )
    rejected = out.pop("rejected")
    columns = {**out.pop("ranges"), **out}
    # copy=False: the arrays are fresh, and pandas would otherwise copy the float columns
    # into one 2-D block; built in schema order so conform has nothing left to do
    results = pd.DataFrame({name: columns[name] for name in RESULTS}, copy=False)
    return conform(results, RESULTS), conform(rejected, REJECTED), repeated


def _offset_column(offset: np.ndarray | None, rows: np.ndarray) -> pd.arrays.IntegerArray:
    """The UTC offsets in minutes of `rows` (NaN, or no array at all: none) as the
    nullable Int16 column of RESULTS."""
    if offset is None:  # nearly every export: no time printed with an offset
        return pd.arrays.IntegerArray(np.zeros(len(rows), np.int16), np.ones(len(rows), bool))
    minutes = offset[rows]
    missing = np.isnan(minutes)
    return pd.arrays.IntegerArray(np.where(missing, 0, minutes).astype(np.int16), missing)


def _test_label(test_fields: _Coded, stripped: bool = True) -> _Coded:
    """What the file called the test: its name, else its code, else its LOINC (stripped,
    or as written), from the rows' (analyte hint, LOINC, code, name), once per distinct
    combination."""
    fields = {k: [v[k] for v in test_fields.values] for k in (3, 2, 1)}  # name, code, LOINC
    if stripped:
        fields = {k: _strip(pd.Series(v, dtype=STR)).tolist() for k, v in fields.items()}
    labels = [_first_text(texts) for texts in zip(fields[3], fields[2], fields[1], strict=True)]
    return _Coded(test_fields.codes, labels)


def _range_columns(
    col: dict[str, _Coded],
    rows: np.ndarray,
    when: np.ndarray,
    factor: np.ndarray,
    analyte: _Coded,
    printed_ranges: _Coded,
    range_limits: _Coded,
    births: _Births,
) -> tuple[dict[str, np.ndarray], dict[str, _Coded]]:
    """Reference range columns of the given rows, with the sex and age they were chosen by:
    the row's own range, else bundled by age/sex, else unknown. (Number columns, text
    columns as codes; "range_note" is "implausible_range" where the row's range was
    dropped, "unreadable_range" where its range text gave no limit.) For every row:
    `printed_ranges`, the joint of the three range columns, and `range_limits`, the
    (low, high) read from them."""
    ranges = range_limits.at(rows)
    # a range text with no limit read from it: the lab printed a range labinterp cannot use
    # (low/high columns are numbers or placeholders such as 0/0, not text to read)
    as_text = printed_ranges.at(rows).map(
        lambda v: bool(_text(v[0]).strip()) and not (_text(v[1]) or _text(v[2]))
    )
    sex = col["sex"].at(rows).map(_sex).compact()
    age, unread_birth = _ages(col, when, rows, births)
    low_rep, high_rep = ranges.field(0).floats(), ranges.field(1).floats()
    f = factor[rows]
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is what is checked below
        low, high = low_rep * f, high_rep * f
    analyte = analyte.at(rows)
    absurd = _absurd_range(low_rep, high_rep, low, high, analyte)
    unread = as_text.rows_where(bool) & np.isnan(low_rep) & np.isnan(high_rep)
    note = _Coded(
        np.where(absurd, 1, np.where(unread, 2, 0)).astype(np.int64) + 3 * unread_birth,
        [
            f"{range_note};{birth_note}".strip(";")
            for birth_note in ("", "unreadable_birth_date")
            for range_note in ("", "implausible_range", "unreadable_range")
        ],
    )
    if absurd.any():
        # the whole range goes: a range with one absurd bound is not the lab's range
        low_rep, high_rep, low, high = (
            np.where(absurd, np.nan, a) for a in (low_rep, high_rep, low, high)
        )
    limits, origin, source = _ranges(low_rep, high_rep, low, high, f, analyte, sex, age)
    return {**limits, "age_years": age}, {
        "sex": sex,
        "range_origin": origin,
        "range_source": source,
        "range_note": note,
    }


def _absurd_range(
    low_rep: np.ndarray, high_rep: np.ndarray, low: np.ndarray, high: np.ndarray, analyte: _Coded
) -> np.ndarray:
    """Per row: its printed range has a bound that cannot be a reference limit.

    That is a bound that is infinite (as printed or once converted), or one that no unit
    the analyte is reported in would make possible (see `_possible_bounds`): a bound above
    the plausible high, as the value check judges a result, or a high bound below the
    plausible low (every result would be high); or a low bound above the high one. A bound
    merely odd for the row's unit stays: the lab's range wins, and the unit error may be in
    the range alone. A low bound below the plausible low stays too: labs print 0 for "no
    lower limit".
    """
    possible = analyte.map(_possible_bounds)
    ceiling, floor = possible.field(0).floats(), possible.field(1).floats()
    # NaN compares False: an absent bound (or analyte) is no reason to drop a range
    bad = np.isinf(low_rep) | np.isinf(high_rep) | np.isinf(low) | np.isinf(high)
    bad |= (low_rep > ceiling) | (high_rep > ceiling) | (high_rep < floor)
    # "2.6-1.6": a low limit above the high one would call every result low or high
    bad |= low_rep > high_rep
    return bad


@cache
def _possible_bounds(analyte: str) -> tuple[float, float]:
    """The largest and smallest printed number that is within the analyte's plausible
    limits in some unit it may be reported in (one of `_ALTERNATIVES`, or its canonical
    unit); NaN for no analyte."""
    a = analytes().get(analyte)
    if a is None:
        return (np.nan, np.nan)
    factors = [1.0]  # the canonical unit
    for alt in _ALTERNATIVES:
        try:
            factors.append(units.factor(analyte, alt))
        except UnitError:
            continue
    return (a.plausible_high / min(factors), a.plausible_low / max(factors))


@dataclass
class _Repeats:
    """The fields `reading.deduplicate` compares, as the codes normalize already has."""

    frame: pd.DataFrame
    col: dict[str, _Coded]
    patient: _Coded  # compacted: equal codes are equal ids
    analyte: _Coded
    when: np.ndarray
    value: np.ndarray
    text: _Coded
    comparator: _Coded
    test_label: _Coded
    range_limits: _Coded  # per row, the (low, high) its printed range gave
    status: _Coded  # per row, the catalog.ResultStatus its status column gave
    factor: np.ndarray  # per row, what its value is multiplied by in the canonical unit

    def split(self, rows: np.ndarray) -> tuple[np.ndarray | None, pd.DataFrame]:
        """(positions in `rows` of the rows that are neither replaced by the lab nor
        repeat another, None if that is all of them; REJECTED rows of the others) among
        the kept `rows`."""
        gone, replaced = self._replaced(rows)
        if len(gone) == 0:  # nearly every export: no status, or nothing replaced
            return self._repeats(rows)
        live = np.ones(len(rows), dtype=bool)
        live[gone] = False
        at = np.flatnonzero(live)
        unique, repeated = self._repeats(rows[at])
        both = pd.concat([replaced, repeated], ignore_index=True) if len(repeated) else replaced
        return (at if unique is None else at[unique]), both

    def _group(self, rows: np.ndarray) -> np.ndarray:
        width = len(self.analyte.values) + 1
        pair = self.patient.codes[rows] * width + self.analyte.codes[rows]
        return _first_appearance(pair, len(self.patient.values) * width)

    def _replaced(self, rows: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
        """(positions in `rows` of the results the lab replaced, their REJECTED rows)."""
        ranks = np.array([STATUS_RANK.get(v.usable, 0) for v in self.status.values])
        if (ranks > 0).sum() == 0:
            return np.zeros(0, dtype=np.int64), conform(pd.DataFrame(), REJECTED)
        source_row = self.frame["source_row"].to_numpy(dtype=np.int64, na_value=0)[rows]

        def specimen(at: np.ndarray) -> np.ndarray:
            ids = _specimen_ids(self.frame["specimen_id"], rows[at]).fillna("")
            return pd.factorize(ids)[0].astype(np.int64)

        gone, by = duplicates.replaced(
            group=self._group(rows),
            time=self.when[rows].view(np.int64),
            specimen=specimen,
            rank=ranks[self.status.codes[rows]],
            file=np.zeros(len(rows), dtype=np.int64),  # one file
            row=source_row,
        )
        if len(gone) == 0:
            return gone, conform(pd.DataFrame(), REJECTED)
        files = self.col["source_file"]
        statuses = [self.status.values[c].usable for c in self.status.codes[rows[by]]]
        details = [
            duplicates.replaced_detail(status, files.values[f], r)
            for status, f, r in zip(
                statuses,
                files.codes[rows[by]],
                self.frame["source_row"].array[rows[by]],
                strict=True,
            )
        ]
        return gone, self._rejected_rows(rows[gone], "superseded", details)

    def _repeats(self, rows: np.ndarray) -> tuple[np.ndarray | None, pd.DataFrame]:
        """(positions in `rows` of the rows without repeats, None if that is all of them;
        REJECTED rows of the repeats) among `rows`."""
        group = self._group(rows)
        time = self.when[rows].view(np.int64)
        source_row = self.frame["source_row"].to_numpy(dtype=np.int64, na_value=0)
        no_text = self.text.values.index("") if "" in self.text.values else -1

        def details(at: np.ndarray) -> duplicates.Rows:
            picked = rows[at]
            return duplicates.Rows(
                group=group[at],
                time=time[at],
                file=np.zeros(len(at), dtype=np.int64),  # one file
                row=source_row[picked],
                value=self.value[picked],
                text=self.text.codes[picked],
                no_text=no_text,
                comparator=self.comparator.codes[picked],
                rank=self._without_range(picked),
                rounding=duplicates.printed_rounding(self.col["value_raw"].at(picked).strings())
                * self.factor[picked],
                specimen=duplicates.present_codes(_specimen_ids(self.frame["specimen_id"], picked)),
                loinc=duplicates.present_codes(self.col["loinc"].at(picked).strings()),
                name=duplicates.present_codes(self.test_label.at(picked).strings().str.casefold()),
                unit=duplicates.unit_codes(self.factor[picked]),
            )

        dups, firsts = duplicates.find(group, time, details)
        if len(dups) == 0:
            return None, conform(pd.DataFrame(), REJECTED)
        unique = np.ones(len(rows), dtype=bool)
        unique[dups] = False
        return np.flatnonzero(unique), self._rejected(rows[dups], rows[firsts])

    def _without_range(self, rows: np.ndarray) -> np.ndarray:
        """1 where a row prints no range limit, else 0: of repeats, the row with its lab's
        range is kept (as `reading.deduplicate` keeps it, by range origin)."""
        limits = self.range_limits.at(rows).rows_where(lambda r: bool(np.isfinite(r).any()))
        return (~limits).astype(np.int64)

    def _rejected(self, dups: np.ndarray, firsts: np.ndarray) -> pd.DataFrame:
        def at(rows: np.ndarray) -> tuple[list[object], list[object]]:
            files = self.col["source_file"]
            file = [files.values[c] for c in files.codes[rows]]
            return file, self.frame["source_row"].array[rows].to_numpy(dtype=object).tolist()

        kept_file, kept_row = at(firsts)
        kept_label = self.test_label.at(firsts).strings().tolist()
        details = duplicates.repeat_details(
            zip(kept_file, kept_row, kept_label, strict=True), zip(*at(dups), strict=True)
        )
        return self._rejected_rows(dups, "duplicate", details)

    def _rejected_rows(self, rows: np.ndarray, reason: str, details: list[str]) -> pd.DataFrame:
        rejected = pd.DataFrame(
            {
                "source_file": self.col["source_file"].at(rows).strings(),
                "source_row": _take(self.frame["source_row"], rows),
                "patient_id": self.patient.at(rows).strings(empty_is_missing=True),
                "reason": reason,
                "detail": details,
                "test": self.test_label.at(rows).strings(),
                "value_raw": self.col["value_raw"].at(rows).filled().strings(),
                "unit_raw": self.col["unit_raw"].at(rows).filled().strings(),
            }
        )
        return conform(rejected, REJECTED)


def _first_appearance(keys: np.ndarray, bound: int) -> np.ndarray:
    """Per row, a number for its key that orders keys by first appearance, as
    `reading.deduplicate` numbers its groups (these numbers need not be consecutive).

    Keys in [0, bound). The position of a key's first row is such a number, found with
    one unbuffered minimum over a table of the key range instead of hashing every row.
    """
    if bound > _bitmap_bound(len(keys)):
        return pd.factorize(keys)[0].astype(np.int64)
    first = np.full(bound, len(keys), dtype=np.int64)
    np.minimum.at(first, keys, np.arange(len(keys), dtype=np.int64))
    return first[keys]


def _reject(
    frame: pd.DataFrame,
    rows: np.ndarray,
    verdict: _Verdicts,
    col: dict[str, _Coded],
    test_fields: _Coded,
    pid: _Coded,
) -> pd.DataFrame:
    # a rejected row shows the test as the file wrote it
    test = _test_label(test_fields, stripped=False).at(rows)
    return pd.DataFrame(
        {
            "source_file": col["source_file"].at(rows).strings(),
            "source_row": _take(frame["source_row"], rows),
            # cleaned as RESULTS' ids are, so a patient's rejected rows match its results
            "patient_id": pid.at(rows).strings(empty_is_missing=True),
            "reason": verdict.text_of(verdict.reason[rows]),
            "detail": verdict.text_of(verdict.detail[rows]),
            "test": test.strings(),
            "value_raw": col["value_raw"].at(rows).strings(),
            "unit_raw": col["unit_raw"].at(rows).strings(),
        }
    )


def _detect_decimal(values: pd.Series) -> tuple[str, bool]:
    # Without evidence either way, decimal points.
    found, mixed = decimal_evidence(values)
    return found or ".", mixed


def decimal_evidence(values: pd.Series) -> tuple[str, bool]:
    """The decimal separator most result texts show ("," or "."), "" when none of them
    tells, and whether some show the other one (two exports joined): such a file has no
    separator to read "1,250" or "1.250" by. A file read in batches decides both once for
    the whole file."""
    sample = values.head(5000)
    if sample.hasnans:  # else the first 5,000 non-missing values, without copying the column
        sample = values.dropna().head(5000)
    sample = sample.astype(str)
    # Only numbers that can be read one way count: "0,55", "12,5", "1.250,5" for commas;
    # "0.55", "8.1", "1,250.5" for points. "1,250" could be 1.25 or 1250 and counts for
    # neither.
    commas = sample.str.fullmatch(_COMMA_DECIMAL).sum()
    points = sample.str.fullmatch(_POINT_DECIMAL).sum()
    if commas == points == 0:
        return "", False
    return ("," if commas > points else "."), bool(commas and points)


_COMMA_DECIMAL = r"[<>]?\s*-?(?:0,\d+|\d+,(?:\d{1,2}|\d{4,})|[1-9]\d{0,2}(?:\.\d{3})+,\d+)"
_POINT_DECIMAL = r"[<>]?\s*-?(?:0\.\d+|\d+\.(?:\d{1,2}|\d{4,})|[1-9]\d{0,2}(?:,\d{3})+\.\d+)"


# A spreadsheet's scientific notation of a long number ("1.23457E+11", "1,23457E+11")
_SCIENTIFIC_ID = re.compile(r"^\d(?:[.,]\d+)?E\+?\d+$", re.I)


def _patient_ids(patient: _Coded) -> _Coded:
    """The patient ids cleaned by `patient_id_text`, once per distinct id."""
    return patient.via_pandas(patient_id_text)


def patient_id_text(ids: pd.Series) -> pd.Series:
    """Patient ids as written, stripped, missing as ""; pandas re-saves turn 93705 into
    "93705.0", which is read as 93705. Also used to match ids in side tables.

    Invisible format characters (Unicode category Cf: zero-width spaces and joiners, a BOM,
    word joiners) and full-width or compatibility forms (NFKC) would otherwise make one
    patient two ids that print the same.
    """
    text = pa.array(_strip(ids).astype(pd.StringDtype("pyarrow")), type=pa.large_string())
    # what _plain_text does to one text, here on the whole column in Arrow
    if not pc.all(pc.string_is_ascii(text)).as_py():  # ASCII has neither: nothing to do
        text = pc.replace_substring_regex(pc.utf8_normalize(text, "NFKC"), r"\p{Cf}", "")
        text = pc.utf8_trim_whitespace(text)
    text = pc.replace_substring_regex(text, r"^(\d+)\.0$", r"\1")
    text = _without_excel_text(text)
    return pd.Series(pd.array(text, dtype=STR), index=ids.index)


def _dates(
    collected: _Coded, file_label: str, opts: Options
) -> tuple[np.ndarray, np.ndarray | None, _Coded]:
    """The collection time per row, its UTC offset in minutes as printed (NaN: none; None
    when no time has one), and per row the (reason, detail) of an unusable one."""
    # The file's distinct date spellings decide the date order, so parse them all at once.
    spelled = collected._distinct_text()
    # what .fillna("").str.strip() does on pyarrow strings, then one code per spelling
    trimmed = pc.utf8_trim_whitespace(pc.fill_null(spelled, ""))
    if trimmed.equals(spelled):  # nothing to fill or strip: the spellings are still distinct
        codes, distinct_text = collected.codes, trimmed
    else:
        text = pc.dictionary_encode(trimmed)
        codes = text.indices.to_numpy(zero_copy_only=False)[collected.codes]
        distinct_text = text.dictionary
    stamps, reasons, plain = _parse_distinct_dates(distinct_text, file_label, opts)
    offsets = None
    printed = np.flatnonzero(~plain & ~np.isnat(stamps))  # the plain shape has no offset
    if len(printed):
        found = utc_offsets(distinct_text.take(pa.array(printed)))
        if not np.isnan(found).all():
            offsets = np.full(len(stamps), np.nan)
            offsets[printed] = found
    reason_codes, reason_names = pd.factorize(reasons)
    why = _Coded(
        reason_codes[codes],
        [(_REASON.get(r, r), _date_detail(r, opts)) for r in reason_names],
    )
    return stamps[codes], None if offsets is None else offsets[codes], why


# An ISO time that ends in a UTC offset: "2018-05-26T23:21:43-07:00", "...Z", "...+0530"
_ISO_OFFSET = (
    r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:[ T][0-9]{1,2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?)?"
    r"(?:(?P<utc>Z)|(?P<sign>[+-])(?P<hours>[0-9]{2}):?(?P<minutes>[0-9]{2}))$"
)


def utc_offsets(text: pa.Array) -> np.ndarray:
    """Minutes east of UTC that each ISO time printed (0 for "Z"; NaN where it has none).

    collected_at holds such times in UTC, so that draws from different zones order
    correctly; the offset lets a handout print the date and time the lab printed.
    """
    parts = pc.extract_regex(pc.utf8_trim_whitespace(text), _ISO_OFFSET)
    matched = pc.is_valid(parts).to_numpy(zero_copy_only=False)
    # groups that did not take part in the match are "", and unmatched rows null
    sign, hours, minutes = (
        pc.fill_null(parts.field(name), "").to_numpy(zero_copy_only=False)
        for name in ("sign", "hours", "minutes")
    )
    numeric = sign != ""  # else "Z", or no offset at all
    offsets = np.where(matched, 0.0, np.nan)
    offsets[numeric] = np.where(sign[numeric] == "-", -1, 1) * (
        hours[numeric].astype(int) * 60 + minutes[numeric].astype(int)
    )
    return offsets


def _parse_distinct_dates(
    text: pa.Array, file_label: str, opts: Options
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_parse_dates` of distinct spellings, with the plain ISO ones (nearly all, in most
    exports) parsed by pyarrow and only the others turned into Python strings; and which
    spellings were of the plain shape."""
    plain = pc.match_substring_regex(text, _PLAIN_ISO).to_numpy(zero_copy_only=False)
    if opts.date_format is None and plain.any():
        try:
            # to seconds (the plain shape has none smaller), which reach years 1-9999, so
            # that a year-1 date is found and rejected here instead of failing the cast
            seconds = pc.cast(text.filter(pa.array(plain)), pa.timestamp("s")).to_numpy()
        except pa.ArrowInvalid:  # an impossible date (2024-02-30): let pandas say which
            pass
        else:
            stamps = np.full(len(text), np.datetime64("NaT"), dtype="datetime64[ns]")
            reasons = np.full(len(text), "", dtype=object)
            stamps[plain], far = _to_ns(seconds)
            reasons[np.flatnonzero(plain)[far]] = "date_out_of_range"
            rest = np.flatnonzero(~plain)
            if len(rest):
                values = pd.Series(text.take(pa.array(rest)).to_pylist(), dtype=object)
                stamps[rest], reasons[rest] = _parse_dates(
                    values, file_label, None, opts.slash_order
                )
            return stamps, reasons, plain
    values = pd.Series(text.to_pylist(), dtype=object)
    stamps, reasons = _parse_dates(values, file_label, opts.date_format, opts.slash_order)
    return stamps, reasons, plain


def _per_analyte(analyte: _Coded) -> tuple[np.ndarray, np.ndarray, _Coded]:
    """Plausible low and high per row, and the canonical unit."""
    cat = analytes()
    known = [cat.get(a) for a in analyte.values]
    lo = _Coded(analyte.codes, [a.plausible_low if a else None for a in known]).floats()
    hi = _Coded(analyte.codes, [a.plausible_high if a else None for a in known]).floats()
    unit = _Coded(analyte.codes, [(a.canonical_unit or "") if a else "" for a in known])
    return lo, hi, unit


def _implausible(mask: np.ndarray, analyte: _Coded, parsed: _Coded, unit_rep: _Coded) -> _Coded:
    """("implausible_value", detail) for the rows in `mask`; one detail per distinct case."""
    rows = np.flatnonzero(mask)
    cases = _joint(analyte.at(rows), parsed.at(rows), unit_rep.at(rows))
    codes = np.zeros(len(mask), dtype=np.int64)
    codes[rows] = cases.codes
    details = [("implausible_value", _implausible_detail(a, v[1], u)) for a, v, u in cases.values]
    return _Coded(codes, details or [("", "")])


def _per_case(
    mask: np.ndarray,
    analyte: _Coded,
    parsed: _Coded,
    unit_rep: _Coded,
    verdict: Callable[[str, float, str], tuple[str, str]],
) -> _Coded:
    """`verdict(analyte, reported number, unit)` for the rows in `mask`, once per distinct
    case."""
    rows = np.flatnonzero(mask)
    cases = _joint(analyte.at(rows), parsed.at(rows), unit_rep.at(rows))
    codes = np.zeros(len(mask), dtype=np.int64)
    codes[rows] = cases.codes
    return _Coded(codes, [verdict(a, v[1], u) for a, v, u in cases.values])


# Units to try when a value is impossible in its stated unit, per canonical unit family.
_ALTERNATIVES = (
    "mg/dL",
    "mmol/L",
    "mEq/L",
    "mg/L",
    "g/dL",
    "g/L",
    "umol/L",
    "ng/mL",
    "nmol/L",
    "pg/mL",
    "pmol/L",
)


def _implausible_detail(analyte: str, number: float, unit: str) -> str:
    a = analytes()[analyte]
    text = (
        f"{a.display_name} {number:g} {unit} is outside what is humanly possible "
        f"({a.plausible_low:g}-{a.plausible_high:g} {a.canonical_unit}); suspected unit error"
    )
    for alt in _ALTERNATIVES:
        if alt == unit:
            continue
        try:
            v = number * units.factor(analyte, alt)
        except UnitError:
            continue
        if a.plausible_low <= v <= a.plausible_high:
            return text + f": the number fits {alt}. Check the unit in the export."
    return text + ". Check the value and unit in the export."


@cache
def _grade4_limits(analyte: str) -> tuple[float, float]:
    """The CTCAE v5 grade 4 (life-threatening) cut-offs below and above which a value of the
    analyte lies, in its canonical unit (reference_ranges/ctcae_v5.csv); NaN where CTCAE
    grades none. Total calcium is graded on the corrected calcium's cut-offs, as its scale."""
    graded = "calcium_corrected" if analyte == "calcium" else analyte
    a = analytes().get(graded)
    low = high = np.nan
    if a is None:
        return (low, high)
    for (term, unit), rules in grading.criteria().items():
        if grading.TERMS[term] != graded or unit != a.canonical_unit:
            continue
        for rule in rules:
            if rule.grade == 4 and rule.cutoff is not None:
                if rule.operator.startswith("<"):
                    low = rule.cutoff
                else:
                    high = rule.cutoff
    return (low, high)


@cache
def _common_units(analyte: str) -> tuple[str, ...]:
    """The units labs commonly report the analyte in: its canonical unit and those the
    bundled adult ranges are printed in (reference_ranges/fallback_ranges.csv)."""
    found = [analytes()[analyte].canonical_unit]
    found += [fb.unit for fb in fallback_ranges() if fb.analyte == analyte]
    return tuple(dict.fromkeys(found))


def _other_unit_verdict(analyte: str, reported: float, unit: str) -> tuple[str, str]:
    """("implausible_value", detail) for a value graded 4 (life-threatening) in its stated
    `unit` whose number, read in another unit labs commonly use for the analyte, is an
    ordinary result; else ("", "").

    Ordinary is CTCAE grade 0 or the band anchored on the lab's limit (grade 1; for
    hypokalemia grade 2, see _mild_grade), the number graded in the other unit against the
    bundled adult range as LLN/ULN (labinterp.grading). That band is the line because it is
    CTCAE's mildly abnormal one, anchored on the lab's own limit: a result just outside
    the range, of the kind seen every day, and one that another lab's range may call
    normal. Strictly within the bundled range missed the commonest slips (Ca 2.1 mg/dL:
    2.1 mmol/L is just below 2.12). Beyond that band, the number is abnormal read either
    way, so the unit on the row is no less likely than the other and the row stays.

    A reading in that band (not within the range) also needs the stated value beyond its
    own grade 4 cut-off by more than unit_error_beyond_grade4_factor: Mg 0.6 mg/dL
    (0.25 mmol/L) is barely beyond 0.7 mg/dL, a critical value yet one severe deficiency
    reaches, while 0.6 mmol/L is only grade 1; Ca 2.1 mg/dL is a third of its cut-off,
    6.0 mg/dL. A real severe value stays whenever its number is no ordinary result in the
    other unit (Ca 5.5 mg/dL: 5.5 mmol/L would be grade 4 too)."""
    if not unit or analyte not in grading.ANALYTE_TERMS:
        return ("", "")
    stated, low_side = _grade_in(analyte, reported, unit)
    if stated != 4:
        return ("", "")
    # the value that many times nearer normal: still grade 4 when it is beyond by more
    beyond = number("unit_error_beyond_grade4_factor")
    nearer = reported * beyond if low_side else reported / beyond
    for alt in _common_units(analyte):
        if _same_unit(analyte, alt, unit):
            continue
        in_alt, alt_low_side = _grade_in(analyte, reported, alt)
        mild = _mild_grade(analyte, low_side=alt_low_side)
        if not (in_alt == 0 or in_alt == mild):  # NaN: no grade, nothing to tell
            continue
        if in_alt == mild and _grade_in(analyte, nearer, unit)[0] != 4:
            continue
        name = analytes()[analyte].display_name
        fit = (
            "within the adult range"
            if in_alt == 0
            else f"just outside the adult range, CTCAE grade {mild}"
        )
        return (
            "implausible_value",
            f"{name} in {unit}: the value is beyond the CTCAE grade 4 limit, while its"
            f" number would be an ordinary result if read in {alt} ({fit}): suspected unit"
            f" error; the number fits {alt}."
            " Check the unit in the export.",
        )
    return ("", "")


@cache
def _mild_grade(analyte: str, *, low_side: bool) -> int:
    """The grade CTCAE gives the band between the lab's limit and its first numeric cut-off
    on that side (reference_ranges/ctcae_v5.csv: the row whose cut-off is LLN or ULN).
    It is 1 for every term but hypokalemia, whose band below LLN down to 3.0 mmol/L is
    graded 2 (grades 1 and 2 differ only by symptoms, CLINICAL.md sec. 7): a K of 3.2
    read in mmol/L is as ordinary a result as a Mg just below its range."""
    term = grading.ANALYTE_TERMS[analyte][0 if low_side else 1]
    anchored = [
        crit.grade
        for (name, _), rules in grading.criteria().items()
        if name == term
        for crit in rules
        if crit.anchor and crit.grade > 0
    ]
    return min(anchored, default=1)


def _grade_in(analyte: str, reported: float, unit: str) -> tuple[float, bool]:
    """The CTCAE grade of a number read in `unit`, against the bundled adult range in that
    unit (NaN: no grade), and whether the term that gives it is the low one."""
    low, high = _adult_range_in(analyte, unit)
    grade, term = grading.grade_results(
        np.zeros(1, dtype=np.int64),
        [analyte],
        np.array([reported], dtype=float),
        np.zeros(1, dtype=np.int64),
        [unit],
        np.array([low]),
        np.array([high]),
    )
    return float(grade[0]), grading.TERM_NAMES[term[0]] == grading.ANALYTE_TERMS[analyte][0]


@cache
def _adult_range_in(analyte: str, unit: str) -> tuple[float, float]:
    """The bundled adult range (any sex) in `unit`: as the source prints it there, else
    the canonical one converted; NaN where there is none."""
    adult = _adult_range(analyte)
    if adult is None:
        return (np.nan, np.nan)
    f = units.factor(analyte, unit)
    for fb in fallback_ranges():
        if (
            fb.analyte == analyte
            and fb.sex == "any"
            and fb.age_max is None
            and units.same_factor(np.array([units.factor(analyte, fb.unit)]), f)[0]
        ):
            low = np.nan if fb.low_in_unit is None else fb.low_in_unit
            high = np.nan if fb.high_in_unit is None else fb.high_in_unit
            return (low, high)
    return (adult[0] / f, adult[1] / f)


# Analytes not graded by CTCAE here whose number is checked for a unit error by how far
# below the bundled adult range it lies (CLINICAL.md sec. 5): the rule parameter with
# the factor. A g/dL albumin labelled g/L makes a low total calcium's corrected value
# look normal (pseudo-hypocalcemia).
_FAR_BELOW = {"albumin": "albumin_unit_error_below_factor"}


@cache
def _far_below_limit(analyte: str) -> float:
    """Below this (canonical unit) a value of the analyte is looked at as a suspected unit
    error by `_far_below_verdict`; NaN: never."""
    adult = _adult_range(analyte)
    if analyte not in _FAR_BELOW or adult is None:
        return np.nan
    return adult[0] / number(_FAR_BELOW[analyte])


def _far_below_verdict(analyte: str, reported: float, unit: str) -> tuple[str, str]:
    """("implausible_value", detail) for a value far below the adult range in its stated
    `unit` (the caller checks that) whose number, read in another unit labs commonly use
    for the analyte, lies within range_unit_fit_factor of the adult range; else ("", "").
    Albumin 5.5 g/L is 55 g/L read as g/dL; 11 g/L, a nephrotic value, would be 110 g/L."""
    adult = _adult_range(analyte)
    if adult is None or not unit:
        return ("", "")
    fit = number("range_unit_fit_factor")
    for alt in _common_units(analyte):
        if _same_unit(analyte, alt, unit):
            continue
        in_alt = reported * units.factor(analyte, alt)
        if adult[0] / fit <= in_alt <= adult[1] * fit:
            name = analytes()[analyte].display_name
            return (
                "implausible_value",
                f"{name} in {unit}: the value is far below the adult range, while its number"
                f" would be an ordinary result if read in {alt}: suspected unit error; the"
                f" number fits {alt}. Check the unit in the export.",
            )
    return ("", "")


@cache
def _adult_range(analyte: str) -> tuple[float, float] | None:
    """The bundled adult range for any sex, in the canonical unit (NaN for a missing limit):
    the row open to every age above its own lowest (fallback_ranges.csv says from which)."""
    for fb in fallback_ranges():
        if fb.canonical and fb.analyte == analyte and fb.sex == "any" and fb.age_max is None:
            low = np.nan if fb.low is None else fb.low
            high = np.nan if fb.high is None else fb.high
            return (low, high)
    return None


IONIZED_BY_RANGE = "ionized_calcium_by_range"  # quality flag of such a row
RACE_ADJUSTED_EGFR = "race_adjusted_egfr"  # quality flag of an eGFR read with race in it


def _ionized_by_range(analyte: str, unit: str, printed: tuple[float, float], loinc: object) -> bool:
    """Whether a result read as total calcium by its name (no LOINC code says which) is an
    ionized calcium: its printed range, both limits, lies within range_unit_fit_factor of
    the bundled ionized range in the row's unit and nearer to it than to the total one.
    The two bundled ranges are about a factor of 2 apart (CLINICAL.md sec. 2), so no total
    calcium range can pass for an ionized one."""
    if analyte != "calcium" or not unit or _text(loinc) or not all(np.isfinite(printed)):
        return False
    total, ionized = _adult_range("calcium"), _adult_range("calcium_ionized")
    if total is None or ionized is None:
        return False
    try:
        factor = units.factor("calcium_ionized", unit)
    except UnitError:
        return False

    def off(bundled: tuple[float, float]) -> float:
        """The worst ratio between the printed limits and `bundled` in the row's unit."""
        if min(printed) <= 0:
            return np.inf
        pairs = zip(printed, bundled, strict=True)
        return max(max(p / (b / factor), (b / factor) / p) for p, b in pairs)

    return off(ionized) <= number("range_unit_fit_factor") and off(ionized) < off(total)


def _range_unit_verdict(analyte: str, unit: str, printed: tuple[float, float]) -> tuple[str, str]:
    """("implausible_value", detail) when the row's printed range (low, high) fits another
    unit of the analyte far better than `unit`, else ("", "").

    How far a range is from the bundled adult range in a unit is the worst ratio over the
    limits (`off`). The printed range must be off in `unit` by more than
    range_unit_off_factor, within that factor in another unit (it would pass as that unit's
    own range), and nearer to it by range_unit_nearer_factor in log terms: vitamin D's two
    units are only 2.5x apart, so a lab's 75-250 nmol/L printed beside "ng/mL" is 1.5x off
    the bundled nmol/L range yet 3.75x off the ng/mL one."""
    if not analyte or not unit:
        return ("", "")
    adult = _adult_range(analyte)
    low, high = printed
    # A lower limit alone is a decision cut-off (vitamin D 20 or 30 ng/mL, 50 or 75 nmol/L;
    # eGFR 60) whose choices span more than a unit factor: it says too little.
    if adult is None or not np.isfinite(high) or not np.isfinite(adult[1]):
        return ("", "")
    if not np.isfinite(low):
        # An upper limit alone is judged only when above the bundled one in the row's unit:
        # a lower one may be a tighter cut-off ("<1 mg/L" and "<3 mg/L" are hs-CRP risk
        # cut-offs), while no lab's upper limit is 10x the bundled one ("<10" beside a CRP in
        # mg/dL is the mg/L limit, CLINICAL.md sec. 1's 10x trap).
        try:
            if high <= adult[1] / units.factor(analyte, unit):
                return ("", "")
        except UnitError:  # the row is rejected for its own unit
            return ("", "")
    shown = f"{low:g}-{high:g}" if np.isfinite(low) else f"<{high:g}"

    def off(in_unit: str) -> float:
        """The worst ratio between the printed limits and the adult range in `in_unit`."""
        try:
            factor = units.factor(analyte, in_unit)
        except UnitError:
            return np.inf
        ratios = [
            max(p / (b / factor), (b / factor) / p)
            for p, b in zip(printed, adult, strict=True)
            if np.isfinite(p) and np.isfinite(b) and p > 0 and b > 0
        ]
        return max(ratios) if ratios else np.inf

    stated = off(unit)
    tolerated = number("range_unit_off_factor")
    if stated <= tolerated:
        return ("", "")
    # the other unit the range fits best (the first listed on a tie)
    best, best_off = "", np.inf
    for alt in _ALTERNATIVES:
        if alt == unit or _same_unit(analyte, alt, unit):
            continue
        alt_off = off(alt)
        if alt_off < best_off:
            best, best_off = alt, alt_off
    if best_off > tolerated:
        return ("", "")
    if math.log(stated) < number("range_unit_nearer_factor") * math.log(best_off):
        return ("", "")
    return (
        "implausible_value",
        f"the row's range {shown} fits {best}, not {unit}: "
        "suspected unit error. "
        "Check the unit in the export.",
    )


@dataclass(frozen=True)
class _Births:
    """What reading the birth dates needs besides the columns: the file (for the warning
    and the date order) and the rows' numbers in it."""

    file_label: str
    opts: Options
    source_row: pd.Series


def _ages(
    col: dict[str, _Coded], when: np.ndarray, rows: np.ndarray, births: _Births
) -> tuple[np.ndarray, np.ndarray]:
    """Age in whole years of the given rows (the file's age column, else from the birth
    date), and which rows have a birth date that could not be read (age unknown; warned)."""
    given = col["age_raw"].at(rows)
    age = pd.to_numeric(_strip(pd.Series(given.values, dtype=STR)), errors="coerce").to_numpy(
        dtype=float
    )[given.codes]
    unread = np.zeros(len(rows), dtype=bool)
    born_text = col["birth_date"].via_pandas(_strip).compact()
    if any(b for b in born_text.values):
        born, bad = _birth_dates(born_text.values, col["collected_at"], births)
        at_rows = born_text.at(rows)
        from_birth = _whole_years(born, at_rows.codes, when[rows])
        unread = bad[at_rows.codes] & np.isnan(age)
        age = np.where(np.isnan(age), from_birth, age)
        if unread.any():
            listed = _take(births.source_row, rows[unread]).astype(str).tolist()
            more = f" and {len(listed) - 5} more" if len(listed) > 5 else ""
            log.warning(
                "%s: the birth date on row(s) %s%s is not a date labinterp can read, so the"
                " age is unknown and a row without its own range gets the adult one (quality:"
                " unreadable_birth_date); write birth dates as YYYY-MM-DD in the export, or"
                " pass --date-format.",
                births.file_label,
                ", ".join(listed[:5]),
                more,
            )
    # MIMIC shifts the birth dates of patients over 89 by ~300 years: not a real age
    age[(age < 0) | (age > 130)] = np.nan
    return age, unread


def _birth_dates(
    distinct: list[str], collected: _Coded, births: _Births
) -> tuple[np.ndarray, np.ndarray]:
    """The distinct birth dates as datetime64[D] (NaT where none), and which ones are
    written but could not be read. They are read like collection times ("12/25/2013",
    "25.12.2010"), with the day/month order of the file: as given for its batches, by
    --date-format, by its collection times, else by the birth dates themselves."""
    opts = births.opts
    order = opts.slash_order
    forced = opts.date_format or ""
    if order is None and "%d" in forced and "%m" in forced:
        order = "dmy" if forced.index("%d") < forced.index("%m") else "mdy"
    values = pd.Series(distinct, dtype=object).fillna("")
    # nearly every export writes them year first: then no date needs its order looked at
    year_first = pc.match_substring_regex(pa.array(values, pa.string()), r"^(\d{4}-|$)")
    shaped_iso = bool(pc.all(year_first).as_py())
    if (
        order is None
        and not shaped_iso
        and values.map(lambda v: bool(_SLASH.match(_as_slashed(v)))).any()
    ):
        try:
            order = slash_order(
                [v for v in collected.values if isinstance(v, str)], births.file_label
            )
        except DateFormatError:
            order = None
    try:
        stamps, reasons = _parse_dates(values, births.file_label, None, order)
    except DateFormatError:  # slashed birth dates alone, any of which could be either order
        slashed = values.map(lambda v: bool(_SLASH.match(_as_slashed(v)))).to_numpy(dtype=bool)
        stamps = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ns]")
        reasons = np.full(len(values), "unparseable_date", dtype=object)
        stamps[~slashed], reasons[~slashed] = _parse_dates(
            values[~slashed], births.file_label, None
        )
    # a date too far back for datetime64[ns] (MIMIC's shifted births) is no real age: not
    # reported as unreadable, as before
    bad = (values != "").to_numpy() & ~np.isin(reasons, ["", "missing_date", "date_out_of_range"])
    return stamps.astype("datetime64[D]"), bad


def _whole_years(born: np.ndarray, codes: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Age in completed years (whether this year's birthday was reached) at `at` of a
    person born `born[codes]` (distinct birth dates, a code per row); NaN where either date
    is missing. In days, months and years of numpy: pandas would hold the dates in
    nanoseconds, which overflow for births before 1677. The birth dates are split into
    year and month-day once per distinct date; the times with three casts of a million
    rows, the rest integer arithmetic."""

    def year_and_month_day(days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        months = days.astype("datetime64[M]")
        m = months.view("int64")  # months since 1970-01
        day = days.view("int64") - months.astype("datetime64[D]").view("int64")
        return m // 12, (m % 12) * 100 + day

    born = np.asarray(born, dtype="datetime64[D]")
    by, bmd = year_and_month_day(np.where(np.isnat(born), np.datetime64(0, "D"), born))
    at_days = at.astype("datetime64[D]")
    missing = np.isnat(at_days) | np.isnat(born)[codes]
    ay, amd = year_and_month_day(np.where(np.isnat(at_days), np.datetime64(0, "D"), at_days))
    years = (ay - by[codes] - (amd < bmd[codes])).astype(float)
    return np.where(missing, np.nan, years)


def _with_marker(flag: object, marker: str) -> object:
    """The flag column with the abnormal-flag marker printed after the number, ";"-joined
    as the FHIR reader joins several interpretations ("L" and "L" are one "L")."""
    if not marker:
        return flag
    return ";".join(dict.fromkeys(f for f in (_text(flag), marker) if f))


def _quality(
    col: dict[str, _Coded],
    flag: _Coded,
    unit_rep: _Coded,
    rows: np.ndarray,
    undated: bool,
    range_note: _Coded,
    analyte_note: _Coded,
    index_marks: _Coded | None,
) -> _Coded:
    """ ";"-joined quality flags of the given rows (`range_note` is already per row;
    `analyte_note` and `index_marks`, the flags raised sample-quality indices give, are
    per input row)."""
    props = _loinc_properties()

    def mismatch(code: object, unit: object) -> str:
        prop = props.get(_text(code))
        kind = _unit_kind(_text(unit)) if prop else ""
        return "loinc_unit_mismatch" if prop and kind and kind != prop else ""

    def joined(v: tuple[Any, ...]) -> str:
        comment, flag, value_raw, loinc, unit, medication, analyte_note, index, note = v
        flags = [quality_flags(comment, flag, value_raw), mismatch(loinc, unit), analyte_note]
        for mark in index.split(";") if index else ():
            if mark not in flags[0].split(";"):  # a comment may have said it already
                flags.append(mark)
        flags.append(note)
        if undated:
            flags.append("undated")
        # not quality problems, but facts about the row that the patterns read
        for group, row_flag in MEDICINE_FLAGS.items():
            if names_medicine(group, _text(medication)):
                flags.append(row_flag)
        return ";".join(f for f in flags if f)

    parts = (
        col["comment"],
        flag,
        col["value_raw"],
        col["loinc"],
        unit_rep,
        col["medication"],
        analyte_note,
        index_marks or _Coded(np.zeros(len(analyte_note.codes), np.int64), [""]),
    )
    return _joint(*(p.at(rows) for p in parts), range_note).map(joined)


def bundled_ranges(
    analyte: str, factor: np.ndarray, sex: np.ndarray, age: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The bundled range of `analyte` for values with no range of their own (a value the
    engine derives), as `_ranges` gives one to a row without a printed range: by sex
    ("female", "male", "" unknown) and age in years (NaN unknown), in the unit whose factor
    to the canonical one is `factor` where the source prints the range in it. Returns the
    four limit columns of RESULTS and each value's range origin ("bundled" or "unknown")."""
    n = len(factor)
    limits, origin, _ = _ranges(
        np.full(n, np.nan),
        np.full(n, np.nan),
        np.full(n, np.nan),
        np.full(n, np.nan),
        np.asarray(factor, dtype=float),
        _Coded(np.zeros(n, dtype=np.int64), [analyte]),
        _Coded(*_codes_of(np.asarray(sex, dtype=object))),
        np.asarray(age, dtype=float),
    )
    return limits, np.array(origin.values, dtype=object)[origin.codes]


def _codes_of(texts: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    codes, uniques = pd.factorize(texts)
    return codes.astype(np.int64), list(uniques)


def _ranges(
    low_rep: np.ndarray,
    high_rep: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    factor: np.ndarray,
    analyte: _Coded,
    sex: _Coded,
    age: np.ndarray,
) -> tuple[dict[str, np.ndarray], _Coded, _Coded]:
    """The range columns of RESULTS: the row's own range, else a bundled one (as the source
    prints it in the row's unit, when it prints one there), else none.

    `low` and `high` are the row's range in the canonical unit (the reported one times
    `factor`); both are filled in here. Returns the four limit columns, and the range
    origin and source per row."""
    has_row_range = ~(np.isnan(low_rep) & np.isnan(high_rep))
    # origin and source as numbers into these lists
    origins = ["unknown", "row", "bundled"]
    bundled_id = 2
    sources = ["", "row"]
    origin = has_row_range.astype(np.int64)  # 1 = "row"
    source = has_row_range.astype(np.int64)
    # Only rows without their own range can take a bundled one; in a typical export that
    # is few or none, so the fallback look-ups run on those rows only.
    need = np.flatnonzero(~has_row_range)
    need_analyte, need_sex, need_age = analyte.at(need), sex.at(need), age[need]
    need_factor = factor[need]
    open_ = np.ones(len(need), dtype=bool)  # still without a range
    as_written = np.zeros(len(low), dtype=bool)  # took a bundled range written in its unit
    # Ranges written in a lab unit first: a row reported in that unit takes the numbers as
    # the source prints them (see catalog.FallbackRange); the others, the canonical range.
    for fb in sorted(fallback_ranges(), key=lambda fb: fb.canonical):
        if not open_.any():
            break
        m = open_ & need_analyte.rows_where(_equals(fb.analyte))
        if fb.sex != "any":
            # a sex-specific range never applies to an unknown sex (no male default)
            m &= need_sex.rows_where(_equals(fb.sex))
        if fb.age_min is not None:
            # patients known to be younger get no adult range; unknown age is taken as adult
            m &= ~(need_age < fb.age_min)
        if fb.age_max is not None:
            m &= ~(need_age > fb.age_max)
        if not fb.canonical and m.any():
            m &= units.same_factor(need_factor, units.factor(fb.analyte, fb.unit))
        if not m.any():
            continue
        open_ &= ~m
        hit = need[m]
        if fb.canonical:
            low[hit] = np.nan if fb.low is None else fb.low
            high[hit] = np.nan if fb.high is None else fb.high
        else:
            # the value is the reported number times the row's factor: so are these limits,
            # so a value equal to a printed limit stays equal to it
            low_rep[hit] = np.nan if fb.low_in_unit is None else fb.low_in_unit
            high_rep[hit] = np.nan if fb.high_in_unit is None else fb.high_in_unit
            low[hit] = low_rep[hit] * factor[hit]
            high[hit] = high_rep[hit] * factor[hit]
            as_written[hit] = True
        origin[hit] = bundled_id
        if fb.source not in sources:
            sources.append(fb.source)
        source[hit] = sources.index(fb.source)
    converted = (origin == bundled_id) & ~as_written
    if converted.any():
        with np.errstate(invalid="ignore", divide="ignore"):
            low_rep = _round_bundled(np.where(converted, low / factor, low_rep), converted)
            high_rep = _round_bundled(np.where(converted, high / factor, high_rep), converted)
    limits = {
        "range_low": low,
        "range_high": high,
        "range_low_reported": low_rep,
        "range_high_reported": high_rep,
    }
    return limits, _Coded(origin, origins), _Coded(source, sources)


def _equals(target: object) -> Callable[[object], bool]:
    return lambda v: v == target


def _round_bundled(values: np.ndarray, bundled: np.ndarray) -> np.ndarray:
    """Bundled limits converted into the lab's unit, shown to 4 significant digits.

    Only limits with no printing of their own in the lab's unit get here (PTH in pmol/L,
    ionized Ca in mg/dL). Three digits made a limit look equal to values on its wrong side:
    65 pg/mL is 6.8966 pmol/L, which showed as 6.9, next to a PTH of 6.9 pmol/L flagged high.
    """
    out = np.array(values, dtype=float)  # a copy
    idx = np.flatnonzero(bundled & np.isfinite(out))
    # round each distinct number once (compared bit for bit, so -0.0 stays -0.0)
    bits, where = np.unique(out[idx].view(np.int64), return_inverse=True)
    rounded = np.array([float(f"{x:.4g}") for x in bits.view(np.float64)], dtype=float)
    out[idx] = rounded[where]
    return out
