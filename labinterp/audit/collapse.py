"""Per-bucket work of the audit: deduplicate, interpret, collapse episodes, tally.

`process_bucket` is the per-patient code both engines run: it receives every result row of
a set of patients (one hash bucket on the local engine, one shuffled partition on Dask),
and writes its share of the outputs as Parquet files into a folder. The final assembly
(sorting, CSV, report) happens once, in `labinterp.audit.outputs`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from labinterp import schema
from labinterp.rules.common import rank_of

# The collapsed findings table written as findings.csv / findings.parquet: one row per
# patient x rule. The chosen episode is the worst status, then the best tier, then the
# latest episode, so the row shows what a reviewer should look at first.
AUDIT_FINDINGS: dict[str, str] = {
    "patient_id": schema.STR,
    "rule_id": schema.STR,
    "kind": schema.STR,
    "status": schema.STR,
    "tier": schema.STR,
    "grade": "Int64",
    "episode_start": "datetime64[ns]",
    "episode_end": "datetime64[ns]",
    "episodes": "Int64",  # episodes of this patient x rule in the input
    "episodes_fired": "Int64",
    "evidence": schema.STR,  # key values with units of the chosen episode
    "range_origin": schema.STR,
    "missing_inputs": schema.STR,
    "suppressed_by": schema.STR,
    "caveats": schema.STR,
    "citations": schema.STR,
}

# Status severity for collapsing: a finding outranks a veto, a veto outranks "cannot tell".
STATUS_RANK = {"fired": 3, "suppressed": 2, "indeterminate": 1, "not_fired": 0}
# Stronger tiers first when one patient has several fired episodes of a rule.
TIER_RANK = {
    "supported": 2,
    "possible": 1,
    "refractory": 2,
    "concurrent": 1,
    "serial": 2,
    "single": 1,
}

# Analytes whose latest value goes into patients.csv (canonical units).
LATEST_ANALYTES: tuple[str, ...] = (
    "magnesium",
    "calcium",
    "calcium_ionized",
    "potassium",
    "albumin",
    "phosphate",
    "pth",
    "vitamin_d_25oh",
    "crp",
    "creatinine",
    "egfr",
)

# Fixed histogram bins (canonical units) so partial histograms from any bucket add up.
HISTOGRAMS: dict[str, tuple[float, float, float]] = {
    "magnesium": (0.0, 2.0, 0.05),
    "calcium": (1.0, 3.5, 0.05),
    "potassium": (2.0, 7.5, 0.1),
}


def bins(analyte: str) -> np.ndarray:
    lo, hi, step = HISTOGRAMS[analyte]
    return np.round(np.arange(lo, hi + step / 2, step), 6)


@dataclass
class BucketStats:
    """What one bucket contributes to summary.json and the report (no identifiers)."""

    rows_used: int = 0
    duplicates: int = 0
    patients: int = 0
    findings_rows: int = 0
    # analyte -> counts per bin (len(bins) + 1: under-range and over-range at the ends)
    histograms: dict[str, list[int]] = field(default_factory=dict)
    # analyte -> {"below": n, "within": n, "above": n, "no_range": n} against each row's range
    vs_range: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, other: BucketStats) -> None:
        self.rows_used += other.rows_used
        self.duplicates += other.duplicates
        self.patients += other.patients
        self.findings_rows += other.findings_rows
        for a, h in other.histograms.items():
            mine = self.histograms.setdefault(a, [0] * len(h))
            self.histograms[a] = [x + y for x, y in zip(mine, h, strict=True)]
        for a, d in other.vs_range.items():
            mine_d = self.vs_range.setdefault(a, {})
            for k, v in d.items():
                mine_d[k] = mine_d.get(k, 0) + v


def bucket_of(patient_id: pd.Series, n_buckets: int) -> np.ndarray:
    """Stable bucket number per row: the same id lands in the same bucket in every process."""
    if n_buckets == 1:
        return np.zeros(len(patient_id), dtype=np.int64)
    # hash each distinct id once (a few thousand per batch), not every row's string
    codes, uniques = pd.factorize(patient_id, use_na_sentinel=False)
    hashed = pd.util.hash_array(np.asarray(uniques, dtype=object), categorize=True)[codes]
    return (hashed % np.uint64(n_buckets)).astype(np.int64)


def arrow_to_results(table: pa.Table) -> pd.DataFrame:
    """A RESULTS frame from Parquet, with the schema's dtypes."""
    df = table.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)
    return schema.conform(df, schema.RESULTS)


