"""RESULTS -> FINDINGS: episodes, guards, rules, grades, evidence.

`interpret_results` is pure and deterministic (output sorted), and gives the same rows for a
patient whether it sees the whole table or any partition holding all of that patient's rows
(the audit runs it per patient partition). Every patient with an in-scope result gets a row
for every pattern rule, so counts of not_fired and indeterminate are honest; guard and
context rules report fired rows only.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def _fold(pieces: list[pa.Array], sep: str) -> pa.Array | None:
    """Join per-row pieces with `sep`, skipping missing ones (null when all are missing).

    One join with a private separator, then the empty slots are squeezed out; this copies
    the (long) strings a fixed number of times whatever the number of pieces.
    """
    if not pieces:
        return None
    if len(pieces) == 1:
        return pieces[0]
    unit = "\x1f"
    joined = pc.binary_join_element_wise(
        *pieces, unit, null_handling="replace", null_replacement=""
    )
    joined = pc.replace_substring_regex(joined, "\x1f{2,}", unit)
    joined = pc.utf8_trim(joined, unit)
    joined = pc.replace_substring(joined, unit, sep)
    return pc.if_else(pc.equal(joined, ""), pa.scalar(None, pa.string()), joined)


def _num_text(values: np.ndarray, digits: int) -> pa.Array:
    """Numbers as short text (rounded to `digits` decimals); null where NaN."""
    arr = pa.array(values, from_pandas=True)
    text = pc.cast(pc.round(arr, digits), pa.string())
    return pc.replace_substring_regex(text, r"\.0$", "")


def _str(series: pd.Series) -> pa.Array:
    arr = series.array
    if hasattr(arr, "__arrow_array__"):
        return pc.cast(pa.array(arr), pa.string())
    return pa.array(series.astype(object).where(series.notna(), None), type=pa.string())


def _json_str(series: pd.Series) -> pa.Array:
    """JSON string literals ("null" for missing), escaped without a per-row Python call."""
    s = _str(series)
    s = pc.replace_substring(s, "\\", "\\\\")
    s = pc.replace_substring(s, '"', '\\"')
    s = pc.replace_substring_regex(s, r"[\x00-\x1f]", " ")
    return pc.fill_null(_join('"', s, '"'), "null")


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
    unit_rep = pc.fill_null(_str(o["unit_reported"]), "")
    lo, hi = _num_text(num["range_low_reported"], 4), _num_text(num["range_high_reported"], 4)
    rng = pc.coalesce(
        _join(lo, "-", hi), _join("<", hi), _join(">", lo), pa.scalar(None, pa.string())
    )
    origin_np = o["range_origin"].astype(object).fillna("unknown").to_numpy()
    origin = pa.array(origin_np, type=pa.string())
    rng = pc.coalesce(_join("range ", rng, " ", unit_rep), pa.scalar("range unknown"))
    shown = pc.coalesce(_str(o["value_raw"]), _str(o["text_result"]), pa.scalar(""))
    label = pc.coalesce(_str(o["test_label"]), _str(o["analyte"]))
    canon = pc.coalesce(
        _join(_num_text(num["value"], 4), " ", pc.fill_null(_str(o["unit"]), ""), "; "),
        pa.scalar(""),
    )
    text = _join(label, " ", shown, " ", unit_rep, " (", canon, rng, ", ", origin, ")")
    stamps = pa.array(o["t"].to_numpy(), mask=~o["dated"].to_numpy()).cast(pa.timestamp("s"))
    when = pd.Series(_as_str(pc.strftime(stamps, format="%Y-%m-%dT%H:%M:%S")))
    derived = pa.array(np.where(o["derived"].to_numpy(), "true", "false"), type=pa.string())
    body = _join(
        ',"analyte":',
        _json_str(o["analyte"]),
        ',"test":',
        _json_str(o["test_label"]),
        ',"value_raw":',
        _json_str(o["value_raw"]),
        ',"text_result":',
        _json_str(o["text_result"]),
        ',"comparator":',
        _json_str(o["comparator"]),
        ',"value_reported":',
        _json_num(num["value_reported"]),
        ',"unit_reported":',
        _json_str(o["unit_reported"]),
        ',"value":',
        _json_num(num["value"]),
        ',"unit":',
        _json_str(o["unit"]),
        ',"range_low":',
        _json_num(num["range_low"]),
        ',"range_high":',
        _json_num(num["range_high"]),
        ',"range_low_reported":',
        _json_num(num["range_low_reported"]),
        ',"range_high_reported":',
        _json_num(num["range_high_reported"]),
        ',"range_origin":',
        _json_str(o["range_origin"]),
        ',"derived":',
        derived,
        ',"collected_at":',
        _json_str(when),
        ',"source_row":',
        _json_num(num["source_row"]),
        "}",
    )
    return text, body, origin_np


def _assemble(ctx: episodes.Context, f: pd.DataFrame) -> pd.DataFrame:
    obs = ctx.obs
    n = len(f)
    present = [c for c in f.columns if c.startswith("ev_")]
    roles = [c for c in ROLE_ORDER if c in present] + sorted(set(present) - set(ROLE_ORDER))
    ids_by_role = {r: f[r].fillna(-1).to_numpy(dtype="int64") for r in roles}
    chosen = [v[v >= 0] for v in ids_by_role.values()]
    used = np.unique(np.concatenate([*chosen, np.array([], dtype="int64")]))
    text_u, body_u, origin_u = _obs_pieces(obs, used)
    pos = np.full(len(obs), -1, dtype="int64")
    pos[used] = np.arange(len(used))

    texts, objects = [], []
    seen = {name: np.zeros(n, dtype=bool) for name in ORIGINS}
    for role in roles:
        ids = ids_by_role[role]
        has = ids >= 0
        if not has.any():
            continue
        p = np.where(has, pos[np.maximum(ids, 0)], -1)
        idx = pa.array(p, mask=~has)
        texts.append(pc.take(text_u, idx))
        objects.append(_join('{"role":"' + role[3:] + '"', pc.take(body_u, idx)))
        for name in ORIGINS:
            seen[name][has] |= origin_u[p[has]] == name
    text_acc = _fold(texts, "; ")
    js_acc = _fold(objects, ",")
    if text_acc is None or js_acc is None:
        text = _as_str(pa.array([""] * n, type=pa.string()))
        js = _as_str(pa.array(["[]"] * n, type=pa.string()))
    else:
        text = _as_str(pc.fill_null(text_acc, ""))
        js = _as_str(pc.fill_null(_join("[", js_acc, "]"), "[]"))
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

    pid = ctx.patients.set_index("pat")["patient_id"]
    out = pd.DataFrame(
        {
            "patient_id": pid.reindex(f["pat"].to_numpy()).to_numpy(),
            "rule_id": f["rule_id"].to_numpy(),
            "kind": f["kind"].to_numpy(),
            "status": f["status"].to_numpy(),
            "tier": f["tier"].fillna("").to_numpy(),
            "grade": pd.Series(grade).round().astype("Int64").to_numpy(),
            "episode_start": pd.to_datetime(f["start"]).to_numpy(),
            "episode_end": pd.to_datetime(f["end"]).to_numpy(),
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
    out["_r"] = out["rule_id"].map(_RULE_ORDER)
    out = out.sort_values(
        ["patient_id", "_r", "episode_start", "episode_end", "status"],
        kind="stable",
        na_position="first",
    ).drop(columns="_r")
    out = schema.conform(out, schema.FINDINGS)
    return schema.check(out, schema.FINDINGS, "findings")
