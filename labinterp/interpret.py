"""RESULTS -> FINDINGS: episodes, guards, rules, grades, evidence.

`interpret_results` is pure and deterministic (output sorted), and gives the same rows for a
patient whether it sees the whole table or any partition holding all of that patient's rows
(the audit runs it per patient partition). Every patient with an in-scope result gets a row
for every pattern rule, so counts of not_fired and indeterminate are honest; guard and
context rules report fired rows only.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from os import PathLike
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from labinterp import episodes, grading, guards, schema
from labinterp.output import iso_seconds, json_strings, number_text
from labinterp.rules import REGISTRY
from labinterp.rules.common import flags
from labinterp.rules.vitamin_d_resistance import GUIDELINES

ORIGINS = ("row", "bundled", "unknown")
# Evidence is listed in this order whatever rules ran, so output does not depend on the
# partition a patient was interpreted in.
ROLE_ORDER = tuple(
    "ev_" + r
    for r in (
        "magnesium",
        "calcium",
        "calcium_total",
        "albumin",
        "potassium",
        "potassium_last",
        "pth",
        "vitamin_d_first",
        "vitamin_d_first_d2",
        "vitamin_d_first_d3",
        "vitamin_d",
        "vitamin_d_d2",
        "vitamin_d_d3",
        "crp",
        "phosphate",
        "egfr",
        "alp",
    )
)
# Roles cited to show what a derived value was worked out from, whose own ranges the rule
# did not use: they add no range origin to the finding (a D2 printed without a range
# leaves the total's bundled range the one used).
_SUMMAND_ROLES = frozenset(
    "ev_" + r for r in ("vitamin_d_first_d2", "vitamin_d_first_d3", "vitamin_d_d2", "vitamin_d_d3")
)
# Per rule, in registry order (findings of a patient are listed in this order): the text
# columns every finding of the rule shares.
_RULE_TEXT = {
    "rule_id": pa.array([rule.id for rule in REGISTRY], type=pa.large_string()),
    "kind": pa.array([rule.kind for rule in REGISTRY], type=pa.large_string()),
    "citations": pa.array([";".join(rule.citations) for rule in REGISTRY], pa.large_string()),
}
# Numeric observation columns that evidence text and evidence_json are built from (the
# text ones come from Context.codes).
_EVIDENCE_NUMBERS = (
    "value",
    "value_reported",
    "range_low",
    "range_high",
    "range_low_reported",
    "range_high_reported",
    "source_row",
)
_TEXT_NUMBERS = ("value", "range_low_reported", "range_high_reported")
# The fields of an evidence record that come from its observation (all but the role).
_RECORD_FIELDS = tuple(f for f in schema.EVIDENCE_RECORD if f.name != "role")


def interpret(
    source: Any,
    *,
    patient: str | Sequence[str] | None = None,
    vitamin_d_guideline: str = "iom2011",
    mapping: str | PathLike[str] | None = None,
    date_format: str | None = None,
) -> pd.DataFrame:
    """Findings for a lab export: a path or list of paths, a ReadResult or a RESULTS frame."""
    if isinstance(source, pd.DataFrame):
        results = source
    elif hasattr(source, "results"):
        results = source.results
    else:
        from labinterp.reading import read  # the reader is heavy; load it only when needed

        paths = [source] if isinstance(source, (str, PathLike)) else list(source)
        results = read(paths, mapping=mapping, date_format=date_format).results
    return interpret_results(results, patient=patient, vitamin_d_guideline=vitamin_d_guideline)


def interpret_results(
    results: pd.DataFrame,
    *,
    patient: str | Sequence[str] | None = None,
    vitamin_d_guideline: str = "iom2011",
    threads: int | None = None,
    evidence_json: bool = True,
) -> pd.DataFrame:
    """The FINDINGS table for a RESULTS table (see labinterp.schema).

    `threads`: how many partitions of whole patients are interpreted side by side (the
    default: one per core, for tables large enough to gain from it). The output is the
    same whatever the number.
    `evidence_json=False` leaves that column (the evidence as records) missing instead of
    building it, for callers that keep only the readable `evidence`, such as the audit.
    """
    if vitamin_d_guideline not in GUIDELINES:
        raise ValueError(
            f"unknown vitamin D guideline '{vitamin_d_guideline}'; use one of {sorted(GUIDELINES)}"
        )
    results = schema.conform(results, schema.RESULTS)
    if patient is not None:
        wanted = [patient] if isinstance(patient, str) else list(patient)
        results = results[results["patient_id"].isin(wanted).to_numpy()]
    results = results[list(episodes.INPUT_COLUMNS)]  # partitions copy no other column
    results = results[results["patient_id"].notna().to_numpy() & results["analyte"].notna()]
    if results.empty:
        return schema.empty(schema.FINDINGS)
    parts = _patient_partitions(results, threads)
    if len(parts) == 1:
        return _interpret(results, vitamin_d_guideline, evidence_json)

    # Findings are per patient and sorted by patient first, so the findings of partitions
    # of consecutive patients, put end to end, are the findings of the whole table. Most of
    # the work is in numpy and Arrow, which release the GIL, so threads use the cores
    # without copying the tables between processes; each thread also copies its own rows.
    def interpret_part(rows: np.ndarray) -> pd.DataFrame:
        return _interpret(results.take(rows), vitamin_d_guideline, evidence_json)

    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        found = list(pool.map(interpret_part, parts))
    found = [f for f in found if len(f)]
    return pd.concat(found, ignore_index=True) if found else schema.empty(schema.FINDINGS)


# Below this many result rows per thread, a partition costs more than it saves.
_ROWS_PER_THREAD = 100_000


def _patient_partitions(results: pd.DataFrame, threads: int | None) -> list[np.ndarray]:
    """The rows of up to `threads` partitions of whole patients with about equal row
    counts, in the order of the sorted patient ids (the order of the findings)."""
    if threads is None:
        threads = min(os.cpu_count() or 1, len(results) // _ROWS_PER_THREAD)
    if threads <= 1:
        return [np.arange(len(results))]
    codes = pd.factorize(results["patient_id"], sort=True)[0]
    rows_up_to = np.cumsum(np.bincount(codes))  # rows of patients 0..i
    # the first patient of each partition after the first
    starts = np.searchsorted(rows_up_to, len(results) * np.arange(1, threads) / threads) + 1
    part = np.searchsorted(starts, codes, side="right")
    return [rows for k in range(threads) if len(rows := np.flatnonzero(part == k))]


def _interpret(results: pd.DataFrame, vitamin_d_guideline: str, with_records: bool) -> pd.DataFrame:
    """interpret_results on conformed rows with a patient and an analyte."""
    ctx = episodes.build(results, vitamin_d_guideline=vitamin_d_guideline)
    guards.apply_hemolysis(ctx)
    ctx.extras["edta_contamination"] = guards.edta_contamination(ctx)
    parts = []
    for i, rule in enumerate(REGISTRY):
        out = rule.evaluate(ctx)
        if out is None or out.empty:
            continue
        parts.append(out.assign(rule=i).reset_index(drop=True))  # position in REGISTRY
    if not parts:
        return schema.empty(schema.FINDINGS)
    f = pd.concat(parts, ignore_index=True)
    return _assemble(ctx, f, with_records)


def _join(*parts: Any, sep: str = "") -> pa.Array:
    """Element-wise string concatenation (nulls propagate)."""
    return pc.binary_join_element_wise(*parts, sep)


def _text(column: pd.Series) -> Any:
    """A text column in the output dtype, cast as it is (arrow-backed columns stay in
    arrow, instead of a round trip through Python str objects)."""
    return column.astype(pd.StringDtype("pyarrow")).array  # schema.STR


def _as_str(arr: pa.Array) -> Any:
    return pd.array(arr, dtype=schema.STR)


Column = tuple[pa.Array, np.ndarray]  # (strings, per-row index into them; -1 = nothing)
Pieces = tuple[pa.Array, np.ndarray]  # (dictionary, rows x pieces codes into it; -1 = nothing)
# A column as its distinct values and each row's index into them (-1: missing).
Encoded = tuple[pa.Array, np.ndarray]
# The evidence record fields of some observations: text encoded, the rest as arrays.
Record = dict[str, Encoded | pa.Array]


def _dictionary(columns: Sequence[Column]) -> Pieces:
    """All strings of `columns` in one dictionary, with the code of each row's piece per
    column (-1 where absent or empty)."""
    parts: list[pa.Array] = []
    start: dict[int, int] = {}  # a strings array used by several columns goes in once
    base = 0
    for strings, _ in columns:
        if id(strings) not in start:
            start[id(strings)] = base
            parts.append(pc.cast(strings, pa.large_string()))
            base += len(strings)
    dictionary = pa.concat_arrays(parts) if parts else pa.array([], type=pa.large_string())
    # empty pieces add nothing: they map to -1 like absent ones
    lengths = pc.binary_length(dictionary).to_numpy(zero_copy_only=False)
    lut = np.where(lengths > 0, np.arange(len(dictionary)), -1).astype("int32")
    n = len(columns[0][1]) if columns else 0
    codes = np.empty((n, len(columns)), dtype="int32")
    for k, (strings, index) in enumerate(columns):
        codes[:, k] = np.where(index >= 0, lut[np.maximum(index, 0) + start[id(strings)]], -1)
    return dictionary, codes


def _take_rows(dictionary: pa.Array, codes: np.ndarray, rows: np.ndarray, n: int) -> pa.Array:
    """`n` strings; string i concatenates the pieces of every line of `codes` whose `rows`
    entry is i (`rows` nondecreasing), in order.

    One `take` copies the pieces in output order, so each output string is already a
    contiguous slice of the taken buffer and only new offsets are needed: one copy of the
    (long) output, whatever the number of pieces, where element-wise joins copy every
    partial result again.
    """
    keep = codes >= 0
    taken = _take_presized(dictionary, codes[keep])
    offsets = np.frombuffer(taken.buffers()[1], dtype="int64")[taken.offset :]
    per_row = np.bincount(rows, weights=keep.sum(axis=1), minlength=n).astype("int64")
    bounds = np.concatenate([[0], np.cumsum(per_row)])
    row_offsets = np.ascontiguousarray(offsets[bounds])
    data = taken.buffers()[2] or pa.py_buffer(b"")
    return pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(row_offsets), data])


def _take_presized(dictionary: pa.Array, indices: np.ndarray) -> pa.Array:
    """pc.take of a large_string `dictionary`, with its output allocated once, at its size.

    Arrow reserves (mean entry length) x (number of indices) bytes for the output of a take
    and doubles the buffer whenever that runs out. Evidence dictionaries hold mostly short
    entries (row numbers, times) while the output is long (the records' JSON text for a
    CSV: 364 MB for a million-row export), which would be grown and copied twice, and
    fresh memory is what costs most here. One more entry, never taken and never written,
    makes the mean come out at the exact size.
    """
    n = len(dictionary)
    offsets = np.frombuffer(dictionary.buffers()[1], dtype="int64")[
        dictionary.offset : dictionary.offset + n + 1
    ]
    have = int(offsets[-1] - offsets[0])
    need = int(np.diff(offsets)[indices].sum()) + 1024  # + slack for float rounding
    size = -(-need * (n + 1) // max(len(indices), 1))  # ceil: the mean Arrow will compute
    if dictionary.null_count or size <= have:
        return pc.take(dictionary, pa.array(indices))
    data = pa.allocate_buffer(size)
    if have:
        np.frombuffer(data, dtype=np.uint8)[:have] = np.frombuffer(
            dictionary.buffers()[2], dtype=np.uint8
        )[offsets[0] : offsets[-1]]
    new_offsets = pa.py_buffer(np.append(offsets - offsets[0], size))
    padded = pa.Array.from_buffers(pa.large_string(), n + 1, [None, new_offsets, data])
    return pc.take(padded, pa.array(indices))


def _with_literals(pieces: Pieces, literals: Sequence[str]) -> Pieces:
    """The same pieces, with `literals` added at the end of the dictionary."""
    extra = pa.array(list(literals), type=pa.large_string())
    return pa.concat_arrays([pieces[0], extra]), pieces[1]


def _fused(columns: Sequence[Column]) -> Column:
    """The pieces of `columns` concatenated per row, as one string per distinct
    combination of pieces, with each row's combination.

    Units, ranges, labels and printed values repeat together, so a few hundred
    combinations stand for many columns of a million rows: the strings are joined once
    per combination, and the final take copies one long piece where it would copy many
    short ones (it is fast per byte, slow per piece).
    """
    n = len(columns[0][1])
    # Mixed-radix key over the columns' indices (-1 shifted to 0), compacted (factorized)
    # only when the next column could overflow it instead of once per column.
    key = np.zeros(n, dtype="int64")
    size = 1  # every key is below this
    for strings, index in columns:
        width = len(strings) + 1
        if size * width >= 2**62:
            key, uniques = pd.factorize(key)
            size = len(uniques)
        key = key * width + (index + 1)
        size *= width
    combo, uniques = pd.factorize(key)
    first = np.empty(len(uniques), dtype="int64")
    first[combo[::-1]] = np.arange(n)[::-1]  # first row of each combination
    parts = []
    for strings, index in columns:
        pick = index[first]
        with_empty = pa.concat_arrays([pc.cast(strings, pa.string()), pa.array([""])])
        parts.append(pc.take(with_empty, np.where(pick >= 0, pick, len(strings))))
    return _join(*parts), combo


def _encode(arr: pa.Array) -> Encoded:
    """A column as its distinct values and the index of each row (-1: missing)."""
    enc = pc.dictionary_encode(arr)
    return enc.dictionary, pc.fill_null(enc.indices, -1).to_numpy().astype("int64")


def _first_present(*columns: Encoded) -> Encoded:
    """Per row, the value of the first of `columns` that has one (like coalesce), as
    indices into their values put end to end."""
    values = pa.concat_arrays([pc.cast(v, pa.string()) for v, _ in columns])
    index = np.full(len(columns[0][1]), -1, dtype="int64")
    base = 0
    for v, i in columns:
        index = np.where((index < 0) & (i >= 0), base + i, index)
        base += len(v)
    return values, index


def _marked(column: Encoded, rows: np.ndarray, mark: str) -> Encoded:
    """`column` with `mark` after the value on `rows` (a second copy of the distinct
    values carries it)."""
    values, index = column
    strings = pc.cast(values, pa.string())
    both = pa.concat_arrays([strings, _join("", strings, mark)])
    return both, np.where(rows & (index >= 0), index + len(strings), index)


def _encoded(
    column: Encoded,
    fmt: Callable[[pa.Array], pa.Array],
    *,
    before: str = "",
    after: str = "",
    missing: str | None = "",
) -> Column:
    """`before + fmt(value) + after` for each distinct value of `column`, with the row
    index.

    Formatting runs once per distinct value (DESIGN.md: work on distinct values): labels,
    units, ranges and printed results repeat a few hundred values over the rows. Missing
    values get the piece `missing` (None: no piece at all).
    """
    values, index = column
    strings = _join(before, fmt(values), after)
    if missing is None:
        return strings, index
    index = np.where(index >= 0, index, len(strings))
    return pa.concat_arrays([strings, pa.array([missing], type=pa.string())]), index


def _plain(d: pa.Array) -> pa.Array:
    return d


def _number(digits: int) -> Callable[[pa.Array], pa.Array]:
    """Numbers as short text, rounded to `digits` decimals (see output.number_text)."""
    return functools.partial(number_text, digits=digits)


def _range_pieces(lo: Encoded, hi: Encoded) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """'range LO-HI ' / 'range <HI ' / 'range >LO ' per distinct (LO, HI) pair, or
    'range unknown' when neither limit is known; with the row index and whether the
    range is known (the unit follows only a known range)."""
    lo_s, lo_i = _encoded(lo, _number(4), missing=None)
    hi_s, hi_i = _encoded(hi, _number(4), missing=None)
    pair = (lo_i + 1) * (len(hi_s) + 1) + (hi_i + 1)
    pairs, index = np.unique(pair, return_inverse=True)
    los, his = lo_s.to_pylist(), hi_s.to_pylist()
    texts = []
    for key in pairs.tolist():
        a, b = divmod(key, len(hi_s) + 1)
        low, high = (los[a - 1] if a else None), (his[b - 1] if b else None)
        if low is not None and high is not None:
            texts.append(f"range {low}-{high} ")
        elif high is not None:
            texts.append(f"range <{high} ")
        elif low is not None:
            texts.append(f"range >{low} ")
        else:
            texts.append("range unknown")
    index = index.reshape(-1)
    known = (lo_i >= 0) | (hi_i >= 0)
    return pa.array(texts, type=pa.string()), index, known


def _obs_pieces(
    ctx: episodes.Context,
    ids: np.ndarray,
    text_extra: Sequence[str],
    with_records: bool,
) -> tuple[Pieces, Record | None, np.ndarray]:
    """Pieces of the evidence text of each observation `ids`, its record (see
    EVIDENCE_RECORD; None unless `with_records`) and its range origin (position in
    ORIGINS, -1 for another). The literals `text_extra` are added at the end of the text
    pieces' dictionary."""
    obs = ctx.obs
    # the text shows the value and the reported range; the records every number
    numbers = _EVIDENCE_NUMBERS if with_records else _TEXT_NUMBERS
    num = {
        c: pa.array(obs[c].to_numpy(dtype="float64", na_value=np.nan)[ids], from_pandas=True)
        for c in numbers
    }
    enc = {c: _encode(num[c]) for c in _TEXT_NUMBERS}  # the text's numbers
    for c in ("analyte", "comparator", *episodes.TEXT_FIELDS):
        codes, values = ctx.codes(c)
        enc[c] = (values, codes[ids])
    # range origin as its position in ORIGINS (-1: none of them; missing reads "unknown")
    values, index = enc["range_origin"]
    known_origin = pc.fill_null(pc.index_in(values, pa.array(ORIGINS)), -1).to_numpy()
    origin_np = np.where(index >= 0, known_origin[index], ORIGINS.index("unknown"))

    # "Label 1.2 mg/dL (0.49 mmol/L; range 1.6-2.6 mg/dL, row)"
    label = _first_present(enc["test_label"], enc["analyte"])
    if "preliminary" in obs:  # "Label (preliminary) 1.2 mg/dL (...)": not final yet
        label = _marked(label, obs["preliminary"].to_numpy(dtype=bool)[ids], " (preliminary)")
    shown = _first_present(enc["value_raw"], enc["text_result"])
    value_s, value_i = _encoded(enc["value"], _number(4), missing=None)
    # a censored value's bound holds in the canonical unit too: "<10 ng/mL (<24.96 nmol/L"
    bounds = pa.array(episodes.CENSOR_BELOW + episodes.CENSOR_ABOVE)
    cmp_values, cmp_i = enc["comparator"]
    cmp_s = pc.if_else(pc.is_in(cmp_values, bounds), cmp_values, "")
    unit_s, unit_i = _encoded(enc["unit"], _plain, before=" ", after="; ", missing=" ; ")
    rng_s, rng_i, known_range = _range_pieces(enc["range_low_reported"], enc["range_high_reported"])
    unit_rep_s, unit_rep_i = _encoded(enc["unit_reported"], _plain)
    grade, grade_term = _obs_grades(ctx, ids, enc)
    # "; CTCAE grade N)" closes the text of a graded result (grade 1-4), ")" any other; a
    # censored result below grade 4 reads "grade >=N" (see _grade_at_least)
    grade_i = np.where(grade >= 1, np.nan_to_num(grade), 0).astype("int64")
    grade_i = np.where(_grade_at_least(grade, ctx.comparator()[ids]), grade_i + 4, grade_i)
    grade_s = pa.array(
        [")"]
        + [f"; CTCAE grade {g})" for g in range(1, 5)]
        + [f"; CTCAE grade \u2265{g})" for g in range(1, 5)]
    )
    # one piece per distinct text (the same result of the same test reads the same)
    text = _fused(
        [
            _encoded(label, _plain),
            _encoded(shown, _plain, before=" ", after=" ", missing="  "),
            _encoded(enc["unit_reported"], _plain, after=" (", missing=" ("),
            (cmp_s, np.where(value_i >= 0, cmp_i, -1)),
            (value_s, value_i),
            (unit_s, np.where(value_i >= 0, unit_i, -1)),  # canonical unit only with a value
            (rng_s, rng_i),
            (unit_rep_s, np.where(known_range, unit_rep_i, -1)),
            _encoded(enc["range_origin"], _plain, before=", ", missing=", unknown"),
            (grade_s, grade_i),
        ]
    )
    text_p = _with_literals(_dictionary([text]), text_extra)
    if not with_records:
        return text_p, None, origin_np

    def number(column: str) -> pa.Array:
        d = num[column]  # not finite: no number (JSON has none for it)
        return pc.if_else(pc.is_finite(d), d, pa.scalar(None, d.type))

    # times repeat per draw: each distinct one printed once (to the second, as the
    # audit's CSV prints them; a fraction is dropped, not rounded)
    t_codes, t_distinct = pd.factorize(obs["t"].to_numpy()[ids].view("int64"))
    t_codes[~obs["dated"].to_numpy()[ids]] = -1  # undated: null
    stamps = iso_seconds(pa.array(t_distinct, pa.int64()).cast(pa.timestamp("ns")))
    # text fields stay encoded (distinct values, index per observation) until the
    # records are taken: one copy of their strings, in record order
    record: dict[str, Encoded | pa.Array] = {
        "analyte": enc["analyte"],
        "test": enc["test_label"],
        "value_raw": enc["value_raw"],
        "text_result": enc["text_result"],
        "comparator": enc["comparator"],
        "value_reported": number("value_reported"),
        "unit_reported": enc["unit_reported"],
        "value": number("value"),
        "unit": enc["unit"],
        "range_low": number("range_low"),
        "range_high": number("range_high"),
        "range_low_reported": number("range_low_reported"),
        "range_high_reported": number("range_high_reported"),
        "range_origin": enc["range_origin"],
        "grade": pa.array(grade, mask=np.isnan(grade)).cast(pa.int64()),
        "grade_term": pa.array(grading.TERM_NAMES, pa.string()).take(pa.array(grade_term)),
        "derived": pa.array(obs["derived"].to_numpy(dtype=bool)[ids]),
        "preliminary": pa.array(
            obs["preliminary"].to_numpy(dtype=bool)[ids]
            if "preliminary" in obs
            else np.zeros(len(ids), dtype=bool)
        ),
        "source_file": enc["source_file"],
        "collected_at": (stamps, t_codes),
        "source_row": pc.cast(num["source_row"], pa.int64()),
    }
    return text_p, record, origin_np


