"""Find repeated results: the same result of a patient's test at one time, given twice;
and results the lab replaced (a preliminary result by the final one, any by a correction).

Two rows of a patient, analyte and time are the same result when their comparators agree
and their numbers agree to within SAME_NUMBER of the earlier one, or to within the
rounding of the less precise one (PRINTED_ROUNDING), or their texts are equal; unless they
come from two samples (both name a specimen, and the specimens differ) or from two tests
reported in one unit (both name a LOINC code, and the codes differ; or neither does, and
the test names differ): whole-blood and serum potassium of one draw are two results, as
copies of an export keep each test's code. A row is a repeat when it is the same result
as any earlier row of its patient, analyte and time.

Works on integer codes, so the reader (which already holds codes for every field) and
`labinterp.reading.deduplicate` (which factorizes a RESULTS frame) share one rule.
Most exports repeat few results, so a cheap hash of (patient x analyte, time) first picks
the rows that could repeat one another, and the exact comparison runs on those alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd

SAME_NUMBER = 0.02  # relative tolerance: the same result converted between unit systems
# A printed number stands for every value that rounds to it: "1.2" for 1.15 to 1.25, half
# a unit in its last decimal either way. Exports round differently (Synthea's CSV prints
# one decimal, its FHIR the lab's two: 1.2 and 1.15 are one creatinine), so two numbers
# are one result when they differ by no more than this part of a unit in the last
# decimal of the less precise one (when that is more than SAME_NUMBER of them).
PRINTED_ROUNDING = 0.5
# float arithmetic must not split 1.2 from 1.25 (their difference is 0.05000000000000004)
_FLOAT_SLACK = 1e-9


@dataclass
class Rows:
    """What the rule compares, one entry per row (all int64 codes except `value` and
    `rounding`). The fields after `rank` are optional: None where not known (then they
    never keep two rows apart)."""

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
    # float64: half a unit in the last decimal of the printed value (see printed_rounding)
    # in the canonical unit; 0 or NaN where not known
    rounding: np.ndarray | None = None
    # specimen ids, LOINC codes and test names (the file's name or code of the test) as
    # codes: equal codes for equal texts, -1 where the row has none
    specimen: np.ndarray | None = None
    loinc: np.ndarray | None = None
    name: np.ndarray | None = None
    # the unit the value was reported in, as codes of what it is multiplied by in the
    # canonical unit (unit_codes: potassium's mmol/L and mEq/L alike), -1 where unknown
    unit: np.ndarray | None = None

    def at(self, rows: np.ndarray) -> Rows:
        return replace(
            self,
            **{
                f.name: getattr(self, f.name)[rows]
                for f in fields(self)
                if f.name != "no_text" and getattr(self, f.name) is not None
            },
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


def present_codes(texts: pd.Series) -> np.ndarray:
    """Codes of a text column for Rows' specimen, loinc and name: equal for equal trimmed
    texts, -1 where empty or missing."""
    codes, _ = pd.factorize(texts.astype(object).fillna("").str.strip().replace("", None))
    return codes.astype(np.int64)


def unit_codes(factor: np.ndarray) -> np.ndarray:
    """Rows' unit codes from each row's factor to the canonical unit (NaN: unknown)."""
    return pd.factorize(np.asarray(factor, dtype=np.float64))[0].astype(np.int64)


# the first number of a printed value: digits with a decimal point or comma, an exponent
_PRINTED_NUMBER = re.compile(r"(?:\d+(?:[.,](\d*))?|[.,](\d+))(?:[eE]([-+]?\d{1,4}))?")


def printed_rounding(texts: Iterable[object]) -> np.ndarray:
    """Per printed value ("4.20", "<0.5", "1.2E-3", "7"), PRINTED_ROUNDING of a unit in its
    last decimal, in the unit it is printed in (0.005, 0.05, 0.00005, 0.5); NaN where the
    text holds no number. Worked out once per distinct text."""
    codes, distinct = pd.factorize(pd.Series(list(texts), dtype=object).fillna(""))
    halves = np.full(len(distinct), np.nan)
    for i, text in enumerate(distinct):
        found = _PRINTED_NUMBER.search(str(text))
        if found:
            decimals = len(found[1] or found[2] or "") - int(found[3] or 0)
            halves[i] = PRINTED_ROUNDING * 10.0 ** -min(max(decimals, -300), 300)
    return halves[codes] if len(codes) else np.zeros(0)


def repeats(rows: Rows) -> tuple[np.ndarray, np.ndarray]:
    """(duplicates, firsts): positions of repeated rows and of the row each one repeats
    (the earliest it is the same result as).

    Of a group and time, the row of lowest `rank`, then the earliest by (file, row), is
    kept; duplicates come in (group, time, rank, file, row) order. A row is compared with
    every earlier row of its group and time, not only the first: rows printed alike are
    set aside first (a run of copies costs one comparison each), and of the others only
    neighbours by value are compared, so a run of many results stays cheap.
    """
    n = len(rows.group)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rank = np.zeros(n, dtype=np.int64) if rows.rank is None else rows.rank
    order = np.lexsort((rows.row, rows.file, rank, rows.time, rows.group))
    r = rows.at(order)
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (r.group[1:] != r.group[:-1]) | (r.time[1:] != r.time[:-1])
    run = np.cumsum(new_run) - 1
    numeric = np.isfinite(r.value)
    usable = numeric | (r.text != r.no_text)
    # what is compared: the number, else the text (by its code)
    key = np.where(numeric, r.value, r.text.astype(np.float64))
    rounding = _filled(r.rounding, n, 0.0)
    specimen, loinc, name, unit = (_filled(c, n, -1) for c in (r.specimen, r.loinc, r.name, r.unit))
    first = np.full(n, -1, dtype=np.int64)  # per position, the earliest row it repeats

    # rows alike in everything compared: each repeats the first of them
    alike = _joint_codes(run, r.comparator, numeric, key, rounding, specimen, loinc, name, unit)
    _, at_first, inverse = np.unique(alike, return_index=True, return_inverse=True)
    lead = at_first[inverse.reshape(-1)]
    alike_earlier = usable & (lead != np.arange(n))

    # the first of each kind: compared pairwise with its neighbours by value (by text,
    # which must be equal) among rows of its run and comparator
    leads = np.flatnonzero(usable & (lead == np.arange(n)))
    s = leads[np.lexsort((key[leads], numeric[leads], r.comparator[leads], run[leads]))]
    block = _joint_codes(run[s], r.comparator[s], numeric[s])
    k = key[s]
    # No pair further apart than this can be the same result (the earlier number's own
    # share is at most SAME_NUMBER of the larger one plus their difference), so a row
    # stops looking further down once the next value is beyond it.
    widest = np.zeros(run[-1] + 1)
    np.maximum.at(widest, run, rounding)
    reach = np.where(
        numeric[s],
        (SAME_NUMBER * np.abs(k) + widest[run[s]] * (1 + _FLOAT_SLACK)) / (1 - SAME_NUMBER),
        0.0,
    )
    earliest = np.full(n, n, dtype=np.int64)
    active = np.arange(1, len(s))
    step = 1
    while len(active):
        below = active - step
        diff = k[active] - k[below]
        near = (block[below] == block[active]) & (diff <= reach[active])
        active, below, diff = active[near], below[near], diff[near]
        a, b = s[below], s[active]
        early, late = np.minimum(a, b), np.maximum(a, b)
        same = _same_result(r, numeric, rounding, specimen, loinc, name, unit, early, late, diff)
        np.minimum.at(earliest, late[same], early[same])
        step += 1
        active = active[active >= step]
    repeated_lead = earliest < n
    first[repeated_lead] = earliest[repeated_lead]
    # a row alike to an earlier one repeats it, or what that one repeats
    via = lead[alike_earlier]
    first[alike_earlier] = np.where(repeated_lead[via], earliest[via], via)
    dup = np.flatnonzero(first >= 0)
    return order[dup], order[first[dup]]


def _same_result(
    r: Rows,
    numeric: np.ndarray,
    rounding: np.ndarray,
    specimen: np.ndarray,
    loinc: np.ndarray,
    name: np.ndarray,
    unit: np.ndarray,
    early: np.ndarray,
    late: np.ndarray,
    diff: np.ndarray,
) -> np.ndarray:
    """Per pair of positions (early before late, of one run, comparator and kind, `diff`
    apart by value or text code): the two rows are one result."""
    tolerance = np.maximum(
        SAME_NUMBER * np.abs(r.value[early]),
        np.maximum(rounding[early], rounding[late]) * (1 + _FLOAT_SLACK),
    )
    agree = np.where(numeric[late], diff <= tolerance, diff == 0)
    other_test = _both_differ(loinc[early], loinc[late]) | (
        (loinc[early] < 0) & (loinc[late] < 0) & _both_differ(name[early], name[late])
    )
    # the same result converted (a survey's mmol/L column beside its mg/dL one, a LOINC
    # code of moles beside one of mass) has a code of its own: only in one unit do two
    # codes make two tests
    one_unit = (unit[early] >= 0) & (unit[early] == unit[late])
    return agree & ~_both_differ(specimen[early], specimen[late]) & ~(other_test & one_unit)


def _both_differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a >= 0) & (b >= 0) & (a != b)


def _filled(codes: np.ndarray | None, n: int, missing: float) -> np.ndarray:
    if codes is None:
        return np.full(n, missing)
    return np.where(np.isnan(codes), missing, codes) if codes.dtype.kind == "f" else codes


def _joint_codes(*columns: np.ndarray) -> np.ndarray:
    """One int64 code per row for its combination of the columns' values (equal codes for
    equal combinations; NaN equal to NaN)."""
    joint = np.zeros(len(columns[0]), dtype=np.int64)
    for column in columns:
        codes, distinct = pd.factorize(column, use_na_sentinel=False)
        joint = pd.factorize(joint * len(distinct) + codes)[0].astype(np.int64)
    return joint


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
    return (
        f"the lab replaced this result with the {status} one in {file} row {row};"
        " nothing to fix: that one is read"
    )


def repeat_details(
    kept: Iterable[tuple[object, object, object]], own: Iterable[tuple[object, object]]
) -> list[str]:
    """The rejected rows' details for repeats: per repeat, the (file, row, test label) of
    the result kept and its own (file, row). A wide export prints one result in two columns
    of a row (NHANES: LBXSCA in mg/dL, LBDSCASI in mmol/L): then the column kept is named,
    as the row would name the repeat itself."""
    return [
        f"same result as column {label} of the same row; nothing to fix: that one is read"
        if (file, row) == here and label
        else f"same result as {file} row {row}; nothing to fix: that one is read"
        for (file, row, label), here in zip(kept, own, strict=True)
    ]
