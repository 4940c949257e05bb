"""RESULTS -> FINDINGS: episodes, guards, rules, grades, evidence.

`interpret_results` is pure and deterministic (output sorted), and gives the same rows for a
patient whether it sees the whole table or any partition holding all of that patient's rows
(the audit runs it per patient partition). Every patient with an in-scope result gets a row
for every pattern rule, so counts of not_fired and indeterminate are honest; guard and
context rules report fired rows only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from os import PathLike
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from labinterp import episodes, grading, guards, schema
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
        "pth",
        "vitamin_d_first",
        "vitamin_d",
        "crp",
        "phosphate",
        "egfr",
        "alp",
    )
)
_RULE_ORDER = {rule.id: i for i, rule in enumerate(REGISTRY)}


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
) -> pd.DataFrame:
    """The FINDINGS table for a RESULTS table (see labinterp.schema)."""
    if vitamin_d_guideline not in GUIDELINES:
        raise ValueError(
            f"unknown vitamin D guideline '{vitamin_d_guideline}'; use one of {sorted(GUIDELINES)}"
        )
    results = schema.conform(results, schema.RESULTS)
    if patient is not None:
        wanted = [patient] if isinstance(patient, str) else list(patient)
        results = results[results["patient_id"].isin(wanted).to_numpy()]
    results = results[results["patient_id"].notna().to_numpy() & results["analyte"].notna()]
    if results.empty:
        return schema.empty(schema.FINDINGS)
    ctx = episodes.build(results, vitamin_d_guideline=vitamin_d_guideline)
    guards.apply_hemolysis(ctx)
    ctx.extras["edta_contamination"] = guards.edta_contamination(ctx)
    parts = []
    for rule in REGISTRY:
        out = rule.evaluate(ctx)
        if out is None or out.empty:
            continue
        out = out.assign(rule_id=rule.id, kind=rule.kind, citations=";".join(rule.citations))
        parts.append(out.reset_index(drop=True))
    if not parts:
        return schema.empty(schema.FINDINGS)
    f = pd.concat(parts, ignore_index=True)
    return _assemble(ctx, f)


def _join(*parts: Any, sep: str = "") -> pa.Array:
    """Element-wise string concatenation (nulls propagate)."""
    return pc.binary_join_element_wise(*parts, sep)


def _as_str(arr: pa.Array) -> Any:
    return pd.array(arr, dtype=schema.STR)


def _arrow(series: pd.Series) -> pa.Array:
    """A column as one pyarrow string array (no copy for arrow-backed columns)."""
    arr = series.array
    if hasattr(arr, "__arrow_array__"):
        out = pa.array(arr)
    else:
        out = pa.array(series.astype(object).where(series.notna(), None), type=pa.string())
    if isinstance(out, pa.ChunkedArray):
        out = out.combine_chunks()
    return pc.cast(out, pa.string())


def _distinct(arr: pa.Array, fmt: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """`fmt` applied once per distinct value of `arr`, then spread back to every row.

    Most evidence fields repeat a few hundred values (units, labels, ranges, printed
    results) over hundreds of thousands of rows; formatting the distinct values is what
    keeps evidence cheap (DESIGN.md: work on distinct values). Nulls stay null.
    """
    enc = pc.dictionary_encode(arr)
    return pc.take(fmt(enc.dictionary), enc.indices)


def _num_text(values: np.ndarray, digits: int) -> pa.Array:
    """Numbers as short text (rounded to `digits` decimals); null where NaN."""

    def fmt(d: pa.Array) -> pa.Array:
        text = pc.cast(pc.round(d, digits), pa.string())
        return pc.replace_substring_regex(text, r"\.0$", "")

    return _distinct(pa.array(values, from_pandas=True), fmt)


def _quoted(d: pa.Array) -> pa.Array:
    """JSON string literals, escaped without a per-row Python call."""
    d = pc.replace_substring(d, "\\", "\\\\")
    d = pc.replace_substring(d, '"', '\\"')
    d = pc.replace_substring_regex(d, r"[\x00-\x1f]", " ")
    return _join('"', d, '"')


def _json_str(arr: pa.Array) -> pa.Array:
    """JSON string literals ("null" for missing)."""
    return pc.fill_null(_distinct(arr, _quoted), "null")


def _json_num(values: np.ndarray) -> pa.Array:
    return pc.fill_null(_num_text(values, 6), "null")


def _obs_pieces(obs: pd.DataFrame, ids: np.ndarray) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """Evidence text, JSON object and range origin for the observations `ids`."""
    o = obs.iloc[ids]
    num = {
        c: o[c].to_numpy(dtype="float64", na_value=np.nan)
        for c in (
            "value",
            "value_reported",
            "range_low",
            "range_high",
            "range_low_reported",
            "range_high_reported",
            "source_row",
        )
    }
    s = {
        c: _arrow(o[c])
        for c in (
            "analyte",
            "test_label",
            "value_raw",
            "text_result",
            "comparator",
            "unit_reported",
            "unit",
            "range_origin",
        )
    }
    unit_rep = pc.fill_null(s["unit_reported"], "")
    lo, hi = _num_text(num["range_low_reported"], 4), _num_text(num["range_high_reported"], 4)
    rng = pc.coalesce(
        _join(lo, "-", hi), _join("<", hi), _join(">", lo), pa.scalar(None, pa.string())
    )
    origin_np = o["range_origin"].astype(object).fillna("unknown").to_numpy()
    origin = pc.fill_null(s["range_origin"], "unknown")
    rng = pc.coalesce(_join("range ", rng, " ", unit_rep), pa.scalar("range unknown"))
    shown = pc.coalesce(s["value_raw"], s["text_result"], pa.scalar(""))
    label = pc.coalesce(s["test_label"], s["analyte"])
    canon = pc.coalesce(
        _join(_num_text(num["value"], 4), " ", pc.fill_null(s["unit"], ""), "; "),
        pa.scalar(""),
    )
    text = _join(label, " ", shown, " ", unit_rep, " (", canon, rng, ", ", origin, ")")
    stamps = pa.array(o["t"].to_numpy(), mask=~o["dated"].to_numpy()).cast(pa.timestamp("s"))

    def iso(d: pa.Array) -> pa.Array:
        return _quoted(pc.strftime(d, format="%Y-%m-%dT%H:%M:%S"))

    when = pc.fill_null(_distinct(stamps, iso), "null")
    derived = pa.array(np.where(o["derived"].to_numpy(), "true", "false"), type=pa.string())
    body = _join(
        ',"analyte":',
        _json_str(s["analyte"]),
        ',"test":',
        _json_str(s["test_label"]),
        ',"value_raw":',
        _json_str(s["value_raw"]),
        ',"text_result":',
        _json_str(s["text_result"]),
        ',"comparator":',
        _json_str(s["comparator"]),
        ',"value_reported":',
        _json_num(num["value_reported"]),
        ',"unit_reported":',
        _json_str(s["unit_reported"]),
        ',"value":',
        _json_num(num["value"]),
        ',"unit":',
        _json_str(s["unit"]),
        ',"range_low":',
        _json_num(num["range_low"]),
        ',"range_high":',
        _json_num(num["range_high"]),
        ',"range_low_reported":',
        _json_num(num["range_low_reported"]),
        ',"range_high_reported":',
        _json_num(num["range_high_reported"]),
        ',"range_origin":',
        _json_str(s["range_origin"]),
        ',"derived":',
        derived,
        ',"collected_at":',
        when,
        ',"source_row":',
        _json_num(num["source_row"]),
        "}",
    )
    return text, body, origin_np


def _concat_rows(
    units: pa.Array,
    pos: np.ndarray,
    *,
    first: Sequence[str],
    later: Sequence[str],
    close: str,
    empty: str,
) -> pa.Array:
    """Per row, the `units` at `pos` (rows x roles, -1 = none) joined in role order.

    Role j is preceded by `first[j]` when it opens the row, else by `later[j]`; a row with
    units ends with `close`, a row without any is `empty`. Everything is one `take` from
    a small dictionary of these strings plus `units`: the taken pieces already lie in row
    order, so each row is a slice of the taken buffer and only new offsets are needed
    (one copy of the long strings, whatever the number of roles).
    """
    n, r = pos.shape
    lits = [empty, close, *first, *later]
    dictionary = pa.concat_arrays(
        [pa.array(lits, type=pa.large_string()), pc.cast(units, pa.large_string())]
    )
    has = pos >= 0
    opens = has & (np.cumsum(has, axis=1) == 1)
    col = np.arange(r)
    elems = np.full((n, 2 * r + 1), -1, dtype="int64")
    elems[:, 0 : 2 * r : 2] = np.where(has, np.where(opens, 2 + col, 2 + r + col), -1)
    elems[:, 1 : 2 * r : 2] = np.where(has, len(lits) + pos, -1)
    elems[:, 2 * r] = np.where(has.any(axis=1), 1, 0)
    # empty literals add nothing: leave them out
    blank = np.array([s == "" for s in lits] + [False], dtype=bool)
    keep = elems >= 0
    keep[keep] = ~blank[np.minimum(elems[keep], len(lits))]
    flat = elems[keep]
    taken = pc.take(dictionary, pa.array(flat, type=pa.int64()))
    offsets = np.frombuffer(taken.buffers()[1], dtype="int64")[taken.offset :]
    bounds = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
    row_offsets = np.ascontiguousarray(offsets[bounds])
    data = taken.buffers()[2] or pa.py_buffer(b"")
    return pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(row_offsets), data])


def _assemble(ctx: episodes.Context, f: pd.DataFrame) -> pd.DataFrame:
    obs = ctx.obs
    pid = ctx.patients.set_index("pat")["patient_id"]
    # Sort first, on the short key columns, so the long evidence strings are built in the
    # final order and never moved again.
    keys = pd.DataFrame(
        {
            "patient_id": pid.reindex(f["pat"].to_numpy()).to_numpy(),
            "_r": f["rule_id"].map(_RULE_ORDER).to_numpy(),
            "episode_start": pd.to_datetime(f["start"]).to_numpy(),
            "episode_end": pd.to_datetime(f["end"]).to_numpy(),
            "status": f["status"].to_numpy(),
        }
    )
    order = keys.sort_values(
        ["patient_id", "_r", "episode_start", "episode_end", "status"],
        kind="stable",
        na_position="first",
    ).index.to_numpy()
    f = f.iloc[order].reset_index(drop=True)
    keys = keys.iloc[order].reset_index(drop=True)
    n = len(f)
    present = [c for c in f.columns if c.startswith("ev_")]
    roles = [c for c in ROLE_ORDER if c in present] + sorted(set(present) - set(ROLE_ORDER))
    ids = np.full((n, len(roles)), -1, dtype="int64")
    for j, role in enumerate(roles):
        ids[:, j] = f[role].fillna(-1).to_numpy(dtype="int64")
    used = np.unique(ids[ids >= 0])
    text_u, body_u, origin_u = _obs_pieces(obs, used)
    pos = np.full(len(obs), -1, dtype="int64")
    pos[used] = np.arange(len(used))
    p = np.where(ids >= 0, pos[np.maximum(ids, 0)], -1)

    text = _as_str(
        _concat_rows(
            text_u, p, first=[""] * len(roles), later=["; "] * len(roles), close="", empty=""
        )
    )
    heads = ['{"role":"' + r[3:] + '"' for r in roles]
    js = _as_str(
        _concat_rows(
            body_u,
            p,
            first=["[" + h for h in heads],
            later=["," + h for h in heads],
            close="]",
            empty="[]",
        )
    )
    seen = {name: np.zeros(n, dtype=bool) for name in ORIGINS}
    for j in range(len(roles)):
        has = p[:, j] >= 0
        for name in ORIGINS:
            seen[name][has] |= origin_u[p[has, j]] == name
    origins = flags(*[(name, seen[name]) for name in ORIGINS])

    grade = np.full(n, np.nan)
    if "grade_obs" in f.columns:
        gobs = f["grade_obs"].fillna(-1).to_numpy(dtype="int64")
        terms = f["grade_term"].fillna("").astype(str).to_numpy()
        for term in pd.unique(terms[gobs >= 0]):
            sel = (terms == term) & (gobs >= 0)
            o = obs.iloc[gobs[sel]]
            grade[sel] = grading.grade_array(
                term,
                o["value_reported"].to_numpy(dtype="float64", na_value=np.nan),
                list(o["unit_reported"].astype(object).where(o["unit_reported"].notna(), None)),
                o["range_low_reported"].to_numpy(dtype="float64", na_value=np.nan),
                o["range_high_reported"].to_numpy(dtype="float64", na_value=np.nan),
            )

    out = pd.DataFrame(
        {
            "patient_id": keys["patient_id"].to_numpy(),
            "rule_id": f["rule_id"].to_numpy(),
            "kind": f["kind"].to_numpy(),
            "status": f["status"].to_numpy(),
            "tier": f["tier"].fillna("").to_numpy(),
            "grade": pd.Series(grade).round().astype("Int64").to_numpy(),
            "episode_start": keys["episode_start"].to_numpy(),
            "episode_end": keys["episode_end"].to_numpy(),
            "evidence": text,
            "evidence_json": js,
            "range_origin": origins,
            "missing_inputs": f["missing_inputs"].fillna("").to_numpy(),
            "suppressed_by": f["suppressed_by"].fillna("").to_numpy(),
            "caveats": f["caveats"].fillna("").to_numpy(),
            "note": f["note"].fillna("").to_numpy(),
            "citations": f["citations"].to_numpy(),
        }
    )
    out = schema.conform(out, schema.FINDINGS)
    return schema.check(out, schema.FINDINGS, "findings")