def _grade_at_least(grade: np.ndarray, comparator: np.ndarray) -> np.ndarray:
    """Whether each grade is a least one: that of a censored result ("<0.5 mmol/L" Mg is
    grade 2 or worse) below grade 4. A censored value's grade is the least of those the
    values it allows have, the others more severe (labinterp.grading), and only grade 4
    leaves none more severe."""
    censored = np.isin(comparator, (*episodes.CENSOR_BELOW, *episodes.CENSOR_ABOVE))
    return censored & (grade >= 1) & (grade < 4)


def _obs_grades(
    ctx: episodes.Context, ids: np.ndarray, enc: dict[str, Encoded]
) -> tuple[np.ndarray, np.ndarray]:
    """The CTCAE grade of each observation `ids` as the lab reported it (NaN: none) and
    its term's position in grading.TERM_NAMES (grading.grade_results), so a grade 4 Mg
    shows where a finding's own grade is the K's.

    Not graded: the high of a hemolyzed K or Mg (not interpreted, CLINICAL.md sec. 5), and
    a total Ca with a corrected Ca worked out from it (CTCAE grades the corrected one,
    which is cited beside it: a low albumin alone lowers the total)."""
    obs = ctx.obs
    analyte_values, analyte_codes = enc["analyte"]
    unit_values, unit_codes = enc["unit_reported"]
    names = analyte_values.to_pylist()
    if "calcium" in names:
        # the total Ca rows a corrected Ca was worked out from are not graded by themselves
        corrected_from = obs["calcium_obs"].to_numpy()
        has_corrected = np.zeros(len(obs), dtype=bool)
        has_corrected[corrected_from[corrected_from >= 0]] = True
        total_ca = (analyte_codes == names.index("calcium")) & has_corrected[ids]
        analyte_codes = np.where(total_ca, -1, analyte_codes)

    def reported(column: str) -> np.ndarray:
        return obs[column].to_numpy(dtype="float64", na_value=np.nan)[ids]

    return grading.grade_results(
        analyte_codes,
        names,
        reported("value_reported"),
        unit_codes,
        unit_values.to_pylist(),
        reported("range_low_reported"),
        reported("range_high_reported"),
        ctx.comparator()[ids],
        high_not_read=obs["hemolyzed"].to_numpy(dtype=bool)[ids],
    )


