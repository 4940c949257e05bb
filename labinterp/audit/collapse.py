"""Per-bucket work of the audit: deduplicate, interpret, collapse episodes, tally.

`process_bucket` is the per-patient code both engines run: it receives every result row of
a set of patients (one hash bucket on the local engine, one shuffled partition on Dask),
and writes its share of the outputs as Parquet files into a folder. The final assembly
(sorting, CSV, report) happens once, in `labinterp.audit.outputs`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from labinterp import schema, units
from labinterp.episodes import sample_ids
from labinterp.guards import EDTA_AFFECTED
from labinterp.resources import reference_file
from labinterp.rules.base import TIER_RANK
from labinterp.rules.common import rank_of

# The collapsed findings table written as findings.csv / findings.parquet: one row per
# patient x rule. The chosen episode is the worst status, then the best tier, then the
# latest episode, so the row shows what a reviewer should look at first. Its columns are
# the findings table's (the same everywhere, DESIGN.md: the Python API, `interpret
# --format csv|json`), those of the chosen episode, then the audit's own.
AUDIT_COLUMNS: dict[str, str] = {
    "episodes": "Int64",  # episodes of this patient x rule in the input
    "episodes_fired": "Int64",
    # fired rows of the rules in follow_up.toml: was a test repeated after evidence_at
    # (missing for other rows, and for undated evidence), and when first
    "followed_up": "boolean",
    "follow_up_at": "datetime64[ns]",
}
# evidence_json excepted: its records for every finding of a 10M-row audit took the write
# stage past 4 GiB (5.96 GiB peak, against 2.35-2.76 without); `evidence` holds the same
# values as text, and `interpret --format json|csv` gives the records.
AUDIT_FINDINGS: dict[str, str] = {
    **{k: v for k, v in schema.FINDINGS.items() if k != "evidence_json"},
    **AUDIT_COLUMNS,
}

# Status severity for collapsing: a finding outranks a veto, a veto outranks "cannot tell".
STATUS_RANK = {"fired": 3, "suppressed": 2, "indeterminate": 1, "not_fired": 0}

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

# Fixed histogram bins so partial histograms from any bucket add up: (first edge, last
# edge, width, the unit they are set in); bins() gives the edges in the canonical unit.
HISTOGRAMS: dict[str, tuple[float, float, float, str]] = {
    # Magnesium is printed in steps of 0.1 mg/dL (0.0411 mmol/L) or 0.01 mmol/L. Bins of
    # 0.05 mmol/L held one or two 0.1 mg/dL steps in turn (1.6 and 1.7 mg/dL both fell in
    # 0.65-0.70), which drew a false cliff at the lower limit and false modes. Bins of
    # 0.2 mg/dL (0.0823 mmol/L) hold exactly two 0.1 mg/dL steps, with edges halfway
    # between printed values (1.65, 1.85 mg/dL, ...) so that no converted value lies on an
    # edge; results printed to 0.01 mmol/L fall 8 or 9 to a bin (a ripple of at most 1 in
    # 8). Steps of 0.05 mmol/L (or 0.1 mEq/L) still fall 1 or 2 to a bin: no width under
    # 0.25 mmol/L is a multiple of both 0.05 and 0.0411, and wider bins hide the range.
    "magnesium": (0.05, 5.05, 0.2, "mg/dL"),
    "calcium": (1.0, 3.5, 0.05, "mmol/L"),
    "potassium": (2.0, 7.5, 0.1, "mmol/L"),
}


def bins(analyte: str) -> np.ndarray:
    """The bin edges of `analyte`'s histogram, in its canonical unit (converted by the
    analyte table's molar mass where the bins are set in another unit)."""
    lo, hi, step, unit = HISTOGRAMS[analyte]
    return np.round(np.arange(lo, hi + step / 2, step) * units.factor(analyte, unit), 6)


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
    # analyte -> (range_low, range_high, range_origin) -> results read with that range,
    # so the report can say which range its counts are against (NaN: no limit)
    ranges: dict[str, dict[tuple[float, float, str], int]] = field(default_factory=dict)
    # samples (a patient's results of one collection time and specimen id), and of them
    # those whose results carry each quality flag the reader sets from lab comments
    samples: int = 0
    sample_quality: dict[str, int] = field(default_factory=dict)
    # results used per result status the export gave ("not_given" for none)
    result_status: dict[str, int] = field(default_factory=dict)
    # results used per source_file label (an input, or a workbook's sheet)
    used_by_label: dict[str, int] = field(default_factory=dict)

    def add(self, other: BucketStats) -> None:
        self.rows_used += other.rows_used
        for label, n in other.used_by_label.items():
            self.used_by_label[label] = self.used_by_label.get(label, 0) + n
        for status, n in other.result_status.items():
            self.result_status[status] = self.result_status.get(status, 0) + n
        self.samples += other.samples
        for flag, n in other.sample_quality.items():
            self.sample_quality[flag] = self.sample_quality.get(flag, 0) + n
        self.duplicates += other.duplicates
        self.patients += other.patients
        self.findings_rows += other.findings_rows
        for a, h in other.histograms.items():
            mine = self.histograms.setdefault(a, [0] * len(h))
            self.histograms[a] = [x + y for x, y in zip(mine, h, strict=True)]
        for a, by_range in other.ranges.items():
            mine_r = self.ranges.setdefault(a, {})
            for key, n in by_range.items():
                mine_r[key] = mine_r.get(key, 0) + n
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


