"""Find repeated results: same patient, analyte and time, same value within 2 %; and
results the lab replaced (a preliminary result by the final one, any by a correction).

Works on integer codes, so the reader (which already holds codes for every field) and
`labinterp.reading.deduplicate` (which factorizes a RESULTS frame) share one rule.
Most exports repeat few results, so a cheap hash of (patient x analyte, time) first picks
the rows that could repeat one another, and the exact comparison runs on those alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

SAME_NUMBER = 0.02  # relative tolerance: the same result converted between unit systems


@dataclass
class Rows:
    """What the rule compares, one entry per row (all int64 codes except `value`)."""

    group: np.ndarray  # patient x analyte, numbered in order of first appearance
    time: np.ndarray  # collection time as int64 nanoseconds
    file: np.ndarray  # input file, numbered in reading order
    row: np.ndarray  # line or record number in that file
    value: np.ndarray  # float64 canonical value (NaN for text results)
    text: np.ndarray  # text result; equal texts have equal codes
    no_text: int  # the code of "" in `text` (-1 if absent)
    comparator: np.ndarray  # "", "<", ...; equal comparators have equal codes
    # which of a run of repeats to keep: the lowest rank, then the earliest (file, row);
    # None ranks every row alike
    rank: np.ndarray | None = None

    def at(self, rows: np.ndarray) -> Rows:
        return Rows(
            self.group[rows],
            self.time[rows],
            self.file[rows],
            self.row[rows],
            self.value[rows],
            self.text[rows],
            self.no_text,
            self.comparator[rows],
            None if self.rank is None else self.rank[rows],
        )


# 2M counters (16 MB): a third of a 1M-row export's rows share one. Twice as many
# counters would halve that, but a 32 MB array is mapped fresh from the kernel on every
# call (above the malloc mmap threshold in labinterp.memory), which measured slower.
BUCKET_BITS = 21


def candidates(group: np.ndarray, time: np.ndarray) -> np.ndarray:
    """Positions whose (group, time) occurs more than once, plus rare hash collisions.

    A collision only adds rows to compare exactly; it never makes a duplicate. Counting
    hash buckets (one pass of bincount) clears most rows before the exact hash look-up.
    """
    with np.errstate(over="ignore"):
        mixed = group.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ time.astype(np.uint64)
    bucket = (mixed >> np.uint64(64 - BUCKET_BITS)).astype(np.intp)
    shared = np.flatnonzero(np.bincount(bucket, minlength=1 << BUCKET_BITS)[bucket] > 1)
    repeated = pd.Series(mixed[shared]).duplicated(keep=False).to_numpy()
    return shared[repeated]


def same_number(value: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Per row: `value` is the number `first` is, within SAME_NUMBER of it (False where
    either is missing)."""
    with np.errstate(invalid="ignore"):
        return np.abs(value - first) <= SAME_NUMBER * np.abs(first)


def repeats(rows: Rows) -> tuple[np.ndarray, np.ndarray]:
    """(duplicates, firsts): positions of repeated rows and of the row each one repeats.

    Of a group and time, the row of lowest `rank`, then the earliest by (file, row), is
    kept; duplicates come in (group, time, rank, file, row) order.
    """
    n = len(rows.group)
    rank = np.zeros(n, dtype=np.int64) if rows.rank is None else rows.rank
    order = np.lexsort((rows.row, rows.file, rank, rows.time, rows.group))
    r = rows.at(order)
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (r.group[1:] != r.group[:-1]) | (r.time[1:] != r.time[:-1])
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(n), 0))
    same_value = same_number(r.value, r.value[run_start])
    same_text = (r.text != rows.no_text) & (r.text == r.text[run_start])
    dup = ~new_run & (r.comparator == r.comparator[run_start]) & (same_value | same_text)
    return order[dup], order[run_start[dup]]


def find(
    group: np.ndarray, time: np.ndarray, details: Callable[[np.ndarray], Rows]
) -> tuple[np.ndarray, np.ndarray]:
    """`repeats` over all rows; `details(positions)` gives the compared fields of those rows.

    Only candidate rows are asked for, so the caller never builds codes for every row.
    """
    some = candidates(group, time)
    if len(some) == 0:
        return some, some
    dups, firsts = repeats(details(some))
    return some[dups], some[firsts]


# Result statuses as ranks: a row is replaced by a row of a higher rank (0: none given).
STATUS_RANK = {"preliminary": 1, "final": 2, "corrected": 3}
_CORRECTED = STATUS_RANK["corrected"]


def replaced(
    group: np.ndarray,
    time: np.ndarray,
    specimen: Callable[[np.ndarray], np.ndarray],
    rank: np.ndarray,
    file: np.ndarray,
    row: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(replaced, by): positions of the results the lab replaced, and of the row that
    replaces each one.

    Results are the same when they share group (patient x analyte), time and specimen.
    `specimen(positions)` gives int64 codes of those rows' specimen ids (equal codes,
    equal ids); it is asked only for rows whose group and time repeat, since specimen ids
    are nearly all distinct text. Of the same result, a correction replaces the
    final and preliminary rows and the last correction by (file, row) the earlier ones; a
    final row replaces the preliminary ones. Rows without a status (rank 0) are left to
    the duplicate and conflict checks, whatever the others say, and so are several final
    rows: which of them the lab meant is not known.
    """
    empty = np.zeros(0, dtype=np.int64)
    statused = np.flatnonzero(rank > 0)
    if len(statused) < 2:
        return empty, empty
    some = statused[candidates(group[statused], time[statused])]
    if len(some) == 0:
        return empty, empty
    spec = specimen(some)  # per position in `some`
    at = np.lexsort((row[some], file[some], rank[some], spec, time[some], group[some]))
    order = some[at]
    spec = spec[at]
    n = len(order)
    same_as_next = np.zeros(n, dtype=bool)
    same_as_next[:-1] = (
        (group[order][1:] == group[order][:-1])
        & (time[order][1:] == time[order][:-1])
        & (spec[1:] == spec[:-1])
    )
    # the last row of a run ranks highest (then comes last by file and row): it stands
    is_last = ~same_as_next
    last = np.minimum.accumulate(np.where(is_last, np.arange(n), n)[::-1])[::-1]
    top = rank[order][last]
    r = rank[order]
    out = ~is_last & ((r < top) | (r == _CORRECTED))
    return order[out], order[last[out]]


def replaced_detail(status: object, file: object, row: object) -> str:
    """The rejected row's detail for a result replaced by the `status` row (file, row)."""
    return f"the lab replaced this result with the {status} one in {file} row {row}"