def _evidence_rows(
    pieces: Pieces,
    pos: np.ndarray,
    heads: tuple[np.ndarray, np.ndarray],
    ends: tuple[int, int],
) -> pa.Array:
    """Per row, the pieces of the observations at `pos` (rows x roles, -1 = none), in
    role order. Role j is preceded by the dictionary entry `heads[0][j]` when it opens
    the row, else `heads[1][j]`; a row with evidence ends with entry `ends[0]`, a row
    without any is entry `ends[1]` (-1: nothing)."""
    dictionary, codes = pieces
    n = len(pos)
    has = pos >= 0
    row, role = np.nonzero(has)  # row-major: roles of a row in order
    obs = pos[row, role]
    opens = np.ones(len(row), dtype=bool)
    opens[1:] = row[1:] != row[:-1]
    closes = np.ones(len(row), dtype=bool)
    closes[:-1] = row[1:] != row[:-1]
    head = np.where(opens, heads[0][role], heads[1][role])
    close = np.where(closes, ends[0], -1)
    lines = np.column_stack([head, codes[obs], close]).astype("int32")
    empty = np.flatnonzero(~has.any(axis=1))
    if len(empty) and ends[1] >= 0:
        blank = np.full((len(empty), lines.shape[1]), -1, dtype="int32")
        blank[:, 0] = ends[1]
        order = np.argsort(np.concatenate([row, empty]), kind="stable")
        lines = np.concatenate([lines, blank])[order]
        row = np.concatenate([row, empty])[order]
    return _take_rows(dictionary, lines, row, n)