@cache
def follow_up_analytes() -> dict[str, tuple[str, ...]]:
    """Per rule, the analytes a later result of which counts as following up its finding
    (reference_ranges/follow_up.toml)."""
    data = tomllib.loads(reference_file("follow_up.toml").read_text(encoding="utf-8"))
    return {rule: tuple(entry["analytes"]) for rule, entry in data.items()}


_NAT = np.iinfo("int64").min  # NaT as int64 nanoseconds


def with_follow_up(collapsed: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """`collapsed` with followed_up and follow_up_at: for each fired row of a rule in
    follow_up.toml, whether the patient has a result with a value (exact or censored, not
    a text-only result) of one of its analytes collected after the latest result the
    finding cites (evidence_at), and the time of the first one.
    Not after the episode's end: an episode of daily results can run for weeks, and the
    repeat tests a finding called for are then inside it. `results` holds every result
    of the patients in `collapsed` (one bucket or partition)."""
    n = len(collapsed)
    followed = pd.array(np.zeros(n, dtype=bool), dtype="boolean")
    followed[:] = pd.NA
    first_at = np.full(n, _NAT, dtype="int64")
    rules = follow_up_analytes()
    seen = collapsed["evidence_at"].to_numpy(dtype="datetime64[ns]").view("int64")
    asked_any = (
        (collapsed["status"] == "fired").to_numpy(dtype=bool, na_value=False)
        & collapsed["rule_id"].isin(list(rules)).to_numpy(dtype=bool, na_value=False)
        & (seen != _NAT)
    )
    if asked_any.any():
        # Each row's patient as its position among the few patients with such a finding
        # (-1: none of them) and each result's analyte as its position in `names`,
        # looked up in Arrow, not as a million Python strings.
        row_ids = _arrow_text(collapsed["patient_id"])
        asked_ids = pc.unique(row_ids.filter(pa.array(asked_any)))
        row_pat = _position(row_ids, asked_ids)
        result_pat = _position(_arrow_text(results["patient_id"]), asked_ids)
        names = sorted({a for analytes in rules.values() for a in analytes})
        analyte = _position(_arrow_text(results["analyte"]), pa.array(names, pa.string()))
        result_t = results["collected_at"].to_numpy(dtype="datetime64[ns]").view("int64")
        # a result with a value: a repeat the lab could not report ("UNABLE TO REPORT DUE
        # TO HEMOLYSIS") is the case that still needs one
        valued = results["value"].notna().to_numpy(dtype=bool, na_value=False)
        candidates = np.flatnonzero(
            (result_pat >= 0) & (analyte >= 0) & (result_t != _NAT) & valued
        )
        result_pat, analyte, result_t = (
            result_pat[candidates],
            analyte[candidates],
            result_t[candidates],
        )
        by_set: dict[tuple[str, ...], list[str]] = {}
        for rule, analytes in rules.items():
            by_set.setdefault(analytes, []).append(rule)
        for analytes, set_rules in by_set.items():
            of_rules = collapsed["rule_id"].isin(set_rules).to_numpy(dtype=bool, na_value=False)
            asked = np.flatnonzero(asked_any & of_rules)
            use = np.isin(analyte, [names.index(a) for a in analytes])
            later = _first_later(result_pat[use], result_t[use], row_pat[asked], seen[asked])
            followed[asked] = later != _NAT
            first_at[asked] = later
    out = collapsed.copy()
    out["followed_up"] = followed
    out["follow_up_at"] = first_at.view("datetime64[ns]")
    return out


def _arrow_text(column: pd.Series) -> pa.ChunkedArray:
    """A text column as Arrow strings (no copy for the Arrow-backed columns of the tables)."""
    return pa.chunked_array([pa.array(column.array, type=pa.large_string(), from_pandas=True)])


def _position(values: pa.ChunkedArray, among: pa.Array) -> np.ndarray:
    """Per value, its position in `among` (-1 where absent or missing)."""
    found = pc.index_in(values, value_set=among.cast(values.type))
    return pc.fill_null(found, -1).to_numpy().astype("int64")


def _first_later(
    pat: np.ndarray, t: np.ndarray, query_pat: np.ndarray, query_t: np.ndarray
) -> np.ndarray:
    """Per query, the first time in `t` of the query's patient that is later than the
    query's time (NaT as int64 where there is none): one sorted search on integer keys."""
    if not len(t):
        return np.full(len(query_t), _NAT, dtype="int64")
    times = np.unique(t)
    width = len(times) + 1
    # (patient, rank of time) as one int64 that sorts like the pair
    key = pat.astype("int64") * width + np.searchsorted(times, t)
    order = np.argsort(key, kind="stable")
    key, t = key[order], t[order]
    # the first time strictly after the query's, as a rank (len(times): none)
    wanted = query_pat.astype("int64") * width + np.searchsorted(times, query_t, side="right")
    pos = np.searchsorted(key, wanted)
    inside = pos < len(key)
    same = np.zeros(len(wanted), dtype=bool)
    same[inside] = key[pos[inside]] // width == query_pat[inside]
    return np.where(same, t[np.minimum(pos, len(t) - 1)], _NAT)


def _ns_or_earliest(column: pd.Series) -> np.ndarray:
    """Times as int64 nanoseconds, a missing time as the earliest one (sorts last when
    descending), like fillna(pd.Timestamp.min)."""
    ns = column.to_numpy(dtype="datetime64[ns]").view("int64")
    return np.where(ns == np.iinfo("int64").min, pd.Timestamp.min.value, ns)


def patient_rows(
    collapsed: pd.DataFrame,
    results: pd.DataFrame,
    *,
    edta_draws: pd.DataFrame | None = None,
    sample: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per patient: worst status (with tier) per rule, then latest values.

    Each latest value comes with `<analyte>_quality`: "hemolyzed" when its sample was
    noted as hemolyzed (on any of its results, as the engine reads it), and
    "edta_suspected" when it is a K, Ca or Mg of a draw the EDTA guard flagged
    (`edta_draws`: patient_id and episode_start of its fired findings), ";"-joined; ""
    for neither. `sample` is each result's sample (sample_of), when already at hand."""
    # Each row's patient as its position among the sorted ids, from one factorize of the
    # Arrow column (a string index lookup per row costs more); a finding's patient always
    # has results, but an id that has none still gets its row.
    row, pids = pd.factorize(results["patient_id"], sort=True)  # -1: no patient id
    pids = pd.Index(pids)
    extra = pd.Index(collapsed["patient_id"].dropna().unique()).difference(pids)
    if len(extra):
        union = pids.union(extra)
        row = np.where(row >= 0, union.get_indexer(pids)[row], -1)
        pids = union
    columns: dict[str, object] = {}
    if not collapsed.empty:
        # per rule, the status of each patient, with its tier after a colon if it has one
        # (collapsed holds one row per patient and rule)
        status = pa.array(collapsed["status"].array, type=pa.large_string(), from_pandas=True)
        tier = pa.array(collapsed["tier"].array, type=pa.large_string(), from_pandas=True)
        tier = pc.fill_null(tier, "")
        colon = pa.scalar(":", pa.large_string())
        label = pc.if_else(
            pc.equal(tier, ""), status, pc.binary_join_element_wise(status, tier, colon)
        )
        at = pids.get_indexer(collapsed["patient_id"])
        rule, rules = pd.factorize(collapsed["rule_id"], sort=True)
        for k, name in enumerate(rules):
            sel = np.flatnonzero((rule == k) & (at >= 0))
            columns[str(name)] = _pick(label, sel, at[sel], len(pids))
    # Per patient (its position in `pids`): rows, earliest and latest collection time.
    when = results["collected_at"].to_numpy(dtype="datetime64[ns]")
    ns = when.view("int64")
    nat, never = np.iinfo("int64").min, np.iinfo("int64").max  # NaT is the smallest int64
    dated = (row >= 0) & (ns != nat)
    first = np.full(len(pids), never)
    np.minimum.at(first, row[dated], ns[dated])
    last = np.full(len(pids), nat)
    np.maximum.at(last, row[dated], ns[dated])
    columns["results"] = pd.array(np.bincount(row[row >= 0], minlength=len(pids)), dtype="Int64")
    columns["first_at"] = np.where(first == never, nat, first).view("datetime64[ns]")
    columns["last_at"] = last.view("datetime64[ns]")
    columns["mg_lowering_medicines"] = _medicines_per_patient(results, row, len(pids))
    # The latest value of each shown analyte: per (patient, analyte), the last row in the
    # order of (collected_at, source_file, source_row), missing ones last (sort_values'
    # order), ties to the later row; one stable np.lexsort on integer keys.
    analyte = _position_in(results["analyte"], LATEST_ANALYTES)
    shown = np.flatnonzero((row >= 0) & (analyte >= 0) & results["value"].notna().to_numpy())
    files = pd.factorize(results["source_file"], sort=True)[0][shown]
    source_row = results["source_row"].to_numpy(dtype="float64", na_value=np.inf)[shown]
    # (patient, analyte) as one key: one sort pass less
    group = row[shown].astype("int64") * len(LATEST_ANALYTES) + analyte[shown]
    order = np.lexsort(
        (
            source_row,
            np.where(files < 0, np.iinfo("int64").max, files),
            np.where(ns[shown] == nat, never, ns[shown]),
            group,
        )
    )
    group = group[order]
    latest = shown[order[np.r_[group[1:] != group[:-1], True]]] if len(order) else shown
    # as the findings print numbers (labinterp.output.number_text): 4 decimals, so that
    # 1.4 mg/dL reads 0.576, not 0.5760131660152232; the column stays numeric
    value = np.round(results["value"].to_numpy(dtype="float64", na_value=np.nan), 4)
    unit = pa.array(results["unit"].array, from_pandas=True)
    notes = _latest_notes(results, latest, row, pids, analyte, ns, edta_draws, sample)
    # "<" or ">" of a censored latest value ("<0.5 mg/dL" is read as 0.206 mmol/L, a bound)
    comparator = pa.array(results["comparator"].array, from_pandas=True)
    for k, name in enumerate(LATEST_ANALYTES):
        sel = latest[analyte[latest] == k]
        at = row[sel]
        values = np.full(len(pids), np.nan)
        values[at] = value[sel]
        times = np.full(len(pids), np.datetime64("NaT"), dtype=when.dtype)
        times[at] = when[sel]
        columns[f"{name}_latest"] = values
        columns[f"{name}_comparator"] = _pick(comparator, sel, at, len(pids))
        columns[f"{name}_unit"] = _pick(unit, sel, at, len(pids))
        columns[f"{name}_at"] = times
        columns[f"{name}_quality"] = _pick(
            notes, np.flatnonzero(analyte[latest] == k), at, len(pids)
        )
    # one frame made at once: one grown a column at a time copies its columns every time
    out = pd.DataFrame(columns, index=pids)
    out.index.name = "patient_id"
    return out.reset_index()


def sample_of(results: pd.DataFrame) -> np.ndarray:
    """Each result's sample (a dense id): a patient's results with one collection time and
    specimen id (undated results: one per patient and specimen id), as the engine pairs
    them."""
    patient = pd.factorize(results["patient_id"])[0]
    when = pd.factorize(results["collected_at"].to_numpy().view("int64"))[0]
    # the reader gives specimen ids stripped, and "" as missing: missing is one more code
    spec = pd.factorize(results["specimen_id"], use_na_sentinel=False)[0]
    return sample_ids(patient, when, spec)


def _noted(results: pd.DataFrame) -> np.ndarray:
    """The positions of the results that carry any quality flag (few do)."""
    return np.flatnonzero((results["quality"].fillna("") != "").to_numpy(dtype=bool))


def _has_flag(results: pd.DataFrame, flag: str, noted: np.ndarray | None = None) -> np.ndarray:
    """Per result, whether its quality flags hold `flag` (a whole entry of the ";"-joined
    flags: "not_hemolyzed" is not "hemolyzed"). `noted`: _noted(results), if at hand."""
    out = np.zeros(len(results), dtype=bool)
    noted = _noted(results) if noted is None else noted
    if len(noted):  # the pattern runs on the few flagged results only
        has = results["quality"].iloc[noted].str.contains(rf"(?:^|;){flag}(?:;|$)")
        out[noted] = has.to_numpy(dtype=bool, na_value=False)
    return out


def _latest_notes(
    results: pd.DataFrame,
    latest: np.ndarray,
    row: np.ndarray,
    pids: pd.Index,
    analyte: np.ndarray,
    ns: np.ndarray,
    edta_draws: pd.DataFrame | None,
    sample: np.ndarray | None,
) -> pa.Array:
    """Per latest result (`latest`: its rows of `results`), what a reader of its value must
    know about its sample: "hemolyzed", "edta_suspected", both ";"-joined, or ""."""
    hemolyzed = np.zeros(len(latest), dtype=bool)
    flagged = _has_flag(results, "hemolyzed")
    if flagged.any():
        # hemolysis is the tube's: labs often note it on the K only, and the engine reads
        # every result of the sample as hemolyzed
        sample = sample_of(results) if sample is None else sample
        hemolyzed = np.isin(sample[latest], sample[flagged])
    edta = np.zeros(len(latest), dtype=bool)
    if edta_draws is not None and len(edta_draws):
        # a flagged draw as (its patient's position in `pids`, its time): the few latest
        # K, Ca and Mg of those patients are then looked up one by one
        draw_pat = pids.get_indexer(pd.Index(edta_draws["patient_id"]))
        draw_t = edta_draws["episode_start"].to_numpy(dtype="datetime64[ns]").view("int64")
        draws = {(int(p), int(t)) for p, t in zip(draw_pat, draw_t, strict=True) if t != _NAT}
        affected = [LATEST_ANALYTES.index(a) for a in EDTA_AFFECTED if a in LATEST_ANALYTES]
        candidates = np.isin(analyte[latest], affected) & np.isin(row[latest], draw_pat)
        for i in np.flatnonzero(candidates):
            edta[i] = (int(row[latest[i]]), int(ns[latest[i]])) in draws
    text = np.select(
        [hemolyzed & edta, hemolyzed, edta],
        ["hemolyzed;edta_suspected", "hemolyzed", "edta_suspected"],
        "",
    )
    return pa.array(text.astype(object), pa.string())


def _medicines_per_patient(results: pd.DataFrame, row: np.ndarray, patients: int) -> np.ndarray:
    """Per patient (its position `row` of each result), the medicines that often lower Mg
    its results were read with ("furosemide; omeprazole"; "" for none), so a reviewer can
    filter the patients on a PPI or diuretic."""
    listed = np.full(patients, "", dtype=object)
    medicines = results["mg_lowering_medicines"]
    named = np.flatnonzero(medicines.notna().to_numpy() & (row >= 0))
    if len(named):  # only exports that list medicines have any
        pairs = pd.DataFrame({"at": row[named], "names": medicines.iloc[named].to_numpy()})
        per = (
            pairs.drop_duplicates()
            .groupby("at")["names"]
            .agg(lambda texts: "; ".join(sorted({n for t in texts for n in t.split("; ")})))
        )
        listed[per.index.to_numpy()] = per.to_numpy()
    return listed


def _position_in(column: pd.Series, names: tuple[str, ...]) -> np.ndarray:
    """Per row, the position of its value in `names` (-1: another value or missing),
    looked up once per distinct value."""
    codes, uniques = pd.factorize(column)
    return np.append(pd.Index(names).get_indexer(uniques), -1)[codes]


def _pick(
    text: pa.Array, rows: np.ndarray, at: np.ndarray, n: int
) -> pd.api.extensions.ExtensionArray:
    """`n` strings: text[rows[i]] at position at[i], missing elsewhere."""
    pick = np.full(n, -1, dtype="int64")
    pick[at] = rows
    return pd.array(text.take(pa.array(pick, mask=pick < 0)), dtype="string[pyarrow]")


# Quality flags of labinterp.normalize.quality_flags that describe the sample, as the report
# lists them.
SAMPLE_FLAGS = ("hemolyzed", "clotted", "lipemic", "icteric", "contamination_comment")


def _tally_samples(results: pd.DataFrame, sample: np.ndarray, stats: BucketStats) -> None:
    """How many samples the rows come from, and how many carry each of SAMPLE_FLAGS.

    A sample is a patient's rows with one collection time and specimen id (undated rows:
    one per patient and specimen id), as the engine pairs them; a flag noted on any of
    its rows counts the sample once."""
    if results.empty:
        return
    stats.samples = int(sample.max()) + 1
    noted = _noted(results)
    for flag in SAMPLE_FLAGS:
        n = len(np.unique(sample[_has_flag(results, flag, noted)]))
        if n:
            stats.sample_quality[flag] = n


def _tally_status(results: pd.DataFrame, stats: BucketStats) -> None:
    """How many of the results used carry each result status (see RESULTS.result_status)."""
    status = results["result_status"]
    given = int(status.count())
    if given < len(status):
        stats.result_status["not_given"] = len(status) - given
    if given:
        for name, n in status.value_counts().items():
            stats.result_status[str(name)] = int(n)


def _tally(results: pd.DataFrame, stats: BucketStats) -> None:
    # the three numeric columns and the analytes once, not a filtered copy of every column
    # per analyte
    analyte_of = _position_in(results["analyte"], tuple(HISTOGRAMS))
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
        ranged = rows[~no_range]
        if len(ranged):
            stats.ranges[analyte] = _count_ranges(
                low_all[ranged], high_all[ranged], results["range_origin"].iloc[ranged]
            )


def _count_ranges(
    low: np.ndarray, high: np.ndarray, origin: pd.Series
) -> dict[tuple[float, float, str], int]:
    """Results per (low, high, origin): a lab prints a handful of ranges, so each column
    is factorized and the combined codes counted (a third of a groupby's time)."""
    low_code, lows = pd.factorize(low, use_na_sentinel=False)
    high_code, highs = pd.factorize(high, use_na_sentinel=False)
    origin_code, origins = pd.factorize(origin.fillna(""), use_na_sentinel=False)
    key = (low_code.astype("int64") * len(highs) + high_code) * len(origins) + origin_code
    key_code, keys = pd.factorize(key)
    counts = np.bincount(key_code)
    out: dict[tuple[float, float, str], int] = {}
    for k, n in zip(keys.tolist(), counts.tolist(), strict=True):
        lo_hi, o = divmod(k, len(origins))
        lo, hi = divmod(lo_hi, len(highs))
        out[(float(lows[lo]), float(highs[hi]), str(origins[o]))] = int(n)
    return out


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
    collapsed = with_follow_up(collapse(findings), kept)
    sample = sample_of(kept) if len(kept) else np.zeros(0, dtype="int64")
    edta = findings[
        (findings["rule_id"] == "edta_contamination").to_numpy(dtype=bool, na_value=False)
        & (findings["status"] == "fired").to_numpy(dtype=bool, na_value=False)
    ]
    patients = patient_rows(collapsed, kept, edta_draws=edta, sample=sample)
    stats.rows_used = len(kept)
    if len(kept):
        for label, n in kept["source_file"].value_counts(dropna=False).items():
            stats.used_by_label[str(label)] = int(n)
    stats.duplicates = len(dups)
    stats.patients = int(kept["patient_id"].nunique())
    stats.findings_rows = len(findings)
    _tally(kept, stats)
    _tally_samples(kept, sample, stats)
    _tally_status(kept, stats)
    _write(collapsed, out_dir / f"findings-{tag}{SCRATCH_SUFFIX}")
    _write(patients, out_dir / f"patients-{tag}{SCRATCH_SUFFIX}")
    _write(schema.conform(dups, schema.REJECTED), out_dir / f"duplicates-{tag}{SCRATCH_SUFFIX}")
    return stats