def collapse(findings: pd.DataFrame) -> pd.DataFrame:
    """One row per patient x rule from the engine's per-episode findings (deterministic)."""
    if findings.empty:
        return schema.conform(pd.DataFrame(), AUDIT_FINDINGS)
    # The order of sort_values(["patient_id", "rule_id", status rank, tier rank, end,
    # start, evidence], ascending=[T, T, F, F, F, F, T], kind="mergesort"), found on
    # integer keys with one stable np.lexsort; only the chosen rows of the (wide) findings
    # are then copied.
    patient, _ = pd.factorize(findings["patient_id"], sort=True)
    rule, rules = pd.factorize(findings["rule_id"], sort=True)
    status = rank_of(findings["status"], STATUS_RANK, other=-1)
    tier = rank_of(findings["tier"], TIER_RANK, other=0)
    evidence, _ = pd.factorize(findings["evidence"].fillna(""), sort=True)
    order = np.lexsort(
        (
            evidence,
            -_ns_or_earliest(findings["episode_start"]),
            -_ns_or_earliest(findings["episode_end"]),
            -tier,
            -status,
            rule,
            patient,
        )
    )
    group = patient[order].astype("int64") * len(rules) + rule[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    first = findings.iloc[order[starts]].reset_index(drop=True)
    first["episodes"] = np.diff(np.r_[starts, len(order)])
    fired = (status[order] == STATUS_RANK["fired"]).astype("int64")
    first["episodes_fired"] = np.add.reduceat(fired, starts)
    return schema.conform(first, AUDIT_FINDINGS)


def _ns_or_earliest(column: pd.Series) -> np.ndarray:
    """Times as int64 nanoseconds, a missing time as the earliest one (sorts last when
    descending), like fillna(pd.Timestamp.min)."""
    ns = column.to_numpy(dtype="datetime64[ns]").view("int64")
    return np.where(ns == np.iinfo("int64").min, pd.Timestamp.min.value, ns)


def patient_rows(collapsed: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: worst status (with tier) per rule, then latest values."""
    pids = pd.Index(results["patient_id"].dropna().unique()).union(
        pd.Index(collapsed["patient_id"].dropna().unique())
    )
    out = pd.DataFrame(index=pids.sort_values())
    out.index.name = "patient_id"
    if not collapsed.empty:
        label = (
            collapsed["status"]
            .astype(object)
            .where(
                collapsed["tier"].fillna("").eq(""),
                collapsed["status"].astype(object) + ":" + collapsed["tier"].astype(object),
            )
        )
        wide = (
            pd.DataFrame(
                {"patient_id": collapsed["patient_id"], "rule_id": collapsed["rule_id"], "v": label}
            )
            .pivot(index="patient_id", columns="rule_id", values="v")
            .astype("string[pyarrow]")
        )
        out = out.join(wide[sorted(wide.columns)])
    # Per patient (its row in `out`): rows, earliest and latest collection time.
    row = out.index.get_indexer(pd.Index(results["patient_id"]))  # -1: no patient id
    when = results["collected_at"].to_numpy(dtype="datetime64[ns]")
    ns = when.view("int64")
    nat, never = np.iinfo("int64").min, np.iinfo("int64").max  # NaT is the smallest int64
    dated = (row >= 0) & (ns != nat)
    first = np.full(len(out), never)
    np.minimum.at(first, row[dated], ns[dated])
    last = np.full(len(out), nat)
    np.maximum.at(last, row[dated], ns[dated])
    out["results"] = pd.array(np.bincount(row[row >= 0], minlength=len(out)), dtype="Int64")
    out["first_at"] = np.where(first == never, nat, first).view("datetime64[ns]")
    out["last_at"] = last.view("datetime64[ns]")
    # The latest value of each shown analyte: per (patient, analyte), the last row in the
    # order of (collected_at, source_file, source_row), missing ones last (sort_values'
    # order), ties to the later row; one stable np.lexsort on integer keys.
    analyte = pd.Index(LATEST_ANALYTES).get_indexer(pd.Index(results["analyte"].astype(object)))
    shown = np.flatnonzero((row >= 0) & (analyte >= 0) & results["value"].notna().to_numpy())
    files, _ = pd.factorize(results["source_file"].to_numpy()[shown], sort=True)
    source_row = results["source_row"].to_numpy(dtype="float64", na_value=np.inf)[shown]
    order = shown[
        np.lexsort(
            (
                source_row,
                np.where(files < 0, np.iinfo("int64").max, files),
                np.where(ns[shown] == nat, never, ns[shown]),
                analyte[shown],
                row[shown],
            )
        )
    ]
    group = row[order].astype("int64") * len(LATEST_ANALYTES) + analyte[order]
    latest = order[np.r_[group[1:] != group[:-1], True]] if len(order) else order
    value = results["value"].to_numpy(dtype="float64", na_value=np.nan)
    unit = results["unit"].to_numpy(dtype=object)
    for k, name in enumerate(LATEST_ANALYTES):
        sel = latest[analyte[latest] == k]
        at = row[sel]
        values = np.full(len(out), np.nan)
        values[at] = value[sel]
        units = np.full(len(out), None, dtype=object)
        units[at] = unit[sel]
        times = np.full(len(out), np.datetime64("NaT"), dtype=when.dtype)
        times[at] = when[sel]
        out[f"{name}_latest"] = values
        out[f"{name}_unit"] = pd.array(units, dtype="string[pyarrow]")
        out[f"{name}_at"] = times
    return out.reset_index()


def _tally(results: pd.DataFrame, stats: BucketStats) -> None:
    # the three numeric columns and the analytes once, not a filtered copy of every column
    # per analyte
    analyte_of = pd.Index(tuple(HISTOGRAMS)).get_indexer(
        pd.Index(results["analyte"].astype(object))
    )
    value_all = results["value"].to_numpy(dtype="float64", na_value=np.nan)
    low_all = results["range_low"].to_numpy(dtype="float64", na_value=np.nan)
    high_all = results["range_high"].to_numpy(dtype="float64", na_value=np.nan)
    for k, analyte in enumerate(HISTOGRAMS):
        rows = np.flatnonzero((analyte_of == k) & ~np.isnan(value_all))
        edges = bins(analyte)
        v = value_all[rows]
        idx = np.searchsorted(edges, v, side="right")  # 0 = under, len(edges) = over
        counts = np.bincount(idx, minlength=len(edges) + 1)
        stats.histograms[analyte] = [int(x) for x in counts]
        low = low_all[rows]
        high = high_all[rows]
        below = ~np.isnan(low) & (v < low)
        above = ~np.isnan(high) & (v > high)
        no_range = np.isnan(low) & np.isnan(high)
        stats.vs_range[analyte] = {
            "below": int(below.sum()),
            "above": int(above.sum()),
            "no_range": int(no_range.sum()),
            "within": int((~below & ~above & ~no_range).sum()),
        }


# Scratch files (the buckets, and each bucket's parts for the output step) are written
# once and read once: Arrow's own file format with LZ4 writes about 4x faster than
# Parquet, at a few times the size.
SCRATCH_SUFFIX = ".arrow"
SCRATCH_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")


def read_scratch(path: Path) -> pa.Table:
    with pa.ipc.open_file(path) as scratch:
        return scratch.read_all()


def _write(df: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    with pa.ipc.new_file(path, table.schema, options=SCRATCH_OPTIONS) as writer:
        writer.write_table(table)


def process_bucket(
    results: pd.DataFrame,
    out_dir: Path,
    tag: str,
    *,
    deduplicate: Callable[[pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]],
    interpret_results: Callable[[pd.DataFrame], pd.DataFrame],
) -> BucketStats:
    """Deduplicate, interpret and collapse all rows of a set of patients; write the parts.

    Rows are put in source order first, so "the earlier row" of a duplicate pair and every
    tie-break are the same whichever engine or partitioning delivered them.
    """
    stats = BucketStats()
    results = schema.conform(results, schema.RESULTS)
    results = results.sort_values(["source_file", "source_row"], kind="mergesort")
    results = results.reset_index(drop=True)
    if results.empty:
        kept, dups = results, schema.empty(schema.REJECTED)
        findings = schema.empty(schema.FINDINGS)
    else:
        kept, dups = deduplicate(results)
        findings = interpret_results(kept)
    collapsed = collapse(findings)
    patients = patient_rows(collapsed, kept)
    stats.rows_used = len(kept)
    stats.duplicates = len(dups)
    stats.patients = int(kept["patient_id"].nunique())
    stats.findings_rows = len(findings)
    _tally(kept, stats)
    _write(collapsed, out_dir / f"findings-{tag}{SCRATCH_SUFFIX}")
    _write(patients, out_dir / f"patients-{tag}{SCRATCH_SUFFIX}")
    _write(schema.conform(dups, schema.REJECTED), out_dir / f"duplicates-{tag}{SCRATCH_SUFFIX}")
    return stats