def _evidence_lists(record: Record, pos: np.ndarray, roles: Sequence[str]) -> Any:
    """Per row, the records of the observations at `pos` (rows x roles, -1 = none) in
    role order, each with its role: the evidence_json column (an empty list for a row
    without evidence)."""
    row, role = np.nonzero(pos >= 0)  # row-major: roles of a row in order
    at = pos[row, role]

    def field(f: pa.Field) -> pa.Array:
        column = record[f.name]
        if isinstance(column, tuple):  # encoded text: its distinct values, taken once
            values, codes = column
            index = codes[at]
            return values.take(pa.array(index, mask=index < 0)).cast(f.type)
        return column.take(pa.array(at)).cast(f.type)

    items = pa.StructArray.from_arrays(
        [pa.array(roles, pa.string()).take(pa.array(role)), *map(field, _RECORD_FIELDS)],
        fields=list(schema.EVIDENCE_RECORD),
    )
    offsets = np.zeros(len(pos) + 1, dtype=np.int32)
    np.cumsum(np.bincount(row, minlength=len(pos)), out=offsets[1:])
    return pd.arrays.ArrowExtensionArray(pa.ListArray.from_arrays(pa.array(offsets), items))


def evidence_json_text(column: pd.Series) -> pd.Series:
    """The evidence_json column (lists of records) as JSON text, as CSV output holds it:
    an array of objects per row, numbers to 6 decimals, missing rows missing.

    Built like the evidence text: each field formatted once per distinct value, the
    fields but the time and the row number fused into one piece per distinct
    combination, then one take of all pieces in output order.
    """
    lists = pa.array(column.array)
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    n = len(lists)
    items = lists.flatten()  # every row's records, end to end
    counts = pc.fill_null(pc.list_value_length(lists), 0).to_numpy().astype("int64")
    row = np.repeat(np.arange(n), counts)

    def fmt(values: pa.Array) -> Callable[[pa.Array], pa.Array]:
        if pa.types.is_floating(values.type):
            return _number(6)
        if pa.types.is_boolean(values.type) or pa.types.is_integer(values.type):
            return lambda d: pc.cast(d, pa.string())
        return json_strings

    def js(key: str, *, before: str = ",", end: str = "") -> Column:
        values = items.field(key)
        if pa.types.is_floating(values.type):  # not finite: null, as missing
            values = pc.if_else(pc.is_finite(values), values, pa.scalar(None, values.type))
        head = f'{before}"{key}":'
        return _encoded(
            _encode(values), fmt(values), before=head, after=end, missing=f"{head}null{end}"
        )

    # all fields but the time and the row number repeat together: fused
    names = [f.name for f in items.type if f.name not in ("collected_at", "source_row")]
    body = _fused([js(names[0], before="")] + [js(name) for name in names[1:]])
    # the row numbers are nearly all distinct: printed per record, not per distinct value
    source_row = pc.fill_null(pc.cast(items.field("source_row"), pa.string()), "null")
    pieces, codes = _dictionary(
        [body, js("collected_at", end=',"source_row":'), (source_row, np.arange(len(items)))]
    )
    lit = len(pieces)  # then the literals: "[{", ",{", "}", "}]", "[]"
    dictionary = pa.concat_arrays(
        [pieces, pa.array(["[{", ",{", "}", "}]", "[]"], type=pa.large_string())]
    )
    opens = np.r_[True, row[1:] != row[:-1]] if len(row) else np.zeros(0, bool)
    closes = np.r_[row[1:] != row[:-1], True] if len(row) else np.zeros(0, bool)
    lines = np.column_stack(
        [np.where(opens, lit, lit + 1), codes, np.where(closes, lit + 3, lit + 2)]
    ).astype("int32")
    empty = np.flatnonzero((counts == 0) & ~pc.is_null(lists).to_numpy(zero_copy_only=False))
    if len(empty):  # "[]", in row order among the others
        blank = np.full((len(empty), lines.shape[1]), -1, dtype="int32")
        blank[:, 0] = lit + 4
        order = np.argsort(np.concatenate([row, empty]), kind="stable")
        lines = np.concatenate([lines, blank])[order]
        row = np.concatenate([row, empty])[order]
    text = _take_rows(dictionary, lines, row, n)
    text = pc.if_else(pc.is_null(lists), pa.scalar(None, text.type), text)
    return pd.Series(_as_str(text), index=column.index)


