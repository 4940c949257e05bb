"""Assemble the audit folder from the per-bucket parts: tables, summary.json, report.html.

Every file is written to a temporary name beside its target and renamed into place
(labinterp.atomic). findings.csv is sorted by patient and rule and holds no timestamps of
the run, so the same inputs give the same bytes whichever engine or bucket count ran.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import tomllib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from labinterp import __version__, schema
from labinterp.atomic import atomic_path, replace_keeping_mode, write_text
from labinterp.audit.collapse import (
    AUDIT_FINDINGS,
    LATEST_ANALYTES,
    SAMPLE_FLAGS,
    SCRATCH_SUFFIX,
    BucketStats,
    bins,
    follow_up_analytes,
    read_scratch,
)
from labinterp.catalog import UNRECOGNISED_STATUS, USABLE_STATUSES
from labinterp.output import write_csv
from labinterp.reading import unused_patients
from labinterp.resources import data_dir, reference_file
from labinterp.staging import interrupts_deferred

REJECTED_COLUMNS = (
    "source_file",
    "source_row",
    "patient_id",
    "reason",
    "detail",
    "test",
    "value_raw",
    "unit_raw",
)


class OutputsWritten(KeyboardInterrupt):
    """An interrupt (Ctrl-C, or SIGTERM through the CLI's handler) that came once every
    output was in place: the output folder holds this audit's complete outputs."""

    def __init__(self, output_dir: Path) -> None:
        super().__init__(f"interrupted once the outputs were written to '{output_dir}'")
        self.output_dir = output_dir


@dataclass
class Completion:
    """Whether this audit's outputs have replaced the previous ones (all of them)."""

    outputs_in_place: bool = False


def _read_parts(parts: Path, prefix: str) -> pa.Table | None:
    files = sorted(parts.glob(f"{prefix}-*{SCRATCH_SUFFIX}"))
    tables = [t for t in map(read_scratch, files) if t.num_rows]
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def _sorted(table: pa.Table, keys: Iterable[str]) -> pa.Table:
    return table.take(pc.sort_indices(table, [(k, "ascending") for k in keys]))


def _write_csv_atomic(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        write_csv(table, tmp)


def _write_parquet_atomic(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _empty_findings() -> pa.Table:
    return pa.Table.from_pandas(schema.empty(AUDIT_FINDINGS), preserve_index=False)


def ruleset() -> dict[str, Any]:
    """The ruleset version and every parameter used (from the bundled parameter file), and
    the sha256 of every reference file (the tables that change values as well as the
    rules: molar masses, unit aliases, fallback ranges, follow-up tests), each and
    combined, so that two audits with the same provenance read with the same tables."""
    path = reference_file("rule_parameters.toml")
    raw = path.read_bytes()
    files = reference_hashes()
    combined = hashlib.sha256(
        "".join(f"{name}\0{digest}\n" for name, digest in files.items()).encode("utf-8")
    )
    return {
        "labinterp_version": __version__,
        "parameters_file": path.name,
        "parameters_sha256": hashlib.sha256(raw).hexdigest(),
        "parameters": tomllib.loads(raw.decode("utf-8")),
        # sha256 of the lines "<file>\0<its sha256>\n" of reference_files, in their order
        "reference_sha256": combined.hexdigest(),
        "reference_files": files,
    }


def reference_hashes() -> dict[str, str]:
    """Every file under reference_ranges/ (its path there, with "/") -> its sha256, sorted
    by path; hidden files and caches left out."""
    root = data_dir("reference_ranges")
    out = {}
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if not path.is_file() or any(p.startswith(".") or p == "__pycache__" for p in parts):
            continue
        out["/".join(parts)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return dict(sorted(out.items()))


def options(
    *, mapping: str | os.PathLike[str] | None, date_format: str | None, vitamin_d_guideline: str
) -> dict[str, Any]:
    """The options that change how the inputs are read and interpreted: the mapping file by
    its name (not its path on this machine) and sha256."""
    mapping_info = None
    if mapping is not None:
        path = Path(mapping)
        mapping_info = {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        "date_format": date_format,
        "mapping": mapping_info,
        "vitamin_d_guideline": vitamin_d_guideline,
    }


def _follow_up(findings: pa.Table) -> dict[str, dict[str, Any]]:
    """Per rule of follow_up.toml: the analytes that count, and how many patients' fired
    findings were followed by one of them, were not, or cannot tell (undated evidence)."""
    out: dict[str, dict[str, Any]] = {
        rule: {"analytes": list(names), "followed_up": 0, "not_followed_up": 0, "undated": 0}
        for rule, names in sorted(follow_up_analytes().items())
    }
    fired = findings.filter(pc.equal(findings.column("status"), "fired"))
    fired = fired.filter(pc.is_in(fired.column("rule_id"), pa.array(list(out))))
    if not fired.num_rows:
        return out
    outcome = pc.if_else(
        pc.is_null(fired.column("followed_up")),
        "undated",
        pc.if_else(fired.column("followed_up"), "followed_up", "not_followed_up"),
    )
    tally = (
        pa.table({"rule_id": fired.column("rule_id"), "outcome": outcome})
        .group_by(["rule_id", "outcome"])
        .aggregate([([], "count_all")])
    )
    for row in tally.to_pylist():
        out[row["rule_id"]][row["outcome"]] = int(row["count_all"])
    return out


def _counts(findings: pa.Table) -> dict[str, dict[str, dict[str, int]]]:
    """rule -> status -> tier ("" when none) -> patients."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    if not findings.num_rows:
        return out
    grouped = (
        findings.select(["rule_id", "status", "tier"])
        .group_by(["rule_id", "status", "tier"])
        .aggregate([([], "count_all")])
        .to_pylist()
    )
    for row in sorted(grouped, key=lambda r: (r["rule_id"], r["status"], r["tier"] or "")):
        rule = out.setdefault(row["rule_id"], {})
        rule.setdefault(row["status"], {})[row["tier"] or ""] = int(row["count_all"])
    return out


def _fired_caveats(findings: pa.Table) -> dict[str, dict[str, int]]:
    """rule -> caveat -> patients whose fired finding carries it (findings.csv has one row
    per patient and rule): how many rest on total Ca alone, come with a CRP, a listed
    medicine, a preliminary result, and so on."""
    fired = findings.filter(pc.equal(findings.column("status"), "fired"))
    if not fired.num_rows:
        return {}
    split = pc.split_pattern(pc.fill_null(fired.column("caveats"), ""), ";")
    flat = pa.table(
        {
            "rule_id": pc.take(fired.column("rule_id"), pc.list_parent_indices(split)),
            "caveat": pc.list_flatten(split),
        }
    )
    flat = flat.filter(pc.not_equal(flat.column("caveat"), ""))
    out: dict[str, dict[str, int]] = {}
    grouped = flat.group_by(["rule_id", "caveat"]).aggregate([([], "count_all")]).to_pylist()
    for row in sorted(grouped, key=lambda r: (r["rule_id"], r["caveat"])):
        out.setdefault(row["rule_id"], {})[row["caveat"]] = int(row["count_all"])
    return out


def _with_file_balance(
    files: list[dict[str, Any]],
    rejected: pa.Table,
    used_by_label: dict[str, int],
    file_of_label: dict[str, int],
) -> list[dict[str, Any]]:
    """Each input file's entry with its rows used and rejected, each counted, so a reviewer
    can check rows_in = rows_used + rows_rejected file by file. A workbook's sheets,
    labelled "file.xlsx[Sheet]", count for their file through `file_of_label` (from the
    reading pass), not by their name: "lab.csv[2].csv" may be a file of its own."""
    used = [0] * len(files)
    rejected_n = [0] * len(files)
    for label, n in used_by_label.items():
        if label in file_of_label:
            used[file_of_label[label]] += n
    if rejected.num_rows:
        for row in rejected.column("source_file").value_counts().to_pylist():
            label = str(row["values"])
            if label in file_of_label:
                rejected_n[file_of_label[label]] += int(row["counts"])
    return [
        {**info, "rows_used": used[i], "rows_rejected": rejected_n[i]}
        for i, info in enumerate(files)
    ]


def _common_ranges(
    ranges: dict[str, dict[tuple[float, float, str], int]], keep: int = 5
) -> dict[str, list[dict[str, Any]]]:
    """Per analyte, the `keep` ranges most results were read with: low and high (None for
    no limit), origin ("row": printed with the result, "bundled": the adult fallback)
    and results; ties in the order of the range, for the same bytes every run."""

    def limit(v: float) -> float | None:
        # 4 decimals, as the findings print numbers (a mg/dL range converted is 0.6583...)
        return None if math.isnan(v) else round(v, 4)

    out: dict[str, list[dict[str, Any]]] = {}
    for analyte, counts in sorted(ranges.items()):
        ordered = sorted(
            counts.items(),
            key=lambda kv: (
                -kv[1],
                math.inf if math.isnan(kv[0][0]) else kv[0][0],
                math.inf if math.isnan(kv[0][1]) else kv[0][1],
                kv[0][2],
            ),
        )
        out[analyte] = [
            {"low": limit(lo), "high": limit(hi), "origin": origin, "results": n}
            for (lo, hi, origin), n in ordered[:keep]
        ]
    return out


def _collection_times(files: list[dict[str, Any]]) -> str:
    kinds = {f.get("collection_times", "as_printed") for f in files}
    return "mixed" if len(kinds) > 1 else kinds.pop() if kinds else "as_printed"


def write_outputs(
    out: Path,
    work: Path,
    parts: Path,
    *,
    ingest: Any,
    stats: BucketStats,
    engine: str,
    vitamin_d_guideline: str,
    timings: dict[str, float],
    started: float,
    mapping: str | os.PathLike[str] | None = None,
    date_format: str | None = None,
    completion: Completion | None = None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    # Every output is written to a staging folder first (in the scratch folder, on the same
    # disk), then all are moved into `out` at once: an audit stopped while writing leaves
    # the previous outputs whole and together, never some from each run.
    stage = work / "staged"
    stage.mkdir()
    findings = _read_parts(parts, "findings")
    findings = (
        _empty_findings() if findings is None else _sorted(findings, ["patient_id", "rule_id"])
    )
    findings = findings.cast(_empty_findings().schema)

    patients = _read_parts(parts, "patients")
    if patients is None:
        patients = pa.table({"patient_id": pa.array([], pa.string())})
    patients = _sorted(patients, ["patient_id"])
    rule_cols = sorted(
        c
        for c in patients.column_names
        if c not in {"patient_id", "results", "first_at", "last_at", "mg_lowering_medicines"}
        and not any(c.startswith(f"{a}_") for a in LATEST_ANALYTES)
    )
    tail = [c for c in patients.column_names if c not in rule_cols and c != "patient_id"]
    patients = patients.select(["patient_id", *rule_cols, *tail])

    rejected_parts = []
    if (work / "rejected.parquet").exists():
        rejected_parts.append(pq.read_table(work / "rejected.parquet"))
    dups = _read_parts(parts, "duplicates")
    if dups is not None:
        rejected_parts.append(dups)
    if rejected_parts:
        rejected = pa.concat_tables(rejected_parts, promote_options="permissive")
    else:
        rejected = pa.Table.from_pandas(schema.empty(schema.REJECTED), preserve_index=False)
    rejected = _sorted(
        rejected.select(list(REJECTED_COLUMNS)), ["source_file", "source_row", "reason"]
    )

    # Arrow formats and writes without holding the GIL, so the tables are written side by
    # side (write stage of a 1M-row audit 0.57-0.59 -> 0.41-0.45 s, 10M: 7.8-9.0 -> 5.6-7.3 s)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as writers:
        written = [
            writers.submit(_write_csv_atomic, stage / "findings.csv", findings),
            writers.submit(_write_parquet_atomic, stage / "findings.parquet", findings),
            writers.submit(_write_csv_atomic, stage / "patients.csv", patients),
            writers.submit(_write_csv_atomic, stage / "rejected_rows.csv", rejected),
        ]
        for done in written:
            done.result()  # a failed write raises here

    by_reason: dict[str, int] = {}
    if rejected.num_rows:
        for row in rejected.column("reason").value_counts().to_pylist():
            by_reason[str(row["values"])] = int(row["counts"])
    rows_rejected = int(rejected.num_rows)
    unused = unused_patients(rejected, patients.column("patient_id"))
    timings = dict(timings)
    timings["write_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    caveats = _fired_caveats(findings)
    summary: dict[str, Any] = {
        "labinterp_version": __version__,
        "engine": engine,
        "rows_in": int(ingest.rows_in),
        "rows_used": int(stats.rows_used),
        "rows_rejected": rows_rejected,
        "rows_rejected_by_reason": dict(sorted(by_reason.items())),
        "rows_balanced": int(ingest.rows_in) == int(stats.rows_used) + rows_rejected,
        "patients": int(stats.patients),
        # patients of the rejected rows with no row used: no finding could be made for
        # them (by reason: how many have rows of it; a damaged id is not counted)
        "patients_all_rows_rejected": {
            "patients": unused.patients,
            "by_reason": unused.by_reason,
        },
        "findings_rows": int(findings.num_rows),
        "episodes": int(stats.findings_rows),
        "counts": _counts(findings),
        # fired findings with a later test of what follow_up.toml names for the rule
        "follow_up": _follow_up(findings),
        "fired_caveats": caveats,
        "ruleset": {**ruleset(), "vitamin_d_guideline": vitamin_d_guideline},
        # how the inputs were read: the same files with other options give other findings
        "options": options(
            mapping=mapping, date_format=date_format, vitamin_d_guideline=vitamin_d_guideline
        ),
        "inputs": _with_file_balance(
            ingest.files, rejected, stats.used_by_label, ingest.file_of_label
        ),
        "skipped_files": ingest.skipped,
        # "utc": every input printed times with an offset, and every time here is in
        # UTC; "as_printed": none did; "mixed": some did (inputs[].collection_times)
        "collection_times": _collection_times(ingest.files),
        # samples, and those a lab comment or flag marked (hemolyzed, clotted, ...)
        "sample_quality": {
            "samples": int(stats.samples),
            "flagged": {
                f: stats.sample_quality[f] for f in SAMPLE_FLAGS if f in stats.sample_quality
            },
        },
        # results used per status the exports gave, and the patients whose fired
        # findings rest on a result the lab had not made final
        "result_status": {
            "results": {
                k: stats.result_status[k]
                for k in (*USABLE_STATUSES, UNRECOGNISED_STATUS, "not_given")
                if k in stats.result_status
            },
            "fired_on_preliminary": {
                rule: c["preliminary_result"]
                for rule, c in caveats.items()
                if "preliminary_result" in c
            },
        },
        "distributions": {
            "histograms": stats.histograms,
            # the histograms' bin edges (canonical units); counts[0] is below the first
            # edge, counts[-1] above the last
            "histogram_edges": {a: bins(a).tolist() for a in stats.histograms},
            "against_ranges": stats.vs_range,
            # the ranges the results were read with, most used first (at most 5)
            "ranges": _common_ranges(stats.ranges),
        },
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    from labinterp.audit.report import render_report

    html = render_report(summary, findings=findings, patients=patients, rejected=rejected)
    write_text(stage / "report.html", html)
    write_text(
        stage / "summary.json", json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n"
    )
    try:
        with interrupts_deferred():
            for name in OUTPUT_FILES:
                replace_keeping_mode(stage / name, out / name)
            if completion is not None:
                completion.outputs_in_place = True
    except KeyboardInterrupt as exc:  # held until every output was in place
        raise OutputsWritten(out) from exc
    return summary


OUTPUT_FILES = (
    "findings.csv",
    "findings.parquet",
    "patients.csv",
    "rejected_rows.csv",
    "report.html",
    "summary.json",
)