# Columns of the rules' output that _assemble reads after sorting (and every "ev_" one).
_ASSEMBLED = frozenset(
    {
        "pat",
        "rule",
        "status",
        "tier",
        "grade_obs",
        "grade_term",
        "missing_inputs",
        "suppressed_by",
        "caveats",
        "note",
    }
)


# Caveats a finding gets from the observations it cites: (obs column, caveat).
_EVIDENCE_CAVEATS = (("conflicting", "conflicting_results"), ("preliminary", "preliminary_result"))


def _with_evidence_caveats(caveats: Any, ids: np.ndarray, obs: pd.DataFrame) -> Any:
    """`caveats` with "conflicting_results" added where the evidence (obs `ids`, rows x
    roles, -1 for none) holds a result contradicted by another at the same time, and
    "preliminary_result" where it holds one the lab has not made final."""
    for column, caveat in _EVIDENCE_CAVEATS:
        if column not in obs.columns:  # a flag no observation has (see episodes.build)
            continue
        flagged = obs[column].to_numpy(dtype=bool)
        if not flagged.any():  # nearly always: no gather over every finding's evidence
            continue
        caveats = _with_caveat(caveats, np.append(flagged, False)[ids].any(axis=1), caveat)
    return caveats


def _with_caveat(caveats: Any, where: np.ndarray, caveat: str) -> Any:
    """`caveats` (";"-joined text per row) with `caveat` added on the rows `where`."""
    if not where.any():
        return caveats
    text = pa.array(caveats, type=pa.string())
    added = pc.if_else(pc.equal(text, ""), caveat, _join(text, ";" + caveat))
    return _as_str(pc.if_else(pa.array(where), added, text))


def _assemble(ctx: episodes.Context, f: pd.DataFrame, with_records: bool) -> pd.DataFrame:
    obs = ctx.obs
    # Sort first, on the short key columns, so the long evidence strings are built in the
    # final order and never moved again.
    start = pd.to_datetime(f["start"]).to_numpy()
    end = pd.to_datetime(f["end"]).to_numpy()
    # The order of sort_values(["patient_id", rule order, "episode_start", "episode_end",
    # "status"], kind="stable", na_position="first"), on integer keys: pat codes follow the
    # sorted patient ids, NaT is the smallest int64, status ranks follow its sorted values.
    status_rank = f["status"].factorize(sort=True)[0]
    patient_rule = f["pat"].to_numpy(dtype="int64") * len(REGISTRY) + f["rule"].to_numpy()
    order = np.lexsort((status_rank, end.view("int64"), start.view("int64"), patient_rule))
    # only the columns read below are reordered (the rules' own, like anchor times, are not)
    used_columns = [c for c in f.columns if c in _ASSEMBLED or c.startswith("ev_")]
    f = f[used_columns].iloc[order].reset_index(drop=True)
    n = len(f)
    patient_of = np.searchsorted(ctx.patients["pat"].to_numpy(), f["pat"].to_numpy())
    rule = f["rule"].to_numpy()
    present = [c for c in f.columns if c.startswith("ev_")]
    roles = [c for c in ROLE_ORDER if c in present] + sorted(set(present) - set(ROLE_ORDER))
    ids = np.full((n, len(roles)), -1, dtype="int64")
    for j, role in enumerate(roles):
        column = f[role].to_numpy(dtype="float64", na_value=np.nan)  # NaN: no evidence
        ids[:, j] = np.where(np.isnan(column), -1, column)
    # the latest dated result each row cites: per observation its time, NaT (the smallest
    # int64) when undated, and NaT at the end for "no evidence" (-1)
    nat = np.iinfo("int64").min
    t_dated = np.full(len(obs) + 1, nat, dtype="int64")
    t_dated[:-1] = obs["t"].to_numpy(dtype="datetime64[ns]").view("int64")
    t_dated[:-1][~obs["dated"].to_numpy(dtype=bool)] = nat
    evidence_at = t_dated[ids].max(axis=1, initial=nat)
    mark = np.zeros(len(obs), dtype=bool)
    mark[ids[ids >= 0]] = True
    used = np.flatnonzero(mark)
    r = len(roles)
    # the separator goes at the end of the text pieces' dictionary
    text_p, records, origin_u = _obs_pieces(ctx, used, ["; "], with_records)
    pos = np.full(len(obs), -1, dtype="int64")
    pos[used] = np.arange(len(used))
    p = np.where(ids >= 0, pos[np.maximum(ids, 0)], -1)
    sep = len(text_p[0]) - 1
    text = _as_str(_evidence_rows(text_p, p, (np.full(r, -1), np.full(r, sep)), (-1, -1)))
    if records is None:  # not asked for: missing
        evidence_records = pd.arrays.ArrowExtensionArray(pa.nulls(n, schema.EVIDENCE.pyarrow_dtype))
    else:
        evidence_records = _evidence_lists(records, p, [role[3:] for role in roles])
    # the range origins seen in a row as bits (bit i: ORIGINS[i]), then one text per
    # distinct set of bits instead of string work per row
    seen = np.zeros(n, dtype="int64")
    origin_or_none = np.append(origin_u, -1)  # position -1 (no evidence) picks the -1
    for j in range(len(roles)):
        if roles[j] in _SUMMAND_ROLES:
            continue
        code = origin_or_none[p[:, j]]
        seen |= np.where(code >= 0, 1 << np.maximum(code, 0), 0)
    sets = np.arange(1 << len(ORIGINS))
    origins = flags(*[(name, sets & (1 << i) != 0) for i, name in enumerate(ORIGINS)])[seen]

    grade = np.full(n, np.nan)
    grade_at_least = np.zeros(n, dtype=bool)
    if "grade_obs" in f.columns:
        gobs = f["grade_obs"].fillna(-1).to_numpy(dtype="int64")
        term_codes, term_names = f["grade_term"].fillna("").factorize()
        for code in np.unique(term_codes[gobs >= 0]):
            term = str(term_names[code])
            sel = (term_codes == code) & (gobs >= 0)
            o = obs.iloc[gobs[sel]]
            grade[sel] = grading.grade_array(
                term,
                o["value_reported"].to_numpy(dtype="float64", na_value=np.nan),
                ctx.text_of("unit_reported", gobs[sel]).to_pylist(),
                o["range_low_reported"].to_numpy(dtype="float64", na_value=np.nan),
                o["range_high_reported"].to_numpy(dtype="float64", na_value=np.nan),
                o["comparator"].to_numpy(),
            )
            grade_at_least[sel] = _grade_at_least(grade[sel], ctx.comparator()[gobs[sel]])

    out = pd.DataFrame(
        {
            "patient_id": ctx.patients["patient_id"].array.take(patient_of),
            "rule_id": _as_str(_RULE_TEXT["rule_id"].take(rule)),
            "kind": _as_str(_RULE_TEXT["kind"].take(rule)),
            "status": _text(f["status"]),
            "tier": _text(f["tier"].fillna("")),
            "grade": pd.Series(grade).round().astype("Int64").to_numpy(),
            "episode_start": start[order],
            "episode_end": end[order],
            "evidence_at": evidence_at.view("datetime64[ns]"),
            "evidence": text,
            "evidence_json": evidence_records,
            "range_origin": origins,
            "missing_inputs": _text(f["missing_inputs"].fillna("")),
            "suppressed_by": _text(f["suppressed_by"].fillna("")),
            # a finding graded on a censored result has a least grade: the caveat says so
            "caveats": _with_caveat(
                _with_evidence_caveats(_text(f["caveats"].fillna("")), ids, obs),
                grade_at_least,
                "grade_at_least",
            ),
            "note": _text(f["note"].fillna("")),
            "citations": _as_str(_RULE_TEXT["citations"].take(rule)),
        }
    )
    out = schema.conform(out, schema.FINDINGS)
    return schema.check(out, schema.FINDINGS, "findings")
